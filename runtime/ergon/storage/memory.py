"""`MemoryStore`: everything in this process's memory. For tests and workers in one process."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from datetime import datetime, timedelta

from ergon.core.errors import FencedError
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
    key_tuple,
    utcnow,
)
from ergon.core.store import Claimed, Notifier, Renewal
from ergon.storage import transitions
from ergon.storage.base import StoreLifecycle


@dataclasses.dataclass(slots=True)
class _Signal:
    record: SignalRecord
    consumed: bool = False


class MemoryStore(StoreLifecycle):
    """A `Store` kept in memory: fast, shared by everything in this process, gone at exit."""

    def __init__(self) -> None:
        self._flows: dict[str, FlowStatus] = {}
        self._steps: dict[str, dict[str, StepRecord]] = {}
        self._signals: dict[str, list[_Signal]] = {}
        self._signal_ids: set[tuple[str, str]] = set()
        self._seq = itertools.count(1)
        self._notifier = Notifier()

    def __repr__(self) -> str:
        return "MemoryStore()"

    # --- executing ------------------------------------------------------------------------

    async def open_flow(self, new: NewFlow, *, owner: str) -> OpenedFlow:
        now = utcnow()
        flow = self._flows.get(new.id) or transitions.created(new, "running", now)
        if (refusal := transitions.open_refusal(flow, new)) is not None:
            raise refusal
        if flow.is_terminal:
            return OpenedFlow(flow, [], None)
        flow = self._flows[new.id] = transitions.take_over(flow, owner, now)
        lease = Lease(new.id, flow.epoch, owner, None)
        return OpenedFlow(flow, self._sorted_steps(new.id), lease)

    async def resume_flow(self, lease: Lease) -> OpenedFlow:
        flow = self._flows.get(lease.flow_id)
        if flow is None or not transitions.resumable(flow, lease.epoch):
            raise FencedError.stale(lease.flow_id, lease.epoch)
        return OpenedFlow(flow, self._sorted_steps(lease.flow_id), lease)

    async def save_step(
        self, flow_id: str, step: StepRecord, *, epoch: int | None, consumes: int | None = None
    ) -> None:
        flow = self._flows.get(flow_id)
        if flow is None:
            raise FencedError.missing(flow_id)
        if epoch is not None and not transitions.accepts_checkpoint(flow, epoch):
            raise transitions.checkpoint_refusal(flow, flow_id, epoch)
        if consumes is not None:
            for signal in self._signals.get(flow_id, []):
                if signal.record.seq == consumes:
                    signal.consumed = True
        self._steps.setdefault(flow_id, {})[step.key] = step

    async def finish_flow(self, flow_id: str, end: FlowEnd, *, epoch: int | None) -> FlowStatus:
        flow = self._flows.get(flow_id)
        if flow is None or not transitions.accepts_end(flow, epoch):
            raise transitions.end_refusal(flow, flow_id, epoch)
        now = utcnow()
        flow = self._flows[flow_id] = transitions.finish(flow, end, now)
        self._wake(transitions.parent_to_wake(flow), now)
        self._notifier.notify()
        return flow

    # --- records ----------------------------------------------------------------------------

    async def create_flow(self, new: NewFlow) -> tuple[FlowStatus, bool]:
        existing = self._flows.get(new.id)
        if existing is not None:
            return existing, False
        flow = self._flows[new.id] = transitions.created(new, new.state, utcnow())
        self._notifier.notify()
        return flow, True

    async def get_flow(self, flow_id: str) -> FlowStatus | None:
        return self._flows.get(flow_id)

    async def list_flows(
        self,
        *,
        state: FlowState | None = None,
        flow: str | None = None,
        parent_id: str | None = None,
        origin_prefix: str | None = None,
        limit: int = 100,
    ) -> list[FlowStatus]:
        rows = [
            f
            for f in self._flows.values()
            if (state is None or f.state == state)
            and (flow is None or f.flow == flow)
            and (parent_id is None or f.parent_id == parent_id)
            and transitions.origin_matches(f.origin, origin_prefix)
        ]
        rows.sort(key=lambda f: (f.created_at, f.id), reverse=True)
        return rows[:limit]

    async def prune_flows(
        self,
        *,
        finished_before: datetime,
        origin_prefix: str | None = None,
        ids: Sequence[str] | None = None,
        dry_run: bool = False,
        limit: int = 1000,
    ) -> list[str]:
        candidates = (
            self._flows.values()
            if ids is None
            else [f for i in dict.fromkeys(ids) if (f := self._flows.get(i)) is not None]
        )
        doomed = sorted(
            (
                f
                for f in candidates
                if transitions.prunable(f, finished_before, origin_prefix)
                and not self._parent_running(f)
            ),
            key=lambda f: (f.updated_at, f.id),
        )[: max(0, limit)]
        if not dry_run:
            for f in doomed:
                del self._flows[f.id]
                self._steps.pop(f.id, None)
                self._signals.pop(f.id, None)
                self._signal_ids = {k for k in self._signal_ids if k[0] != f.id}
        return [f.id for f in doomed]

    async def load_steps(self, flow_id: str) -> list[StepRecord]:
        return self._sorted_steps(flow_id)

    async def queue_depth(self, *, version: str | None) -> QueueDepth:
        """The flows of `version` counted by `transitions.depth` (a walk over every flow)."""
        now = utcnow()
        return transitions.depth((f for f in self._flows.values() if f.version == version), now)

    # --- signals ----------------------------------------------------------------------------

    async def send_signal(
        self, flow_id: str, name: str, payload: str, signal_id: str | None = None
    ) -> bool:
        if signal_id is not None:
            if (flow_id, signal_id) in self._signal_ids:
                return False
            self._signal_ids.add((flow_id, signal_id))
        now = utcnow()
        record = SignalRecord(next(self._seq), flow_id, name, payload, signal_id, now)
        self._signals.setdefault(flow_id, []).append(_Signal(record))
        self._wake(flow_id, now)
        self._notifier.notify()
        return True

    async def next_signal(self, flow_id: str, name: str) -> SignalRecord | None:
        for signal in self._signals.get(flow_id, []):
            if not signal.consumed and signal.record.name == name:
                return signal.record
        return None

    # --- control ----------------------------------------------------------------------------

    async def request_cancel(self, flow_id: str) -> FlowStatus | None:
        flow = self._flows.get(flow_id)
        if flow is None or flow.is_terminal:
            return flow
        now = utcnow()
        flow = self._flows[flow_id] = transitions.cancel(flow, now)
        self._wake(transitions.parent_to_wake(flow), now)
        self._notifier.notify()
        return flow

    async def claim_flows(
        self,
        *,
        owner: str,
        version: str | None,
        lease_seconds: float,
        limit: int,
        exclusive: bool = False,
    ) -> Claimed:
        now = utcnow()
        expires = now + timedelta(seconds=lease_seconds)
        claimed: list[tuple[FlowStatus, Lease]] = []
        next_wake: datetime | None = None
        candidates = sorted(self._flows.values(), key=lambda f: (f.updated_at, f.id))
        for flow in candidates:
            if not transitions.may_claim(flow, version, exclusive=exclusive):
                continue
            if not transitions.is_runnable(flow, now):
                due = transitions.runnable_at(flow)
                if due is not None and due > now:
                    next_wake = due if next_wake is None else min(next_wake, due)
                continue
            if len(claimed) >= limit:
                continue
            flow = self._flows[flow.id] = transitions.claim(flow, owner, expires, now)
            claimed.append((flow, Lease(flow.id, flow.epoch, owner, expires)))
        return Claimed(claimed, next_wake)

    async def renew_leases(
        self, *, owner: str, leases: Sequence[Lease], lease_seconds: float
    ) -> Renewal:
        renewal = Renewal()
        expires = utcnow() + timedelta(seconds=lease_seconds)
        for lease in leases:
            flow = self._flows.get(lease.flow_id)
            if flow is None or not transitions.holds(flow, lease.epoch):
                renewal.lost.add(lease.flow_id)
                continue
            self._flows[flow.id] = dataclasses.replace(flow, lease_expires_at=expires)
            if flow.cancel_requested:
                renewal.cancel_requested.add(flow.id)
        return renewal

    async def notifier(self) -> Notifier:
        return self._notifier

    async def close(self) -> None:
        return None

    # --- helpers ----------------------------------------------------------------------------

    def _sorted_steps(self, flow_id: str) -> list[StepRecord]:
        return sorted(self._steps.get(flow_id, {}).values(), key=lambda s: key_tuple(s.key))

    def _parent_running(self, flow: FlowStatus) -> bool:
        parent = self._flows.get(flow.parent_id) if flow.parent_id is not None else None
        return parent is not None and not parent.is_terminal

    def _wake(self, flow_id: str | None, now: datetime) -> None:
        flow = self._flows.get(flow_id) if flow_id is not None else None
        if flow is not None:
            self._flows[flow.id] = transitions.wake(flow, now)
