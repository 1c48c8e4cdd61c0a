"""`@ergon.step`: checkpointed operations, their retries, timeouts and replay."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ParamSpec, Protocol, TypeVar, overload

from ergon.core import codec, replay
from ergon.core.branches import operation
from ergon.core.context import FlowContext, RunningStep, Scope, current_scope, enter, leave
from ergon.core.definition import FlowModel, result_type
from ergon.core.errors import ErrorInfo, FlowContextError, FlowDefinitionError
from ergon.core.records import StepRecord, StepState, utcnow
from ergon.core.retry import RetryPolicy, is_retryable, seconds

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(slots=True)
class StepOptions:
    """A step's declaration: its function, name and policies."""

    fn: Callable[..., Any]
    name: str
    retry: RetryPolicy
    timeout: float | None
    cache_errors: bool
    is_async: bool
    _return_type: object = field(default=None)
    _resolved: bool = False
    # How an unserializable argument or result is named in its error; made once, not per call.
    argument_label: str = field(init=False)
    result_label: str = field(init=False)

    def __post_init__(self) -> None:
        self.argument_label = f"argument of step {self.name!r}"
        self.result_label = f"step {self.name!r} returned a value"

    def return_type(self) -> object:
        """The declared return type, resolved on first use (forward references allowed)."""
        if not self._resolved:
            self._return_type = result_type(self.fn)
            self._resolved = True
        return self._return_type


class StepDecorator(Protocol):
    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, R]], /
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...

    @overload
    def __call__(self, fn: Callable[P, R], /) -> Callable[P, Coroutine[Any, Any, R]]: ...


@overload
def step(fn: Callable[P, Coroutine[Any, Any, R]], /) -> Callable[P, Coroutine[Any, Any, R]]: ...


@overload
def step(fn: Callable[P, R], /) -> Callable[P, Coroutine[Any, Any, R]]: ...


@overload
def step(
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | timedelta | None = None,
    cache_errors: bool = True,
) -> StepDecorator: ...


def step(
    fn: Any = None,
    /,
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | timedelta | None = None,
    cache_errors: bool = True,
) -> Any:
    """Make a method a checkpointed step.

    Its result (and, with `cache_errors`, its final error) is recorded before the flow goes on;
    later executions return the record instead of running it again. `retry` defaults to
    `RetryPolicy.NONE`; `timeout` bounds each attempt. Sync functions run in a worker thread.
    """
    if fn is not None and not callable(fn):
        raise FlowDefinitionError("@ergon.step takes keyword arguments only: @ergon.step(name=...)")
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise FlowDefinitionError(f"@ergon.step(retry=...) needs a RetryPolicy, got {retry!r}")
    limit = seconds(timeout) if timeout is not None else None
    if limit is not None and limit <= 0:
        raise FlowDefinitionError(f"@ergon.step(timeout=...) must be positive, got {timeout!r}")

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isasyncgenfunction(func) or inspect.isgeneratorfunction(func):
            raise FlowDefinitionError(f"@ergon.step cannot decorate generator {func.__qualname__}")
        options = StepOptions(
            fn=func,
            name=name or func.__name__,
            retry=retry or RetryPolicy.NONE,
            timeout=limit,
            cache_errors=cache_errors,
            is_async=inspect.iscoroutinefunction(func),
        )

        @functools.wraps(func)
        def call(*args: Any, **kwargs: Any) -> Coroutine[Any, Any, Any]:
            scope = current_scope()
            if scope is None:
                raise FlowContextError(
                    f"step {func.__qualname__} was called outside a running flow. Steps run "
                    "inside the @ergon.flow method of a Flow executed by ergon.Executor, "
                    "ergon.run or a Worker."
                )
            if scope.step is not None:
                return _run_plain(options, args, kwargs)
            return run_step(scope, scope.sequence.next_key(), options, args, kwargs)

        call.__ergon_step__ = options  # type: ignore[attr-defined]
        return call

    return decorate(fn) if fn is not None else decorate


def step_options(fn: object) -> StepOptions | None:
    """The options of a step function or bound step method, else None."""
    target = getattr(fn, "__func__", fn)
    options = getattr(target, "__ergon_step__", None)
    return options if isinstance(options, StepOptions) else None


