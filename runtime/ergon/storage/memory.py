"""`MemoryStore`: everything in this process's memory. For tests and workers in one process."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from datetime import datetime, timedelta

from ergon.core.errors import CancelRequestedError, FencedError, FlowMismatchError
from ergon.core.records import (
    TERMINAL_STATES,
    FlowEnd,
    FlowState,
    FlowStatus,
    Lease,
    NewFlow,
    OpenedFlow,
    SignalRecord,
    StepRecord,
    key_tuple,
    utcnow,
)
from ergon.core.store import Claimed, Notifier, Renewal
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
        flow = self._flows.get(new.id)
        if flow is None:
            now = utcnow()
            flow = FlowStatus(
                id=new.id,
                flow=new.flow,
                state="running",
                input=new.input,
                created_at=now,
                updated_at=now,
                version=new.version,
                parent_id=new.parent_id,
            )
        elif flow.flow != new.flow:
            raise FlowMismatchError(
                f"flow id {new.id!r} is recorded as flow {flow.flow!r}, not {new.flow!r}"
            )
        if flow.is_terminal:
            return OpenedFlow(flow, [], None)
        flow = dataclasses.replace(
            flow,
            state="running",
            epoch=flow.epoch + 1,
            lease_owner=owner,
            lease_expires_at=None,
            waiting_for=None,
            wake_at=None,
            updated_at=utcnow(),
        )
        self._flows[new.id] = flow
        lease = Lease(new.id, flow.epoch, owner, None)
        return OpenedFlow(flow, self._sorted_steps(new.id), lease)

    async def resume_flow(self, lease: Lease) -> OpenedFlow:
        flow = self._require(lease.flow_id)
        if flow.epoch != lease.epoch:
            raise FencedError(f"flow {lease.flow_id} is held under a newer epoch")
        return OpenedFlow(flow, self._sorted_steps(lease.flow_id), lease)

    async def save_step(
        self, flow_id: str, step: StepRecord, *, epoch: int | None, consumes: int | None = None
    ) -> None:
        flow = self._require(flow_id)
        if epoch is not None:
            if flow.epoch != epoch or flow.state != "running":
                raise FencedError(f"flow {flow_id} is held by another executor")
            if flow.cancel_requested:
                raise CancelRequestedError(f"flow {flow_id} is being cancelled")
        if consumes is not None:
            for signal in self._signals.get(flow_id, []):
                if signal.record.seq == consumes:
                    signal.consumed = True
        self._steps.setdefault(flow_id, {})[step.key] = step

    async def finish_flow(self, flow_id: str, end: FlowEnd, *, epoch: int | None) -> FlowStatus:
        flow = self._require(flow_id)
        if epoch is not None and flow.epoch != epoch:
            raise FencedError(f"flow {flow_id} is held by another executor")
        state: FlowState = end.state
        if state == "suspended" and flow.events > end.seen_events:
            state = "pending"
        flow = dataclasses.replace(
            flow,
            state=state,
            result=end.result if end.result is not None else flow.result,
            error=end.error if end.error is not None else flow.error,
            waiting_for=end.waiting_for if state in ("suspended", "pending") else None,
            wake_at=end.wake_at if state == "suspended" else None,
            attempts=end.attempts if end.attempts is not None else flow.attempts,
            lease_owner=None,
            lease_expires_at=None,
            cancel_requested=flow.cancel_requested and state not in TERMINAL_STATES,
            updated_at=utcnow(),
        )
        self._flows[flow_id] = flow
        if state in TERMINAL_STATES and flow.parent_id:
            self._wake(flow.parent_id)
        self._notifier.notify()
        return flow

    # --- records ----------------------------------------------------------------------------

    async def create_flow(self, new: NewFlow) -> tuple[FlowStatus, bool]:
        existing = self._flows.get(new.id)
        if existing is not None:
            return existing, False
        now = utcnow()
        flow = FlowStatus(
            id=new.id,
            flow=new.flow,
            state=new.state,
            input=new.input,
            created_at=now,
            updated_at=now,
            version=new.version,
            parent_id=new.parent_id,
        )
        self._flows[new.id] = flow
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
        limit: int = 100,
    ) -> list[FlowStatus]:
        rows = [
            f
            for f in self._flows.values()
            if (state is None or f.state == state)
            and (flow is None or f.flow == flow)
            and (parent_id is None or f.parent_id == parent_id)
        ]
        rows.sort(key=lambda f: (f.created_at, f.id), reverse=True)
        return rows[:limit]

    async def load_steps(self, flow_id: str) -> list[StepRecord]:
        return self._sorted_steps(flow_id)

    # --- signals ----------------------------------------------------------------------------

    async def send_signal(
        self, flow_id: str, name: str, payload: str, signal_id: str | None = None
    ) -> bool:
        if signal_id is not None:
            if (flow_id, signal_id) in self._signal_ids:
                return False
            self._signal_ids.add((flow_id, signal_id))
        record = SignalRecord(next(self._seq), flow_id, name, payload, signal_id, utcnow())
        self._signals.setdefault(flow_id, []).append(_Signal(record))
        self._wake(flow_id)
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
        lease_dead = flow.lease_expires_at is not None and flow.lease_expires_at < now
        if flow.state in ("pending", "suspended") or (flow.state == "running" and lease_dead):
            flow = dataclasses.replace(
                flow,
                state="cancelled",
                waiting_for=None,
                wake_at=None,
                lease_owner=None,
                lease_expires_at=None,
                updated_at=now,
            )
            if flow.parent_id:
                self._wake(flow.parent_id)
        else:
            flow = dataclasses.replace(flow, cancel_requested=True, updated_at=now)
        self._flows[flow_id] = flow
        self._notifier.notify()
        return flow

    async def claim_flows(
        self, *, owner: str, version: str | None, lease_seconds: float, limit: int
    ) -> Claimed:
        now = utcnow()
        expires = now + timedelta(seconds=lease_seconds)
        claimed: list[tuple[FlowStatus, Lease]] = []
        next_wake = None
        candidates = sorted(self._flows.values(), key=lambda f: (f.updated_at, f.id))
        for flow in candidates:
            if flow.version is not None and flow.version != version:
                continue
            due = _due_at(flow)
            if due is None:
                continue
            if due > now:
                next_wake = due if next_wake is None else min(next_wake, due)
                continue
            if len(claimed) >= limit:
                continue
            flow = dataclasses.replace(
                flow,
                state="running",
                epoch=flow.epoch + 1,
                lease_owner=owner,
                lease_expires_at=expires,
                updated_at=now,
            )
            self._flows[flow.id] = flow
            claimed.append((flow, Lease(flow.id, flow.epoch, owner, expires)))
        return Claimed(claimed, next_wake)

    async def renew_leases(
        self, *, owner: str, leases: Sequence[Lease], lease_seconds: float
    ) -> Renewal:
        renewal = Renewal()
        expires = utcnow() + timedelta(seconds=lease_seconds)
        for lease in leases:
            flow = self._flows.get(lease.flow_id)
            if flow is None or flow.epoch != lease.epoch or flow.state != "running":
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

    def _require(self, flow_id: str) -> FlowStatus:
        flow = self._flows.get(flow_id)
        if flow is None:
            raise FencedError(f"flow {flow_id} does not exist")
        return flow

    def _sorted_steps(self, flow_id: str) -> list[StepRecord]:
        return sorted(self._steps.get(flow_id, {}).values(), key=lambda s: key_tuple(s.key))

    def _wake(self, flow_id: str) -> None:
        flow = self._flows.get(flow_id)
        if flow is None:
            return
        state: FlowState = "pending" if flow.state == "suspended" else flow.state
        self._flows[flow_id] = dataclasses.replace(
            flow,
            events=flow.events + 1,
            state=state,
            wake_at=None if state == "pending" else flow.wake_at,
            updated_at=utcnow(),
        )


def _due_at(flow: FlowStatus) -> datetime | None:
    """When a flow becomes claimable by time alone (None: not by time)."""
    if flow.state == "pending":
        return flow.created_at
    if flow.state == "suspended":
        return flow.wake_at
    if flow.state == "running":
        return flow.lease_expires_at
    return None
