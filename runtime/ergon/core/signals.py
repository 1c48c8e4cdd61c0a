"""`ergon.wait_for_signal`: waiting durably for external events."""

from __future__ import annotations

from collections.abc import Coroutine
from datetime import datetime, timedelta
from typing import Any, TypeVar, overload

import pydantic_core
from pydantic import ValidationError

from ergon.core import codec, replay
from ergon.core.branches import operation
from ergon.core.context import FlowContext, Scope, flow_scope
from ergon.core.errors import ErrorInfo, SignalPayloadError, SignalTimeoutError
from ergon.core.identifiers import check_signal_name
from ergon.core.records import StepRecord, StepState, SuspendReason, utcnow
from ergon.core.retry import seconds

T = TypeVar("T")
_MESSAGE_LIMIT = 2000


@overload
def wait_for_signal(
    name: str, type: type[T], *, timeout: float | timedelta | None = None
) -> Coroutine[Any, Any, T]: ...


@overload
def wait_for_signal(
    name: str, type: object = Any, *, timeout: float | timedelta | None = None
) -> Coroutine[Any, Any, Any]: ...


def wait_for_signal(
    name: str, type: object = Any, *, timeout: float | timedelta | None = None
) -> Coroutine[Any, Any, Any]:
    """Consume the next signal `name` sent to this flow, suspending until one arrives.

    The payload is validated against `type` (`ergon.SignalPayloadError` if it does not fit; the
    flow may catch it and wait again). With `timeout`, `ergon.SignalTimeoutError` is raised when
    no signal came in time; the deadline is recorded, so restarts do not extend it.
    """
    scope = flow_scope(f"ergon.wait_for_signal({name!r})")
    check_signal_name(name)
    limit = seconds(timeout) if timeout is not None else None
    return _wait(scope, scope.sequence.next_key(), name, type, limit)


@operation
async def _wait(scope: Scope, key: str, name: str, type_: object, timeout: float | None) -> Any:
    ctx = scope.flow
    ctx.stop.check()
    step_name = f"signal:{name}"
    record = replay.recorded(ctx, key, "signal", step_name)
    deadline = began = None
    if record is not None:
        if record.state == "completed":
            return _payload(pydantic_core.from_json(record.result or "null"), type_, name)
        if record.state == "failed" and record.error is not None:
            raise _rebuild(record.error, name)
        deadline, began = record.fire_at, record.started_at
    now = utcnow()
    if deadline is None and timeout is not None:
        deadline = now + timedelta(seconds=max(timeout, 0.0))
    async with ctx.signal_lock:
        with ctx.storing():
            signal = await ctx.identity.store.next_signal(ctx.identity.flow_id, name)
        if signal is not None:
            return await _consume(
                ctx, key, step_name, signal.payload, signal.seq, type_, name, began
            )
    if deadline is not None and deadline <= utcnow():
        error = SignalTimeoutError(
            f"no signal {name!r} arrived before {deadline.isoformat()}", signal=name
        )
        await ctx.save(
            _record(
                ctx, key, step_name, "failed",
                error=codec.error_from_exception(error), started_at=began,
            )
        )  # fmt: skip
        raise error
    if record is None:  # recorded even without a deadline: when the wait began
        await ctx.save(_record(ctx, key, step_name, "waiting", fire_at=deadline))
    raise ctx.stop.suspend(SuspendReason("signal", name, deadline))


async def _consume(
    ctx: FlowContext,
    key: str,
    step_name: str,
    payload: str,
    seq: int,
    type_: object,
    name: str,
    began: datetime | None,
) -> Any:
    try:
        result = codec.validate(pydantic_core.from_json(payload), type_)
    except Exception as exc:  # consumed all the same, or it would block every later signal
        error = _unusable(exc, type_, name)
        failed = _record(
            ctx, key, step_name, "failed",
            error=codec.error_from_exception(error), started_at=began,
        )  # fmt: skip
        await ctx.save(failed, consumes=seq)
        raise error from None
    done = _record(ctx, key, step_name, "completed", result=payload, started_at=began)
    await ctx.save(done, consumes=seq)
    return result


def _unusable(exc: Exception, type_: object, name: str) -> SignalPayloadError:
    """Why a payload cannot be handed to the flow: it does not decode (JSON nested deeper than
    the decoder allows, not JSON at all) or does not validate against `type_`."""
    if isinstance(exc, ValidationError):
        why = f"does not match {_type_name(type_)}: {exc}"
    else:
        why = f"cannot be decoded: {type(exc).__name__}: {exc}"
    message = f"signal {name!r} payload {why}"
    if len(message) > _MESSAGE_LIMIT:  # a large payload can fail validation in many places
        message = f"{message[:_MESSAGE_LIMIT]}... ({len(message) - _MESSAGE_LIMIT} more characters)"
    return SignalPayloadError(message, signal=name)


def _payload(value: object, type_: object, name: str) -> Any:
    try:
        return codec.validate(value, type_)
    except ValidationError as exc:
        raise SignalPayloadError(
            f"recorded signal {name!r} payload no longer matches {_type_name(type_)}: {exc}",
            signal=name,
        ) from None


def _rebuild(error: ErrorInfo, name: str) -> Exception:
    if error.type in (SignalTimeoutError.__name__, "SignalTimeout"):  # its name in 0.1
        return SignalTimeoutError(error.message, signal=name)
    return SignalPayloadError(error.message, signal=name)


def _record(
    ctx: FlowContext,
    key: str,
    step_name: str,
    state: StepState,
    *,
    result: str | None = None,
    error: ErrorInfo | None = None,
    fire_at: datetime | None = None,
    started_at: datetime | None = None,
) -> StepRecord:
    """The wait's record; `started_at` is when the wait began (kept across executions)."""
    now = utcnow()
    return StepRecord(
        key=key,
        name=step_name,
        state=state,
        kind="signal",
        result=result,
        error=error,
        started_at=started_at or now,
        completed_at=None if state == "waiting" else now,
        fire_at=fire_at,
        flow_attempt=ctx.identity.attempt,
    )


def _type_name(type_: object) -> str:
    return getattr(type_, "__qualname__", None) or repr(type_)
