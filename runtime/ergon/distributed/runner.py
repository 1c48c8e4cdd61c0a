"""`ergon.run`: run one flow to its end in this process; `execute_watched`: one execution of a
flow owned without a lease (the operator's worker pods), fenced like a worker's.

Internal module: use `ergon.run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import datetime
from typing import Any

from ergon.core.errors import FlowCancelledError, FlowFailedError, StoreError
from ergon.core.executor import Executor
from ergon.core.fencing import LeaseDeadline, lease_clock
from ergon.core.flow import Flow
from ergon.core.outcomes import Cancelled, Completed, Failed, Outcome, Suspended
from ergon.core.records import utcnow
from ergon.core.store import Notifier, Store
from ergon.storage.sqlite import SqliteStore
from ergon.storage.urls import DEFAULT_SQLITE

log = logging.getLogger("ergon.runner")

POLL_SECONDS = 1.0


async def run(
    flow: Flow, *, store: Store | None = None, flow_id: str | uuid.UUID | None = None
) -> Any:
    """Run `flow` until it ends, sleeping through its timers and waiting for its signals.

    Returns the flow's value; raises `ergon.FlowFailedError` if it fails (and
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
                    raise FlowFailedError(ident, error)
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


async def execute_watched(
    flow_id: str,
    flow: Flow,
    store: Store,
    *,
    lease_seconds: float = 30.0,
    flow_retries: bool = True,
) -> Outcome:
    """Execute a recorded flow once, taking it over, and stop starting work once this process
    can no longer be sure it still holds it.

    A flow opened outside a worker has no lease that expires, so another process may take it
    over at any time (the operator starts a new pod once it sees this one gone). Every third of
    `lease_seconds` the execution confirms with the store that its epoch is still current; if
    it cannot confirm for `lease_seconds` (less the safety margin), or learns it was taken
    over, it starts no further step, attempt or wake-up (`ergon.LeaseLostError`).
    """
    deadline = LeaseDeadline(lease_seconds=lease_seconds, confirmed_at=lease_clock())
    executor = Executor(flow_id, flow, store, flow_retries=flow_retries, deadline=deadline)
    watch = asyncio.create_task(_confirm_ownership(executor, deadline, lease_seconds / 3))
    try:
        return await executor.execute()
    finally:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch


async def _confirm_ownership(executor: Executor, deadline: LeaseDeadline, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        epoch = executor.epoch
        if epoch is None:
            continue  # still opening: the open itself confirms ownership
        sent_at = lease_clock()
        try:
            status = await executor.store.get_flow(executor.flow_id)
        except StoreError as exc:
            log.warning("could not confirm ownership of flow %s: %s", executor.flow_id, exc)
            continue
        if status is not None and status.epoch == epoch and status.state == "running":
            deadline.confirm(sent_at=sent_at)
        else:
            deadline.revoke()
            return
