"""The execution context that travels with a running flow, in `contextvars`.

`FlowContext` is one execution of one flow, made of small parts with one role each:

* `FlowIdentity`: which flow runs, and what its writes carry (store, epoch, attempt);
* `History`: the steps earlier executions recorded, looked up by position as the flow replays;
* `StopRequest`: whether the execution may start another durable operation, and if not, why
  (a suspension, a lost lease, a cancellation, a failing store, the end of the flow body);
* `Work`: the tasks the flow body spawned and the durable operations in flight;
* `ChildRunner`: the policy for how its child flows run (inline, or queued for workers).

`Scope` is what a piece of code inside that execution sees: the flow context, the `Sequence`
that hands out positions to the durable operations it calls, and — inside a step body — the step
being run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ergon.core.definition import FlowModel
from ergon.core.errors import (
    CancelRequestedError,
    FencedError,
    FlowContextError,
    StoreError,
    StoreValueError,
    _Cancelled,
    _Closing,
    _Fenced,
    _Interrupt,
    _Refused,
    _Suspend,
    _Unavailable,
)
from ergon.core.fencing import LeaseDeadline
from ergon.core.outcomes import Outcome
from ergon.core.records import StepRecord, SuspendReason
from ergon.core.store import ExecutionStore


@dataclass(frozen=True, slots=True)
class StepInfo:
    """What `ergon.current_step()` returns inside a step.

    `idempotency_key` is unique per flow and step position and stays the same across retries and
    crashes: pass it to external systems so a repeated call is recognised as the same request.
    """

    flow_id: str
    name: str
    position: int
    key: str
    attempt: int
    idempotency_key: str


class RunningStep:
    """The step whose body is running, as `Scope.step`. `info()` is what `ergon.current_step()`
    returns, made on first use: most steps never ask, and a `StepInfo` (frozen) costs more to
    make than the rest of a step's bookkeeping."""

    __slots__ = ("_info", "attempt", "flow_id", "key", "name")

    def __init__(self, flow_id: str, key: str, name: str, attempt: int) -> None:
        self.flow_id = flow_id
        self.key = key
        self.name = name
        self.attempt = attempt
        self._info: StepInfo | None = None

    def info(self) -> StepInfo:
        if self._info is None:
            self._info = StepInfo(
                flow_id=self.flow_id,
                name=self.name,
                position=int(self.key.rpartition(".")[2]),
                key=self.key,
                attempt=self.attempt,
                idempotency_key=f"{self.flow_id}:{self.key}",
            )
        return self._info


class Sequence:
    """Hands out the keys of durable operations, in call order, within one task of a flow."""

    __slots__ = ("_next", "prefix")

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self._next = 0

    def next_key(self) -> str:
        key = f"{self.prefix}{self._next}"
        self._next += 1
        return key


@dataclass(frozen=True, slots=True)
class FlowIdentity:
    """Which flow an execution runs, and what its writes carry: the `epoch` its store fences
    them with, and the flow-level `attempt` its records belong to."""

    flow_id: str
    store: ExecutionStore
    epoch: int | None
    attempt: int
    version: str | None


class History:
    """The steps earlier executions of the flow recorded, by position (`StepRecord.key`), kept
    up to date as this execution records more; and how many events (signals, ended children)
    the flow had seen when this execution opened it."""

    __slots__ = ("_steps", "events_seen", "lookup")

    def __init__(self, steps: Iterable[StepRecord], events_seen: int) -> None:
        self._steps = {step.key: step for step in steps}
        self.events_seen = events_seen
        # lookup(key): the record at position `key`, if one was made (`replay` checks it).
        # The dict's own `get`, without a Python frame around it: every step calls it.
        self.lookup: Callable[[str], StepRecord | None] = self._steps.get

    def record(self, step: StepRecord) -> None:
        """`step` was checkpointed: a later lookup at its position finds it."""
        self._steps[step.key] = step


