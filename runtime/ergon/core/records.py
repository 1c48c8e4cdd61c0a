"""The rows a store keeps: flows, steps and signals (and what stores report about them).

Payloads (flow input, step results, signal payloads) are JSON text here; the core encodes and
decodes them (`ergon.core.codec`), so stores never see Python objects they would have to pickle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from ergon.core.errors import ErrorInfo

FlowState = Literal["pending", "running", "suspended", "completed", "failed", "cancelled"]
FLOW_STATES: tuple[FlowState, ...] = (
    "pending",
    "running",
    "suspended",
    "completed",
    "failed",
    "cancelled",
)
TERMINAL_STATES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})

StepKind = Literal["step", "sleep", "signal", "child"]
StepState = Literal["completed", "failed", "waiting", "retrying"]
SuspendKind = Literal["signal", "timer", "child", "retry"]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class SuspendReason:
    """Why a flow stopped without ending (a suspended flow's `waiting_for`).

    `kind` is `"signal"` (waiting for `name`), `"timer"` (until `fire_at`), `"child"` (waiting for
    the child flow whose id is `name`) or `"retry"` (a flow-level retry is due at `fire_at`). A
    signal wait with a timeout carries its deadline in `fire_at` as well.
    """

    kind: SuspendKind
    name: str | None = None
    fire_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class NewFlow:
    """A flow to record: what `Scheduler.schedule` and `Executor` hand to the store.

    `origin` says who asked for the flow, for those that manage flows on behalf of something
    else (the operator records `flowrun:<namespace>/<name>/<uid>`), so they can find and prune
    their flows by prefix; it is set once, at creation, and never changes.
    """

    id: str
    flow: str
    input: str
    state: FlowState = "pending"
    version: str | None = None
    parent_id: str | None = None
    origin: str | None = None


@dataclass(frozen=True, slots=True)
class FlowStatus:
    """A flow as the store records it (returned by `Client.status` and `Client.list`).

    `state` is one of pending, running, suspended, completed, failed, cancelled. `attempts` counts
    flow-level attempts (1 until a flow-level retry starts attempt 2). `waiting_for` says what a
    suspended flow waits for. `epoch` increases every time an executor takes the flow over; writes
    carrying an older epoch are refused (fencing). `origin` is who asked for the flow (see
    `NewFlow`), None for flows scheduled directly.
    """

    id: str
    flow: str
    state: FlowState
    input: str
    created_at: datetime
    updated_at: datetime
    attempts: int = 1
    version: str | None = None
    parent_id: str | None = None
    result: str | None = None
    error: ErrorInfo | None = None
    waiting_for: SuspendReason | None = None
    wake_at: datetime | None = None
    epoch: int = 0
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    cancel_requested: bool = False
    events: int = 0
    origin: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """How many unfinished flows of one version there are, by what they wait for
    (`Client.queue_depth`): what an autoscaler sizes a worker pool by, and how an operator sees
    that an old version has drained (`unfinished == 0`).

    `runnable`: a worker could claim them now (pending; suspended with a due wake-up time;
    running with an expired lease). `running`: held by an executor (running with a live lease,
    or without a lease: owned by an executor outside a worker). `waiting`: suspended and not
    due (waiting for a signal, a timer or a child). `next_wake_at`: the next time one of them
    becomes runnable by time alone (the earliest future wake-up time of a waiting flow or lease
    expiry of a running one), None when none will.
    """

    runnable: int = 0
    running: int = 0
    waiting: int = 0
    next_wake_at: datetime | None = None

    @property
    def unfinished(self) -> int:
        """Flows of the version that have not ended: runnable + running + waiting."""
        return self.runnable + self.running + self.waiting


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One checkpoint: the outcome of the durable operation at `key`.

    `key` identifies the operation within its flow: the position in the flow body's sequence of
    calls ("3"), prefixed by the position of the task it runs in for operations inside tasks the
    flow body spawned ("4.0", "4.1"). `position` is the last part as an int.

    `kind` is step, sleep, signal or child. `state` is completed, failed, waiting (a timer, a
    signal wait or a child not yet done; `fire_at` holds the deadline, if any) or retrying
    (attempt `attempts` failed; the next one is due at `fire_at`). `started_at` is when the
    operation first started — a step's first attempt, the start of a wait — and is kept across
    retries and executions, so `completed_at - started_at` includes backoffs and waiting.
    """

    key: str
    name: str
    state: StepState
    kind: StepKind = "step"
    attempts: int = 1
    result: str | None = None
    error: ErrorInfo | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    fire_at: datetime | None = None
    flow_attempt: int = 1
    args_hash: str | None = None

    @property
    def position(self) -> int:
        return int(self.key.rpartition(".")[2])

    @property
    def sort_key(self) -> tuple[int, ...]:
        return key_tuple(self.key)


def key_tuple(key: str) -> tuple[int, ...]:
    return tuple(int(part) for part in key.split("."))


@dataclass(frozen=True, slots=True)
class SignalRecord:
    """A signal waiting in a flow's queue for `name`."""

    seq: int
    flow_id: str
    name: str
    payload: str
    signal_id: str | None = None
    sent_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class Lease:
    """The right to execute one flow, proven by its epoch; `expires_at` None means no expiry."""

    flow_id: str
    epoch: int
    owner: str
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class OpenedFlow:
    """What an executor starts from: the flow, the lease it now holds, and the recorded steps."""

    flow: FlowStatus
    steps: list[StepRecord]
    lease: Lease | None


@dataclass(frozen=True, slots=True)
class FlowEnd:
    """How an execution leaves a flow: the new state and what goes with it.

    For `suspended`, the store makes the flow `pending` instead when an event (signal, child end)
    arrived after `seen_events` — so a wake-up that raced the suspension is never lost.
    """

    state: FlowState
    result: str | None = None
    error: ErrorInfo | None = None
    waiting_for: SuspendReason | None = None
    wake_at: datetime | None = None
    seen_events: int = 0
    attempts: int | None = None
