"""The protocol every store implements, split by the client that uses it, and the
notification helper stores share.

* `ExecutionStore`: what an `Executor` (and the flow context under it) needs to run one flow.
* `QueueStore`: what a `Worker` adds: claiming runnable flows, renewing leases, wake-ups.
* `AdminStore`: what `Client`, `Scheduler`, the CLI and the operator need: records, signals,
  cancellation, queue depth per version.
* `Store`: all three plus closing; what every adapter implements (`ergon.storage` exports the
  protocols and their record types for implementers).

Each method is one logical transaction; the docstrings state the guarantees the conformance
suite (tests/stores) checks on every backend. Times are timezone-aware UTC datetimes; payloads
are JSON text. The state transitions behind them are written once, in
`ergon.storage.transitions`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from ergon.core.records import (
    FlowEnd,
    FlowState,
    FlowStatus,
    Lease,
    NewFlow,
    OpenedFlow,
    QueueDepth,
    SignalRecord,
    StepRecord,
)


@dataclass(frozen=True, slots=True)
class Claimed:
    """Flows a worker just claimed (each with a fresh lease), and when to look again."""

    flows: list[tuple[FlowStatus, Lease]]
    next_wake_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Renewal:
    """The outcome of renewing a worker's leases."""

    lost: set[str] = field(default_factory=set)
    cancel_requested: set[str] = field(default_factory=set)


class Notifier:
    """A change counter with waiters: stores bump it when another party's writes may matter.

    A waiter first reads `mark()`, then checks the store, then `wait(mark, timeout)`: a change
    that lands between the check and the wait is not missed, because the counter moved.
    """

    def __init__(self) -> None:
        self._count = 0
        self._waiters: list[asyncio.Future[None]] = []
        self._subscribers: list[Callable[[str | None], None]] = []

    def mark(self) -> int:
        return self._count

    def notify(self, flow_id: str | None = None) -> None:
        """Wake the waiters; subscribers also hear `flow_id` when the backend names the flow
        that changed (Postgres and Redis notifications do, local writes do not)."""
        self._count += 1
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.get_loop().call_soon_threadsafe(_resolve, waiter)
        if flow_id is not None:
            self._tell(flow_id)

    def notify_missed(self) -> None:
        """The notification channel was away and is back: wake the waiters and tell
        subscribers `None` -- any flow may have changed unheard."""
        self.notify()
        self._tell(None)

    def subscribe(self, callback: Callable[[str | None], None]) -> Callable[[], None]:
        """Call `callback` with the id of each flow another party changed (a flow created or
        ended, a signal sent), or with `None` after notifications may have been lost; returns
        the function that unsubscribes. For watchers that track many flows by id (the
        operator), where waking on a bare counter would mean re-reading every flow."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def _tell(self, flow_id: str | None) -> None:
        for callback in list(self._subscribers):
            callback(flow_id)

    async def wait(self, since: int, timeout: float) -> None:
        if self._count != since or timeout <= 0:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            pass
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class FlowRecords(Protocol):
    """Reading and recording flows: shared by executions (child flows) and admin clients."""

    async def create_flow(self, new: NewFlow) -> tuple[FlowStatus, bool]:
        """Record a flow if its id is new; returns the flow and whether it was created."""
        ...

    async def get_flow(self, flow_id: str) -> FlowStatus | None: ...


@runtime_checkable
class ExecutionStore(FlowRecords, Protocol):
    """What executing one flow needs: open or resume it, checkpoint steps, read its signals,
    end the execution."""

    async def open_flow(self, new: NewFlow, *, owner: str) -> OpenedFlow:
        """Start or resume executing a flow outside a worker, in one transaction.

        A missing flow is created `running`. An existing flow that has not ended is taken over:
        its epoch is incremented (fencing out any earlier executor), it becomes `running`, owned
        by `owner`, with no lease expiry. A flow that ended is returned unchanged with
        `lease=None`. The flow's recorded steps come back in the same call.
        Raises `FlowMismatchError` when `new.flow` differs from the recorded flow name.
        """
        ...

    async def resume_flow(self, lease: Lease) -> OpenedFlow:
        """The flow and its recorded steps for an executor that claimed it (`claim_flows`)."""
        ...

    async def save_step(
        self,
        flow_id: str,
        step: StepRecord,
        *,
        epoch: int | None,
        consumes: int | None = None,
    ) -> None:
        """Checkpoint one step (insert or replace at its key), atomically.

        With `epoch`, the write happens only if the flow's epoch still equals it and it runs
        (else `FencedError`) and no cancellation was requested (else `CancelRequestedError`).
        `consumes` marks that signal (by `seq`) consumed in the same transaction, so a signal is
        acknowledged exactly when the checkpoint recording it is written.
        """
        ...

    async def finish_flow(self, flow_id: str, end: FlowEnd, *, epoch: int | None) -> FlowStatus:
        """End an execution: record the flow's new state and release its lease.

        Fenced like `save_step`. A suspension becomes `pending` if the flow's event counter moved
        past `end.seen_events`. When a flow with a parent ends (completed, failed, cancelled), the
        parent's event counter moves and a suspended parent becomes `pending`, in the same
        transaction.
        """
        ...

    async def next_signal(self, flow_id: str, name: str) -> SignalRecord | None:
        """The oldest unconsumed signal for (flow, name)."""
        ...


@runtime_checkable
class QueueStore(Protocol):
    """What a worker needs besides executing: claims, leases and wake-ups."""

    async def claim_flows(
        self,
        *,
        owner: str,
        version: str | None,
        lease_seconds: float,
        limit: int,
        exclusive: bool = False,
    ) -> Claimed:
        """Claim up to `limit` runnable flows for a worker, each with a new epoch and a lease.

        Runnable: pending; suspended with `wake_at` due; running with an expired lease. A worker
        with a version claims flows of that version and unversioned ones; an unversioned worker
        only unversioned ones. With `exclusive`, a versioned worker claims only flows of its own
        version, never unversioned ones; ignored without a version. `next_wake_at` is the
        earliest time another flow it may claim becomes runnable by time alone (a timer, a
        retry, a lease running out).
        """
        ...

    async def renew_leases(
        self, *, owner: str, leases: Sequence[Lease], lease_seconds: float
    ) -> Renewal:
        """Extend leases still held; report the ones lost and those asked to cancel."""
        ...

    async def notifier(self) -> Notifier:
        """The notifier other parties' state changes reach (starts listening on first use)."""
        ...


