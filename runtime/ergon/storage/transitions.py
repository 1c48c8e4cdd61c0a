"""The flow state machine, written once.

Every store moves flows between the same states by the same rules; this module states them as
pure functions of a `FlowStatus` (and the time). `MemoryStore` and `SqliteStore` call them;
`PostgresStore` (SQL in `postgres/schema.py`) and `RedisStore` (Lua in `redis/scripts.py`) cannot
call Python inside their one-statement or one-script transactions, so they mirror them, each
mirror marked with a comment naming the function here. `TABLE` lists the transitions as
state x event -> state; the conformance suite (tests/stores) drives every backend through every
row, and docs/architecture.md shows the same table.

States: pending (runnable), running (held by an executor, under a lease or not), suspended
(waiting for a signal, a timer, a child), completed, failed, cancelled (the last three are
terminal: nothing changes them). Every flow has an event counter that signals and ended
children move; it is how a suspension that raced an event is caught.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import datetime
from typing import Literal, NamedTuple

from ergon.core.errors import CancelRequestedError, FencedError, FlowMismatchError
from ergon.core.records import (
    TERMINAL_STATES,
    FlowEnd,
    FlowState,
    FlowStatus,
    NewFlow,
    QueueDepth,
)


def created(new: NewFlow, state: FlowState, now: datetime) -> FlowStatus:
    """A flow recorded for the first time (`create_flow`: `new.state`; `open_flow`: running)."""
    return FlowStatus(
        id=new.id,
        flow=new.flow,
        state=state,
        input=new.input,
        created_at=now,
        updated_at=now,
        version=new.version,
        parent_id=new.parent_id,
        origin=new.origin,
    )


def open_refusal(flow: FlowStatus, new: NewFlow) -> FlowMismatchError | None:
    """Why `open_flow` refuses a recorded flow (None: it does not): its id belongs to a flow of
    another name."""
    if flow.flow == new.flow:
        return None
    return FlowMismatchError(
        f"flow id {new.id!r} is recorded as flow {flow.flow!r}, not {new.flow!r}"
    )


def take_over(flow: FlowStatus, owner: str, now: datetime) -> FlowStatus:
    """An executor outside a worker takes an unended flow over (`open_flow`): a new epoch
    fences out whoever held it; no lease expiry. Call only for a flow that has not ended."""
    return dataclasses.replace(
        flow,
        state="running",
        epoch=flow.epoch + 1,
        lease_owner=owner,
        lease_expires_at=None,
        waiting_for=None,
        wake_at=None,
        updated_at=now,
    )


def settle(end: FlowEnd, events: int) -> FlowState:
    """The race rule: a suspension becomes pending when an event (a signal, an ended child)
    arrived after the execution last looked (`end.seen_events`), so that wake-up is not lost."""
    if end.state == "suspended" and events > end.seen_events:
        return "pending"
    return end.state


def finish(flow: FlowStatus, end: FlowEnd, now: datetime) -> FlowStatus:
    """An execution ends (`finish_flow`): the settled state, what goes with it, no lease.

    Result, error and attempts keep their old values when the end brings none. A suspension
    keeps what it waits for (also when settled as pending); only a suspended flow keeps a wake-up
    time. A terminal end clears a cancellation request.
    """
    state = settle(end, flow.events)
    terminal = state in TERMINAL_STATES
    return dataclasses.replace(
        flow,
        state=state,
        result=end.result if end.result is not None else flow.result,
        error=end.error if end.error is not None else flow.error,
        waiting_for=None if terminal else end.waiting_for,
        wake_at=end.wake_at if state == "suspended" else None,
        attempts=end.attempts if end.attempts is not None else flow.attempts,
        lease_owner=None,
        lease_expires_at=None,
        cancel_requested=flow.cancel_requested and not terminal,
        updated_at=now,
    )


def parent_to_wake(flow: FlowStatus) -> str | None:
    """The parent an ended child wakes (after `finish` or `cancel`), if any."""
    return flow.parent_id if flow.state in TERMINAL_STATES else None


def wake(flow: FlowStatus, now: datetime) -> FlowStatus:
    """An event for the flow (a signal sent to it, a child of it ended): its event counter moves,
    and a suspended flow becomes pending (runnable now, its timer dropped)."""
    if flow.state == "suspended":
        return dataclasses.replace(
            flow, events=flow.events + 1, state="pending", wake_at=None, updated_at=now
        )
    return dataclasses.replace(flow, events=flow.events + 1, updated_at=now)


def lease_expired(flow: FlowStatus, now: datetime) -> bool:
    """A running flow whose holder's lease ran out (a flow opened outside a worker has none)."""
    return flow.lease_expires_at is not None and flow.lease_expires_at < now


