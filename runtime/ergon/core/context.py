"""The execution context that travels with a running flow, in `contextvars`.

`FlowContext` is one execution of one flow: its recorded steps, the store and epoch it writes
with, and whether it must stop (suspension, lost lease, cancellation). `Scope` is what a piece of
code inside that execution sees: the flow context, the `Sequence` that hands out positions to the
durable operations it calls, and — inside a step body — the step being run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import datetime

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
from ergon.core.outcomes import SuspendReason
from ergon.core.records import StepRecord
from ergon.core.store import Store


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


class FlowContext:
    """One execution of one flow."""

    def __init__(
        self,
        *,
        flow_id: str,
        store: Store,
        epoch: int | None,
        attempt: int,
        steps: list[StepRecord],
        events_seen: int,
        version: str | None,
        inline_children: bool,
        deadline: LeaseDeadline | None = None,
    ) -> None:
        self.flow_id = flow_id
        self.store = store
        self.epoch = epoch
        self.attempt = attempt
        self.recorded: dict[str, StepRecord] = {step.key: step for step in steps}
        self.events_seen = events_seen
        self.version = version
        self.inline_children = inline_children
        self.deadline = deadline
        self.suspension: SuspendReason | None = None
        self.wake_at: datetime | None = None
        self.fatal: BaseException | None = None
        self.interrupt: _Interrupt | None = None
        self.cancel_requested = False
        self.closing = False
        self.tasks: set[asyncio.Task[object]] = set()
        self.signal_lock = asyncio.Lock()
        self.steps_run = 0
        self.steps_replayed = 0
        self.active = 0

    def check(self) -> None:
        """Raise if this execution must not start another durable operation."""
        if self.interrupt is not None:
            raise self.interrupt
        if self.deadline is not None and self.deadline.lapsed:
            self.interrupt = _Fenced()  # the lease may be someone else's by now: start nothing
            raise self.interrupt
        if self.cancel_requested:
            self.interrupt = _Cancelled()
            raise self.interrupt
        if self.closing:
            raise _Closing()
        if self.suspension is not None:
            raise _Suspend()

    def suspend(self, reason: SuspendReason) -> _Suspend:
        """Note why the flow must stop; returns the exception that unwinds the caller.

        Parallel branches may each suspend: the first reason is reported, and the flow wakes at
        the earliest time any of them named.
        """
        if self.suspension is None:
            self.suspension = reason
        if reason.fire_at is not None and (self.wake_at is None or reason.fire_at < self.wake_at):
            self.wake_at = reason.fire_at
        return _Suspend()

    async def save(self, step: StepRecord, *, consumes: int | None = None) -> None:
        """Checkpoint `step`; a refused or failed write stops the whole execution.

        Every step passes here, so this is `storing()` written out: the two context managers
        cost more than the rest of a step's own bookkeeping.
        """
        token = enter_internal()
        try:
            await self.store.save_step(self.flow_id, step, epoch=self.epoch, consumes=consumes)
        except (FencedError, CancelRequestedError) as exc:
            raise self._stopped_by(exc) from None
        except StoreError as exc:
            raise self._stopped_by(exc, step) from exc
        finally:
            if token is not None:
                _scope.reset(token)
        self.recorded[step.key] = step

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
            self.interrupt = _Fenced()
        elif isinstance(exc, CancelRequestedError):
            self.interrupt = _Cancelled()
        elif isinstance(exc, StoreValueError):
            what = (
                f"an operation of flow {self.flow_id}"
                if step is None
                else f"the checkpoint of {step.kind} '{step.name}' (position {step.key})"
            )
            self.interrupt = _Refused(exc.failure(what))
        else:
            self.interrupt = _Unavailable(exc)
        return self.interrupt


@dataclass(slots=True)
class Scope:
    """What code running inside a flow sees. Never changed once made (not frozen only because
    a frozen dataclass costs five times as much to create, and a step creates several)."""

    flow: FlowContext
    sequence: Sequence
    step: StepInfo | None = None
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
    return scope.step


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


def enter(scope: Scope) -> object:
    return _scope.set(scope)


def leave(token: object) -> None:
    _scope.reset(token)  # type: ignore[arg-type]
