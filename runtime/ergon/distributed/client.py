"""`ergon.Client`: manage flows in a store — schedule, signal, inspect, wait, cancel, end.

Internal module: use `ergon.Client`.
"""

from __future__ import annotations

import asyncio
import builtins
import time
import uuid
import warnings
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from ergon.core import codec
from ergon.core.definition import entry_point
from ergon.core.errors import ErrorInfo, FlowNotFoundError
from ergon.core.flow import Flow
from ergon.core.identifiers import (
    check_flow_id,
    check_lookup_id,
    check_signal_id,
    check_signal_name,
)
from ergon.core.outcomes import Outcome, outcome_of
from ergon.core.records import (
    FLOW_STATES,
    FlowEnd,
    FlowState,
    FlowStatus,
    NewFlow,
    QueueDepth,
    StepRecord,
)
from ergon.core.store import Store

POLL_SECONDS = 1.0
PRUNE_BATCH = 500  # flows deleted per transaction by `Client.prune`
DRY_RUN_LIMIT = 1_000_000  # flows a dry-run prune lists at most
OWNER = "ergon.Client"  # the owner recorded when a client takes a flow over to end it


class Client:
    """Manages flows in `store`; safe to create many, cheap to create."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def schedule(
        self, flow: Flow, *, flow_id: str | uuid.UUID | None = None, version: str | None = None
    ) -> str:
        """Queue `flow` for workers; returns its id. Idempotent on `flow_id`.

        Raises `ergon.IdentifierError` (a ValueError) for an id not every store can hold, and
        `ergon.FlowInputError` for input holding NaN or ±Infinity.
        """
        if not isinstance(flow, Flow):
            raise TypeError(
                f"schedule() needs an ergon.Flow instance, got {type(flow).__qualname__}"
            )
        entry_point(type(flow))
        new = NewFlow(
            id=check_flow_id(flow_id) if flow_id is not None else str(uuid.uuid4()),
            flow=type(flow).flow_name(),
            input=codec.dump_input(flow),
            state="pending",
            version=version,
        )
        status, _ = await self.store.create_flow(new)
        return status.id

    async def schedule_by_name(
        self,
        flow: str,
        input: Mapping[str, Any],
        *,
        flow_id: str | uuid.UUID | None = None,
        version: str | None = None,
        origin: str | None = None,
    ) -> str:
        """Queue the flow named `flow` (its `Flow.flow_name()`) without importing its class;
        returns its id. Idempotent on `flow_id`.

        For schedulers that only know a flow by name, such as the operator. The input is
        validated only when a worker runs the flow: one that does not validate then fails the
        flow with `FailureCode.INVALID_INPUT`, an unknown name with `INVALID_FLOW`. `origin`
        records who asked for the flow (the operator: `flowrun:<namespace>/<name>/<uid>`), so
        `list_flows(origin_prefix=...)` and `prune(origin_prefix=...)` find its flows; it is
        recorded at creation only (a second call with the same `flow_id` changes nothing).
        """
        new = NewFlow(
            id=check_flow_id(flow_id) if flow_id is not None else str(uuid.uuid4()),
            flow=flow,
            input=codec.dump(dict(input), what=f"flow {flow!r} input"),
            state="pending",
            version=version,
            origin=None if origin is None else check_lookup_id(origin, what="origin"),
        )
        status, _ = await self.store.create_flow(new)
        return status.id

    async def signal(
        self,
        flow_id: str | uuid.UUID,
        name: str,
        payload: Any = None,
        *,
        signal_id: str | None = None,
    ) -> bool:
        """Send signal `name` to a flow; False if `signal_id` was already delivered.

        Signals queue per flow and name, in arrival order; one sent before the flow waits (or
        before the flow exists) is kept until a wait consumes it. The name, the signal id and
        the flow id are checked like flow ids (`ergon.IdentifierError`); a payload holding NaN
        or ±Infinity raises TypeError.
        """
        ident = check_flow_id(flow_id)
        check_signal_name(name)
        check_signal_id(signal_id)
        text = codec.dump(payload, what=f"signal {name!r} payload")
        return await self.store.send_signal(ident, name, text, signal_id)

    async def status(self, flow_id: str | uuid.UUID) -> FlowStatus:
        """The flow's recorded state; `ergon.FlowNotFoundError` if there is none."""
        ident = check_lookup_id(flow_id)
        status = await self.store.get_flow(ident)
        if status is None:
            raise FlowNotFoundError(f"no flow with id {ident!r} in {self.store!r}")
        return status

    async def wait(self, flow_id: str | uuid.UUID, *, timeout: float | None = None) -> Outcome:
        """Wait until the flow completes, fails or is cancelled; returns that outcome.

        Raises `TimeoutError` after `timeout` seconds.
        """
        notifier = await self.store.notifier()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            mark = notifier.mark()
            status = await self.status(flow_id)
            if status.is_terminal:
                return outcome_of(status)
            remaining = POLL_SECONDS
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"flow {status.id} is still {status.state} after {timeout:g} s"
                    )
                remaining = min(remaining, left)
            await notifier.wait(mark, remaining)

    async def cancel(
        self, flow_id: str | uuid.UUID, *, force: bool = False, owner: str = OWNER
    ) -> FlowStatus:
        """Cancel a flow and its unfinished children.

        A pending or suspended flow is cancelled at once; a running one stops at its next step
        boundary (its state becomes `cancelled` then).

        `force=True` records the flow cancelled at once, running or not, by taking it over as
        `owner`: the executor running it is fenced out (its later writes are refused) and its
        children are left alone. For when the processes running the flow are being stopped
        anyway, as the operator does when it deletes a FlowRun's pods.
        """
        if force:
            return await self._end(flow_id, FlowEnd("cancelled"), owner=owner)
        ident = check_lookup_id(flow_id)
        status = await self.store.request_cancel(ident)
        if status is None:
            raise FlowNotFoundError(f"no flow with id {ident!r} in {self.store!r}")
        children = await self.store.list_flows(parent_id=status.id, limit=10_000)
        await asyncio.gather(*(self.cancel(c.id) for c in children if not c.is_terminal))
        return status

    async def fail_flow(
        self, flow_id: str | uuid.UUID, *, error: ErrorInfo, owner: str = OWNER
    ) -> FlowStatus:
        """Record the flow failed with `error` now, from outside any executor (a flow that
        cannot run, a deadline that passed): the flow is taken over as `owner`, which fences out
        any executor still running it. A flow that already ended is returned unchanged.
        """
        return await self._end(flow_id, FlowEnd("failed", error=error), owner=owner)

    async def _end(self, flow_id: str | uuid.UUID, end: FlowEnd, *, owner: str) -> FlowStatus:
        return await end_flow(self.store, await self.status(flow_id), end, owner=owner)

    async def list_flows(
        self,
        *,
        state: FlowState | None = None,
        flow: str | None = None,
        parent_id: str | None = None,
        origin_prefix: str | None = None,
        limit: int = 100,
    ) -> list[FlowStatus]:
        """Flows, newest first, optionally only those in `state`, of flow name `flow`,
        children of `parent_id` or whose origin starts with `origin_prefix`."""
        if state is not None and state not in FLOW_STATES:
            raise ValueError(f"unknown flow state {state!r}; use one of {', '.join(FLOW_STATES)}")
        return await self.store.list_flows(
            state=state,
            flow=flow,
            parent_id=parent_id,
            origin_prefix=origin_prefix,
            limit=limit,
        )

    async def queue_depth(self, *, version: str | None = None) -> QueueDepth:
        """How many unfinished flows of exactly `version` there are (None, the default: the
        unversioned flows), by what they wait for: `runnable` (a worker could claim them now),
        `running` (an executor holds them), `waiting` (suspended on a signal, a timer or a child,
        not due), and `next_wake_at` (when one next becomes runnable by time alone).

        What an autoscaler sizes a worker pool of that version by (`runnable + running`), and
        how to see that an old version has drained (`unfinished == 0`). One read, judged by the
        store's clock. On Redis its cost grows with the running and suspended flows of all
        versions (see `RedisStore.queue_depth`).
        """
        return await self.store.queue_depth(version=version or None)

    async def prune(
        self,
        *,
        finished_before: datetime,
        origin_prefix: str | None = None,
        ids: Sequence[str] | None = None,
        dry_run: bool = False,
        batch_size: int = PRUNE_BATCH,
    ) -> builtins.list[str]:
        """Delete the records of flows that ended before `finished_before` (a timezone-aware
        time), with their steps and signals; returns the deleted ids (with `dry_run`, the ids
        that would be deleted, deleting nothing).

        `origin_prefix` and `ids` narrow it down. A flow that has not ended is never deleted,
        nor a child whose parent has not ended (see `AdminStore.prune_flows`). Deletes in
        batches of `batch_size`, each its own transaction, so a large prune never holds locks
        for long; an interrupted prune simply leaves the rest for the next one.
        """
        if finished_before.tzinfo is None:
            raise ValueError("finished_before must be timezone-aware (e.g. datetime.now(UTC))")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        wanted = None if ids is None else builtins.list(dict.fromkeys(ids))
        if dry_run:
            # One read of everything that qualifies: nothing is deleted, so batches would see
            # the same flows again.
            limit = len(wanted) if wanted is not None else DRY_RUN_LIMIT
            return await self.store.prune_flows(
                finished_before=finished_before,
                origin_prefix=origin_prefix,
                ids=wanted,
                dry_run=True,
                limit=limit,
            )
        pruned: builtins.list[str] = []
        while True:
            batch = await self.store.prune_flows(
                finished_before=finished_before,
                origin_prefix=origin_prefix,
                ids=wanted,
                limit=batch_size,
            )
            pruned += batch
            if len(batch) < batch_size:
                return pruned

    async def list(
        self, state: FlowState | None = None, flow: str | None = None, limit: int = 100
    ) -> builtins.list[FlowStatus]:
        """Deprecated (it shadows the builtin): use `list_flows`. Kept for one release."""
        warnings.warn(
            "ergon.Client.list() is deprecated; use Client.list_flows()",
            DeprecationWarning,
            stacklevel=2,
        )
        return await self.list_flows(state=state, flow=flow, limit=limit)

    async def steps(self, flow_id: str | uuid.UUID) -> builtins.list[StepRecord]:
        """The flow's recorded steps in position order."""
        status = await self.status(flow_id)
        return await self.store.load_steps(status.id)


async def end_flow(store: Store, flow: FlowStatus, end: FlowEnd, *, owner: str) -> FlowStatus:
    """End a flow from outside an executor (a flow that cannot run, a deadline, a cancellation
    on behalf of a dead worker): take the flow over, which fences out any executor still alive,
    then record `end`. A flow that already ended is returned unchanged.

    Internal: `Client.fail_flow` and `Client.cancel(force=True)` are the public way.
    """
    opened = await store.open_flow(
        NewFlow(
            flow.id, flow.flow, flow.input, "running", flow.version, flow.parent_id, flow.origin
        ),
        owner=owner,
    )
    if opened.lease is None:
        return opened.flow
    return await store.finish_flow(flow.id, end, epoch=opened.lease.epoch)