def runnable_at(flow: FlowStatus) -> datetime | None:
    """When a flow becomes claimable by time alone (None: not by time): a pending flow at once
    (its update time), a suspended one at its wake-up time, a running one when its lease runs
    out."""
    if flow.state == "pending":
        return flow.updated_at
    if flow.state == "suspended":
        return flow.wake_at
    if flow.state == "running":
        return flow.lease_expires_at
    return None


def is_runnable(flow: FlowStatus, now: datetime) -> bool:
    """Whether a worker may claim the flow now: pending; suspended with its wake-up time due;
    running with an expired lease."""
    if flow.state == "pending":
        return True
    if flow.state == "suspended":
        return flow.wake_at is not None and flow.wake_at <= now
    return flow.state == "running" and lease_expired(flow, now)


def may_claim(flow: FlowStatus, version: str | None, *, exclusive: bool = False) -> bool:
    """Version routing: a worker with a version runs flows of that version and unversioned
    ones (only those of its version when `exclusive`: a worker pool of one version); an
    unversioned worker only unversioned ones (`exclusive` changes nothing for it)."""
    if exclusive and version is not None:
        return flow.version == version
    return flow.version is None or flow.version == version


DepthBucket = Literal["runnable", "running", "waiting"]


def depth_bucket(flow: FlowStatus, now: datetime) -> DepthBucket | None:
    """Where `queue_depth` counts a flow (None: it ended, it is not counted): runnable (a
    worker may claim it now, `is_runnable`); running (held by an executor: a live lease, or no
    lease at all); waiting (suspended and not due: a signal, a timer, a child)."""
    if is_runnable(flow, now):
        return "runnable"
    if flow.state == "running":
        return "running"
    if flow.state == "suspended":
        return "waiting"
    return None


def depth(flows: Iterable[FlowStatus], now: datetime) -> QueueDepth:
    """`queue_depth` over the flows of one version: each counted by `depth_bucket`;
    `next_wake_at` is the earliest `runnable_at` among those not runnable now (a waiting flow's
    wake-up time, a running flow's lease expiry)."""
    counts = {"runnable": 0, "running": 0, "waiting": 0}
    next_wake: datetime | None = None
    for flow in flows:
        bucket = depth_bucket(flow, now)
        if bucket is None:
            continue
        counts[bucket] += 1
        due = runnable_at(flow) if bucket != "runnable" else None
        if due is not None and (next_wake is None or due < next_wake):
            next_wake = due
    return QueueDepth(
        runnable=counts["runnable"],
        running=counts["running"],
        waiting=counts["waiting"],
        next_wake_at=next_wake,
    )


def claim(flow: FlowStatus, owner: str, expires: datetime, now: datetime) -> FlowStatus:
    """A worker claims a runnable flow: running under a new epoch and a lease until `expires`."""
    return dataclasses.replace(
        flow,
        state="running",
        epoch=flow.epoch + 1,
        lease_owner=owner,
        lease_expires_at=expires,
        updated_at=now,
    )


def holds(flow: FlowStatus | None, epoch: int) -> bool:
    """Whether a lease under `epoch` is still held (renewals)."""
    return flow is not None and flow.epoch == epoch and flow.state == "running"


def resumable(flow: FlowStatus | None, epoch: int) -> bool:
    """Whether the executor that claimed a flow under `epoch` may still start on it
    (`resume_flow`); else it was taken over since."""
    return flow is not None and flow.epoch == epoch


def accepts_checkpoint(flow: FlowStatus | None, epoch: int) -> bool:
    """Whether a checkpoint under `epoch` is written: the flow runs under that epoch and nobody
    asked it to stop."""
    return holds(flow, epoch) and flow is not None and not flow.cancel_requested


def checkpoint_refusal(
    flow: FlowStatus | None, flow_id: str, epoch: int
) -> FencedError | CancelRequestedError:
    """The error for a checkpoint `accepts_checkpoint` refused: a cancellation request is
    reported as such to the executor holding the flow, anything else as fencing."""
    if flow is not None and flow.epoch == epoch and flow.cancel_requested:
        return CancelRequestedError.requested(flow_id)
    return FencedError.stale(flow_id, epoch)


def accepts_end(flow: FlowStatus | None, epoch: int | None) -> bool:
    """Whether an execution's end under `epoch` is recorded (`epoch` None: an unfenced end,
    e.g. by an operator)."""
    return flow is not None and (epoch is None or flow.epoch == epoch)


