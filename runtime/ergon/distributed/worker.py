"""`ergon.Worker`: claims flows from a store and executes them, surviving the loss of any worker.

A worker claims runnable flows with a lease (`claim_flows`), executes each with an `Executor`
fenced by the claim's epoch, and renews its leases while they run. When it dies, its leases run
out and another worker resumes its flows from their checkpoints; if it only stalled, its late
writes are refused. It wakes on store notifications (a new flow, a signal, a child that ended),
at the next timer the store reports, and otherwise re-checks every `poll_interval` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pydantic

from ergon.core.children import queue_child
from ergon.core.definition import entry_point
from ergon.core.errors import (
    ErrorInfo,
    FailureCode,
    FlowDefinitionError,
    LeaseLostError,
    StoreError,
)
from ergon.core.executor import Executor
from ergon.core.fencing import LeaseDeadline, lease_clock
from ergon.core.flow import Flow
from ergon.core.outcomes import Outcome
from ergon.core.records import FlowEnd, FlowStatus, Lease, utcnow
from ergon.core.store import Renewal, Store
from ergon.distributed.leases import LeaseKeeper

log = logging.getLogger("ergon.worker")


@dataclass
class _Execution:
    flow: FlowStatus
    lease: Lease
    deadline: LeaseDeadline
    task: asyncio.Task[None] | None = None
    executor: Executor | None = None


@dataclass
class WorkerStats:
    """What a worker has done since it started."""

    claimed: int = 0
    finished: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


class Worker:
    """Executes flows of the given classes from `store`, `concurrency` at a time.

    A versioned worker claims flows of its version and unversioned flows; an unversioned worker
    claims only unversioned flows. With `exclusive`, a versioned worker claims only flows of its
    own version, never unversioned ones: a worker pool of one version (Kubernetes) then leaves
    unversioned flows to the processes that know their classes (`exclusive` without a version
    changes nothing). A flow whose class the worker does not know, or whose input no longer
    validates, fails with a clear error; the worker carries on.
    """

    def __init__(
        self,
        store: Store,
        name: str | None = None,
        *,
        flows: list[type[Flow]] | None = None,
        concurrency: int = 16,
        version: str | None = None,
        lease_seconds: float = 30.0,
        poll_interval: float = 1.0,
        exclusive: bool = False,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"Worker concurrency must be at least 1, got {concurrency}")
        if lease_seconds <= 0:
            raise ValueError(f"Worker lease_seconds must be positive, got {lease_seconds}")
        self.store = store
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.concurrency = concurrency
        self.version = version or None
        self.exclusive = exclusive
        self.lease_seconds = float(lease_seconds)
        self.poll_interval = poll_interval
        self.flows: dict[str, type[Flow]] = {}
        for cls in flows or []:
            if not (isinstance(cls, type) and issubclass(cls, Flow)):
                raise FlowDefinitionError(f"Worker flows must be ergon.Flow classes, got {cls!r}")
            entry_point(cls)
            self.flows[cls.flow_name()] = cls
        self.stats = WorkerStats()
        self._running: dict[str, _Execution] = {}
        self._stopping = asyncio.Event()
        self._changed = asyncio.Event()

    def start(self) -> WorkerHandle:
        """Run the worker in the background of the running event loop."""
        return WorkerHandle(self, asyncio.get_running_loop().create_task(self.run()))

    async def run(self) -> None:
        """Claim and execute flows until cancelled or shut down; in-flight flows finish first."""
        notifier = await self.store.notifier()
        keeper = LeaseKeeper(
            self.store, self.name, self.lease_seconds, self._leases, self._on_renewal
        )
        renewing = asyncio.create_task(keeper.run())
        log.info(
            "worker %s started (version %s%s, flows: %s)",
            self.name,
            self.version,
            " only" if self.exclusive and self.version else "",
            list(self.flows),
        )
        try:
            seen = notifier.mark()
            while not self._stopping.is_set():
                next_wake = await self._claim()
                if notifier.mark() != seen:
                    seen = notifier.mark()
                    if self._running:
                        keeper.renew_soon()
                    continue
                if len(self._running) >= self.concurrency:
                    next_wake = None
                await self._idle(notifier.wait(seen, self._wait_seconds(next_wake)))
                if notifier.mark() != seen and self._running:
                    keeper.renew_soon()
                seen = notifier.mark()
            await self._drain()
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
            for execution in list(self._running.values()):
                if execution.task is not None:
                    execution.task.cancel()
            log.info("worker %s stopped", self.name)

    # --- claiming ------------------------------------------------------------------------------

    async def _claim(self) -> datetime | None:
        free = self.concurrency - len(self._running)
        if free <= 0:
            return None
        sent_at = lease_clock()
        try:
            claimed = await self.store.claim_flows(
                owner=self.name,
                version=self.version,
                lease_seconds=self.lease_seconds,
                limit=free,
                exclusive=self.exclusive,
            )
        except StoreError as exc:
            log.warning("worker %s could not claim flows: %s", self.name, exc)
            return None
        for flow, lease in claimed.flows:
            deadline = LeaseDeadline(lease_seconds=self.lease_seconds, confirmed_at=sent_at)
            execution = _Execution(flow, lease, deadline)
            self._running[flow.id] = execution
            execution.task = asyncio.create_task(self._execute(execution), name=f"ergon:{flow.id}")
            self.stats.claimed += 1
        return claimed.next_wake_at

    def _wait_seconds(self, next_wake: datetime | None) -> float:
        wait = self.poll_interval
        if next_wake is not None:
            wait = min(wait, max((next_wake - utcnow()).total_seconds(), 0.0))
        return wait

    async def _idle(self, notified: Coroutine[Any, Any, None]) -> None:
        """Wait for a notification, a free slot, a due timer or a shutdown, whichever is first."""
        self._changed.clear()
        waits = [
            asyncio.ensure_future(notified),
            asyncio.ensure_future(self._changed.wait()),
            asyncio.ensure_future(self._stopping.wait()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()

    # --- executing -----------------------------------------------------------------------------

    async def _execute(self, execution: _Execution) -> None:
        flow, lease = execution.flow, execution.lease
        outcome_name = "lost"
        try:
            instance = await self._instantiate(flow, lease)
            if instance is None:
                outcome_name = "failed"
                return
            executor = Executor(
                flow.id,
                instance,
                self.store,
                lease=lease,
                owner=self.name,
                children=queue_child,
                flow_retries=True,
                deadline=execution.deadline,
            )
            execution.executor = executor
            outcome: Outcome = await executor.execute()
            outcome_name = type(outcome).__name__.lower()
            log.debug("worker %s: flow %s -> %s", self.name, flow.id, outcome)
        except LeaseLostError as exc:
            log.info("worker %s: %s", self.name, exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "worker %s: executing flow %s failed; its lease will run out", self.name, flow.id
            )
        finally:
            self._running.pop(flow.id, None)
            self.stats.finished += 1
            self.stats.outcomes[outcome_name] = self.stats.outcomes.get(outcome_name, 0) + 1
            self._changed.set()

    async def _instantiate(self, flow: FlowStatus, lease: Lease) -> Flow | None:
        """The flow's object, or None after failing the flow when that cannot be built."""
        cls = self.flows.get(flow.flow)
        if cls is None:
            known = ", ".join(sorted(self.flows)) or "none"
            error = ErrorInfo(
                FailureCode.INVALID_FLOW,
                f"flow {flow.flow!r} is not registered with worker {self.name} (it runs: {known}); "
                "pass its class in Worker(flows=[...]) or `ergon worker --import` its module",
                False,
            )
        else:
            try:
                return cls.model_validate_json(flow.input)
            except pydantic.ValidationError as exc:
                error = ErrorInfo(
                    FailureCode.INVALID_INPUT,
                    f"the recorded input of flow {flow.id} does not validate against "
                    f"{flow.flow}: {exc}",
                    False,
                )
        log.warning("worker %s: failing flow %s: %s", self.name, flow.id, error.message)
        await self.store.finish_flow(flow.id, FlowEnd("failed", error=error), epoch=lease.epoch)
        return None

    # --- leases --------------------------------------------------------------------------------

    def _leases(self) -> list[Lease]:
        return [execution.lease for execution in self._running.values()]

    def _on_renewal(self, renewal: Renewal, leases: list[Lease], sent_at: float) -> None:
        """Move on the deadlines of the leases renewed; stop the executions that lost theirs.

        Matched by epoch: a flow that ended and was claimed again meanwhile is not touched.
        """
        for lease in leases:
            execution = self._running.get(lease.flow_id)
            if execution is None or execution.lease.epoch != lease.epoch:
                continue
            if lease.flow_id not in renewal.lost:
                execution.deadline.confirm(sent_at=sent_at)
                continue
            execution.deadline.revoke()
            if execution.task is not None:
                log.warning(
                    "worker %s lost its lease on flow %s; stopping it", self.name, lease.flow_id
                )
                execution.task.cancel()
        for flow_id in renewal.cancel_requested:
            execution = self._running.get(flow_id)
            if execution is not None and execution.executor is not None:
                execution.executor.request_cancel()

    # --- stopping ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop claiming; `run()` returns once in-flight flows have finished."""
        self._stopping.set()

    async def _drain(self) -> None:
        tasks = [e.task for e in self._running.values() if e.task is not None]
        if tasks:
            log.info("worker %s finishing %d in-flight flows", self.name, len(tasks))
            await asyncio.gather(*tasks, return_exceptions=True)


class WorkerHandle:
    """A worker running in the background; `await handle.shutdown()` stops it gracefully."""

    def __init__(self, worker: Worker, task: asyncio.Task[None]) -> None:
        self.worker = worker
        self.task = task

    async def shutdown(self, timeout: float | None = None) -> None:
        """Stop claiming and wait for in-flight flows to finish (cancel them after `timeout`)."""
        self.worker.stop()
        try:
            await asyncio.wait_for(asyncio.shield(self.task), timeout)
        except TimeoutError:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    def done(self) -> bool:
        return self.task.done()