async def _run_plain(options: StepOptions, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A step called from inside another step runs as a plain call, not as a checkpoint."""
    if options.is_async:
        return await options.fn(*args, **kwargs)
    return options.fn(*args, **kwargs)


@operation
async def run_step(
    scope: Scope,
    key: str,
    options: StepOptions,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Replay the step recorded at `key`, or run it (with retries) and checkpoint its outcome."""
    ctx = scope.flow
    ctx.stop.check()
    digest = codec.args_hash(_call_args(args), kwargs, what=options.argument_label)
    attempt, resume_at, first_started = 1, None, None
    record = ctx.history.lookup(key)  # looked up here: the live path of a step is hot
    if record is not None:
        replay.check_operation(ctx, record, "step", options.name)
        replay.check_arguments(ctx, record, digest)
        if record.state == "completed":
            return codec.load(record.result or "null", options.return_type())
        if record.state == "failed" and record.error is not None:
            if not (record.error.retryable and record.flow_attempt < ctx.identity.attempt):
                raise codec.rebuild_exception(record.error)
        elif record.state == "retrying":
            attempt, resume_at = record.attempts + 1, record.fire_at
            first_started = record.started_at
    work = ctx.work
    work.begin()
    try:
        return await _run_live(
            ctx, scope, key, options, args, kwargs, attempt, resume_at, digest, first_started
        )
    finally:
        work.end()


async def _run_live(
    ctx: FlowContext,
    scope: Scope,
    key: str,
    options: StepOptions,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    attempt: int,
    resume_at: datetime | None,
    digest: str,
    started: datetime | None,
) -> Any:
    """Run attempts until one succeeds or the policy gives up; checkpoint what happened.

    Every record carries the first attempt's start, so its duration includes the backoffs.
    """
    while True:
        if resume_at is not None:
            await _sleep_until(resume_at)
            ctx.stop.check()  # a worker stalled through the backoff must not start the next attempt
        if started is None:
            started = utcnow()
        running = RunningStep(ctx.identity.flow_id, key, options.name, attempt)
        token = enter(Scope(ctx, scope.sequence, running))
        try:
            try:
                if options.is_async and options.timeout is None:
                    value = await options.fn(*args, **kwargs)  # most steps: no extra coroutine
                else:
                    value = await _bounded(options, attempt, args, kwargs)
            finally:
                leave(token)
        except Exception as exc:
            error = codec.error_from_exception(exc)
            if is_retryable(exc) and options.retry.allows_another(attempt):
                resume_at = utcnow() + timedelta(seconds=options.retry.delay_after(attempt))
                await ctx.save(
                    _record(ctx, key, options, digest, attempt, started, "retrying",
                            error=error, fire_at=resume_at)
                )  # fmt: skip
                attempt += 1
                continue
            if options.cache_errors:
                await ctx.save(
                    _record(ctx, key, options, digest, attempt, started, "failed",
                            error=error, completed_at=utcnow())
                )  # fmt: skip
            raise
        text = codec.dump(value, what=options.result_label)
        await ctx.save(
            _record(ctx, key, options, digest, attempt, started, "completed",
                    result=text, completed_at=utcnow())
        )  # fmt: skip
        return codec.reload(value, text, options.return_type())


def _record(
    ctx: FlowContext,
    key: str,
    options: StepOptions,
    digest: str,
    attempt: int,
    started_at: datetime,
    state: StepState,
    *,
    result: str | None = None,
    error: ErrorInfo | None = None,
    completed_at: datetime | None = None,
    fire_at: datetime | None = None,
) -> StepRecord:
    """The checkpoint of attempt `attempt` of the step at `key`."""
    return StepRecord(
        key, options.name, state, "step", attempt, result, error, started_at, completed_at,
        fire_at, ctx.identity.attempt, digest,
    )  # fmt: skip


async def _bounded(
    options: StepOptions, attempt: int, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """One attempt of a sync step (in a worker thread) or of a step with a timeout."""
    if options.is_async:
        body = options.fn(*args, **kwargs)
    else:
        body = asyncio.to_thread(options.fn, *args, **kwargs)
    if options.timeout is None:
        return await body
    try:
        async with asyncio.timeout(options.timeout):
            return await body
    except TimeoutError:
        raise TimeoutError(
            f"step {options.name!r} timed out after {options.timeout:g} s (attempt {attempt})"
        ) from None


def _call_args(args: tuple[Any, ...]) -> tuple[Any, ...]:
    return args[1:] if args and isinstance(args[0], FlowModel) else args


async def _sleep_until(when: datetime) -> None:
    delay = (when - utcnow()).total_seconds()
    if delay > 0:
        await asyncio.sleep(delay)
