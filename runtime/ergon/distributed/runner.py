"""`ergon.run`: run one flow to its end in this process."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from ergon.core.errors import FlowCancelledError, FlowFailed
from ergon.core.executor import Executor
from ergon.core.flow import Flow
from ergon.core.outcomes import Cancelled, Completed, Failed, Suspended
from ergon.core.records import utcnow
from ergon.core.store import Notifier, Store
from ergon.storage.sqlite import SqliteStore
from ergon.storage.urls import DEFAULT_SQLITE

POLL_SECONDS = 1.0


async def run(
    flow: Flow, store: Store | None = None, flow_id: str | uuid.UUID | None = None
) -> Any:
    """Run `flow` until it ends, sleeping through its timers and waiting for its signals.

    Returns the flow's value; raises `ergon.FlowFailed` if it fails (and
    `ergon.FlowCancelledError` if it is cancelled). `store=None` uses the SQLite file
    `ergon.db` in the working directory. Pass `flow_id` to resume a flow started earlier.
    """
    own = store is None
    active: Store = SqliteStore(DEFAULT_SQLITE) if store is None else store
    ident = str(flow_id) if flow_id is not None else str(uuid.uuid4())
    try:
        notifier = await active.notifier()
        while True:
            outcome = await Executor(ident, flow, active).execute()
            match outcome:
                case Completed(value=value):
                    return value
                case Failed(error=error):
                    raise FlowFailed(ident, error)
                case Cancelled():
                    raise FlowCancelledError(ident)
                case Suspended(reason=reason):
                    await _until_woken(active, notifier, ident, reason.fire_at)
    finally:
        if own:
            await active.close()


async def _until_woken(
    store: Store, notifier: Notifier, flow_id: str, fire_at: datetime | None
) -> None:
    """Wait until the suspended flow has something to do: its time came, or an event woke it."""
    while True:
        mark = notifier.mark()
        status = await store.get_flow(flow_id)
        if status is None or status.state != "suspended":
            return
        wait = POLL_SECONDS
        if fire_at is not None:
            left = (fire_at - utcnow()).total_seconds()
            if left <= 0:
                return
            wait = min(wait, left)
        await notifier.wait(mark, wait)