@runtime_checkable
class AdminStore(FlowRecords, Protocol):
    """What clients outside an execution need: records, step history, signals, cancellation,
    queue depth."""

    async def list_flows(
        self,
        *,
        state: FlowState | None = None,
        flow: str | None = None,
        parent_id: str | None = None,
        origin_prefix: str | None = None,
        limit: int = 100,
    ) -> list[FlowStatus]:
        """Flows, newest first, filtered by state, flow name, parent or origin prefix (flows
        whose `origin` starts with `origin_prefix`; flows without an origin never match)."""
        ...

    async def prune_flows(
        self,
        *,
        finished_before: datetime,
        origin_prefix: str | None = None,
        ids: Sequence[str] | None = None,
        dry_run: bool = False,
        limit: int = 1000,
    ) -> list[str]:
        """Delete up to `limit` ended flows, oldest first (by end; Redis: by creation among
        those it reads), with their steps and signals; returns their ids (with `dry_run`, the
        ids it would delete, deleting nothing).

        A flow is pruned when it ended (completed, failed, cancelled) and its last change
        (`updated_at`, the end) is before `finished_before`, its origin starts with
        `origin_prefix` (if given) and its id is in `ids` (if given). Each flow is judged on its
        own: a child is pruned only when it matches too, and never while its parent has not
        ended (the parent may still read its outcome); a parent's ended children are not
        removed with it. A flow that has not ended is never deleted. Callers that prune more
        than `limit` call again until fewer come back (`Client.prune` does).
        """
        ...

    async def load_steps(self, flow_id: str) -> list[StepRecord]:
        """All recorded steps of a flow, in one read."""
        ...

    async def queue_depth(self, *, version: str | None) -> QueueDepth:
        """The unfinished flows of exactly `version` (None: the unversioned ones), counted in
        one read by what they wait for (see `QueueDepth`), judged by the store's clock as
        `claim_flows` judges it. Ended flows are not counted."""
        ...

    async def send_signal(
        self, flow_id: str, name: str, payload: str, signal_id: str | None = None
    ) -> bool:
        """Queue a signal; False if `signal_id` was already delivered to this flow.

        Moves the flow's event counter; a suspended flow becomes `pending`.
        """
        ...

    async def request_cancel(self, flow_id: str) -> FlowStatus | None:
        """Cancel a flow: pending or suspended flows (and running ones whose lease expired) end
        `cancelled` at once; running ones get `cancel_requested` and stop at their next step.
        """
        ...


@runtime_checkable
class Store(ExecutionStore, QueueStore, AdminStore, Protocol):
    """Durable storage for flows, their step checkpoints and their signals: every part, and
    closing. `async with store:` closes it on the way out."""

    async def close(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