class StopRequest:
    """Whether the execution may start another durable operation (`check`), and if not, why.

    Changed only through its methods, by the operations and the worker; the executor reads the
    reason once the flow body has ended.
    """

    __slots__ = (
        "_cancel",
        "_closing",
        "_deadline",
        "_fatal",
        "_interrupt",
        "_suspension",
        "_wake_at",
    )

    def __init__(self, deadline: LeaseDeadline | None = None) -> None:
        self._deadline = deadline
        self._suspension: SuspendReason | None = None
        self._wake_at: datetime | None = None
        self._fatal: BaseException | None = None
        self._interrupt: _Interrupt | None = None
        self._cancel = False
        self._closing = False

    def check(self) -> None:
        """Raise if this execution must not start another durable operation."""
        if self._interrupt is not None:
            raise self._interrupt
        if self._deadline is not None and self._deadline.lapsed:
            raise self.interrupt(_Fenced())  # the lease may be someone else's by now: start nothing
        if self._cancel:
            raise self.interrupt(_Cancelled())
        if self._closing:
            raise _Closing()
        if self._suspension is not None:
            raise _Suspend()

    def suspend(self, reason: SuspendReason) -> _Suspend:
        """Note why the flow must stop; returns the exception that unwinds the caller.

        Parallel branches may each suspend: the first reason is reported, and the flow wakes at
        the earliest time any of them named.
        """
        if self._suspension is None:
            self._suspension = reason
        if reason.fire_at is not None and (self._wake_at is None or reason.fire_at < self._wake_at):
            self._wake_at = reason.fire_at
        return _Suspend()

    def interrupt(self, why: _Interrupt) -> _Interrupt:
        """Stop the execution for `why` (a lost lease, a cancellation, a failing store); returns
        `why` for the caller to raise."""
        self._interrupt = why
        return why

    def request_cancel(self) -> None:
        """The flow was asked to cancel: it stops at its next durable operation."""
        self._cancel = True

    def fail(self, error: BaseException) -> None:
        """The flow fails with `error`, whatever its body does with it (a non-deterministic
        replay: no `except` in the flow may turn that into success)."""
        self._fatal = error

    def close(self) -> None:
        """The flow body ended: a branch still running starts nothing new."""
        self._closing = True

    @property
    def interrupted(self) -> _Interrupt | None:
        return self._interrupt

    @property
    def cancel_requested(self) -> bool:
        return self._cancel

    @property
    def fatal(self) -> BaseException | None:
        return self._fatal

    @property
    def suspension(self) -> SuspendReason | None:
        return self._suspension

    @property
    def wake_at(self) -> datetime | None:
        """The earliest time any suspension named (a timer, a signal wait's deadline)."""
        return self._wake_at