def end_refusal(flow: FlowStatus | None, flow_id: str, epoch: int | None) -> FencedError:
    """The error for an end `accepts_end` refused."""
    return FencedError.missing(flow_id) if flow is None else FencedError.stale(flow_id, epoch)


def ends_on_cancel(flow: FlowStatus, now: datetime) -> bool:
    """Whether a cancellation ends the flow at once: nobody runs it (pending, suspended) or its
    runner's lease ran out. A running flow is asked to stop at its next step instead."""
    return flow.state in ("pending", "suspended") or (
        flow.state == "running" and lease_expired(flow, now)
    )


def cancel(flow: FlowStatus, now: datetime) -> FlowStatus:
    """A cancellation request (`request_cancel`) for a flow that has not ended."""
    if ends_on_cancel(flow, now):
        return dataclasses.replace(
            flow,
            state="cancelled",
            waiting_for=None,
            wake_at=None,
            lease_owner=None,
            lease_expires_at=None,
            updated_at=now,
        )
    return dataclasses.replace(flow, cancel_requested=True, updated_at=now)


# --- the table -----------------------------------------------------------------------------


class Transition(NamedTuple):
    """One row of the state table: a flow in `state` meets `event` and is then in `next`.

    `fences` says whether the event starts a new epoch (the previous holder's writes are refused
    from then on).
    """

    state: str
    event: str
    next: str
    fences: bool = False


# States beyond the stored ones: "new" (no record yet), "running, lease expired", "running,
# cancel requested", "suspended, timer due". Events: schedule (create_flow), execute
# (open_flow), claim (claim_flows), complete / fail / cancelled / suspend (finish_flow),
# "suspend after an event" (finish_flow after a signal arrived during the execution), signal
# (send_signal), child ends (a child's finish_flow), cancel (request_cancel).
TABLE: tuple[Transition, ...] = (
    Transition("new", "schedule", "pending"),
    Transition("new", "execute", "running", fences=True),
    Transition("pending", "execute", "running", fences=True),
    Transition("pending", "claim", "running", fences=True),
    Transition("pending", "signal", "pending"),
    Transition("pending", "cancel", "cancelled"),
    Transition("running", "execute", "running", fences=True),
    Transition("running", "claim", "running"),
    Transition("running", "complete", "completed"),
    Transition("running", "fail", "failed"),
    Transition("running", "suspend", "suspended"),
    Transition("running", "suspend after an event", "pending"),
    Transition("running", "signal", "running"),
    Transition("running", "child ends", "running"),
    Transition("running", "cancel", "running, cancel requested"),
    Transition("running, cancel requested", "cancelled", "cancelled"),
    Transition("running, lease expired", "claim", "running", fences=True),
    Transition("running, lease expired", "cancel", "cancelled"),
    Transition("suspended", "signal", "pending"),
    Transition("suspended", "child ends", "pending"),
    Transition("suspended", "claim", "suspended"),
    Transition("suspended", "execute", "running", fences=True),
    Transition("suspended", "cancel", "cancelled"),
    Transition("suspended, timer due", "claim", "running", fences=True),
    Transition("completed", "execute", "completed"),
    Transition("completed", "claim", "completed"),
    Transition("completed", "signal", "completed"),
    Transition("completed", "cancel", "completed"),
    Transition("failed", "cancel", "failed"),
    Transition("cancelled", "signal", "cancelled"),
)


def table_markdown() -> str:
    """`TABLE` as the markdown table docs/architecture.md shows."""
    lines = ["| state | event | next state | new epoch |", "| --- | --- | --- | --- |"]
    for row in TABLE:
        lines.append(f"| {row.state} | {row.event} | {row.next} | {'yes' if row.fences else ''} |")
    return "\n".join(lines) + "\n"


def origin_matches(origin: str | None, prefix: str | None) -> bool:
    """`list_flows(origin_prefix=...)`: no prefix matches every flow; a prefix only flows whose
    origin starts with it (a flow without an origin never)."""
    return prefix is None or (origin is not None and origin.startswith(prefix))


def prunable(flow: FlowStatus, finished_before: datetime, origin_prefix: str | None) -> bool:
    """`prune_flows`: the flow ended before `finished_before` and has a matching origin. (The
    rule about a parent that has not ended is checked by each store, which can see the parent.)
    """
    return (
        flow.is_terminal
        and flow.updated_at < finished_before
        and origin_matches(flow.origin, origin_prefix)
    )