class Work:
    """The tasks the flow body spawned (gather, create_task, TaskGroup) and how many durable
    operations are running, so that the end of the flow body lets running steps checkpoint
    before it stops the rest (`settle`)."""

    __slots__ = ("_active", "_tasks")

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[object]] = set()
        self._active = 0

    def track(self, task: asyncio.Task[object]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def begin(self) -> None:
        """A durable operation starts running (not replaying) its work; `end` when it is done."""
        self._active += 1

    def end(self) -> None:
        self._active -= 1

    async def settle(self) -> None:
        """Let steps still running in spawned tasks finish and checkpoint; then stop the rest.

        Call after `StopRequest.close()`: a branch that reaches its next durable operation
        stops there.
        """
        while True:
            pending = [task for task in self._tasks if not task.done()]
            if not pending:
                return
            if self._active == 0:
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                return
            await asyncio.wait(pending, timeout=0.05, return_when=asyncio.FIRST_COMPLETED)


class ChildRunner(Protocol):
    """How a child flow runs once its parent invokes it: the policy behind `ergon.invoke`.

    Called with the parent's identity, the child and the child's id, it returns where the
    child stands: how it ended, or `Suspended` while the parent has to wait for it. An
    `Executor` runs children inline, to their end or suspension (`executor.run_child_inline`);
    a `Worker` queues them for any worker and lets the parent suspend (`children.queue_child`).
    """

    def __call__(
        self, parent: FlowIdentity, child: FlowModel, child_id: str, /
    ) -> Awaitable[Outcome]: ...


class FlowContext:
    """One execution of one flow: who it is, what was recorded, whether it must stop, the work
    it has in flight and how its children run (see the module docstring)."""

    __slots__ = ("children", "history", "identity", "signal_lock", "stop", "work")

    def __init__(
        self,
        identity: FlowIdentity,
        history: History,
        *,
        children: ChildRunner,
        deadline: LeaseDeadline | None = None,
    ) -> None:
        self.identity = identity
        self.history = history
        self.children = children
        self.stop = StopRequest(deadline)
        self.work = Work()
        self.signal_lock = asyncio.Lock()

    async def save(self, step: StepRecord, *, consumes: int | None = None) -> None:
        """Checkpoint `step`; a refused or failed write stops the whole execution.

        Every step passes here, so this is `storing()` written out: the two context managers
        cost more than the rest of a step's own bookkeeping.
        """
        identity = self.identity
        token = enter_internal()
        try:
            await identity.store.save_step(
                identity.flow_id, step, epoch=identity.epoch, consumes=consumes
            )
        except (FencedError, CancelRequestedError) as exc:
            raise self._stopped_by(exc) from None
        except StoreError as exc:
            raise self._stopped_by(exc, step) from exc
        finally:
            if token is not None:
                _scope.reset(token)
        self.history.record(step)

    @contextmanager
    def storing(self) -> Iterator[None]:
        """Around every store call of the execution: a fenced write, a cancellation, a failing
        store or a refused value stops the execution (never the flow's own error handling)."""
        with internal():
            try:
                yield
            except (FencedError, CancelRequestedError) as exc:
                raise self._stopped_by(exc) from None
            except StoreError as exc:
                raise self._stopped_by(exc) from exc

    def _stopped_by(self, exc: StoreError, step: StepRecord | None = None) -> _Interrupt:
        """The interrupt for a store call that failed with `exc` (while saving `step`): a
        refused value fails the flow, as running it again would meet the same refusal; any
        other store error stops the execution for a later one to resume."""
        if isinstance(exc, FencedError):
            return self.stop.interrupt(_Fenced())
        if isinstance(exc, CancelRequestedError):
            return self.stop.interrupt(_Cancelled())
        if isinstance(exc, StoreValueError):
            what = (
                f"an operation of flow {self.identity.flow_id}"
                if step is None
                else f"the checkpoint of {step.kind} '{step.name}' (position {step.key})"
            )
            return self.stop.interrupt(_Refused(exc.failure(what)))
        return self.stop.interrupt(_Unavailable(exc))


@dataclass(slots=True)
class Scope:
    """What code running inside a flow sees. Never changed once made (not frozen only because
    a frozen dataclass costs five times as much to create, and a step creates several)."""

    flow: FlowContext
    sequence: Sequence
    step: RunningStep | None = None
    internal: bool = False


_scope: ContextVar[Scope | None] = ContextVar("ergon_scope", default=None)


def current_scope() -> Scope | None:
    return _scope.get()


def flow_scope(operation: str) -> Scope:
    """The scope of the flow body calling `operation`, or a clear error outside one."""
    scope = _scope.get()
    if scope is None:
        raise FlowContextError(
            f"{operation} was called outside a running flow. Durable operations work only inside "
            "the @ergon.flow method of a Flow run by ergon.Executor, ergon.run or a Worker."
        )
    if scope.step is not None:
        raise FlowContextError(
            f"{operation} was called inside step {scope.step.name!r}. Signals, timers and child "
            "flows belong in the @ergon.flow method, not in steps."
        )
    return scope


def current_step() -> StepInfo:
    """Information about the step being run, including its stable `idempotency_key`."""
    scope = _scope.get()
    if scope is None or scope.step is None:
        raise FlowContextError("ergon.current_step() can only be called inside an @ergon.step")
    return scope.step.info()


@contextmanager
def internal() -> Iterator[None]:
    """Run Ergon's own machinery (store calls above all) without it counting as flow code.

    Tasks created by the flow body take positions (see `branches`); tasks a store driver creates
    while serving a checkpoint must not, or a live run and its replay would number steps
    differently.
    """
    token = enter_internal()
    try:
        yield
    finally:
        if token is not None:
            _scope.reset(token)


def enter_internal() -> Token[Scope | None] | None:
    """`internal()` without the context manager, for hot paths: the token to `leave` with, or
    None when the code already runs internally (or outside any flow)."""
    scope = _scope.get()
    if scope is None or scope.internal:
        return None
    return _scope.set(Scope(scope.flow, scope.sequence, scope.step, True))


def enter(scope: Scope) -> Token[Scope | None]:
    """Make `scope` what the running code sees, until `leave` with the token returned."""
    return _scope.set(scope)


def leave(token: Token[Scope | None]) -> None:
    _scope.reset(token)
