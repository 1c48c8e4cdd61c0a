"""Deterministic positions for work a flow body runs concurrently.

`asyncio.gather(self.a(), self.b())` is deterministic on its own: each step takes its position
when it is *called*. Concurrent branches that each call several steps in turn are not: which
branch reaches its second step first depends on timing. To make them deterministic, every task
the flow body spawns (gather, create_task, TaskGroup) takes a position in its parent's sequence
when it is created, and numbers its own operations below it ("4.0", "4.1", ...). Task creation
order is part of the flow's code, so the keys are the same on every replay.

This needs a task factory on the event loop. It only acts for tasks created inside a flow body
and chains to any factory already installed.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine, Generator
from types import CodeType
from typing import Any

from ergon.core.context import Scope, Sequence, current_scope, enter

_operation_codes: set[CodeType] = set()

TaskFactory = Callable[..., "asyncio.Task[Any]"]


def operation(
    fn: Callable[..., Coroutine[Any, Any, Any]],
) -> Callable[..., Coroutine[Any, Any, Any]]:
    """Mark a coroutine function as a durable operation that already carries its own key.

    Tasks wrapping such a coroutine (gather over step calls) do not take a position of their own.
    """
    _operation_codes.add(fn.__code__)
    return fn


class _FlowTaskFactory:
    ergon = True

    def __init__(self, previous: TaskFactory | None) -> None:
        self.previous = previous

    def __call__(
        self,
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any],
        *,
        context: contextvars.Context | None = None,
        **kwargs: Any,
    ) -> asyncio.Task[Any]:
        scope = current_scope()
        if scope is not None and (scope.step is not None or scope.internal):
            scope = None
        if scope is not None and getattr(coro, "cr_code", None) not in _operation_codes:
            key = scope.sequence.next_key()
            branch = Scope(scope.flow, Sequence(prefix=f"{key}."))
            context = context.copy() if context is not None else contextvars.copy_context()
            context.run(enter, branch)
        task: asyncio.Task[Any]
        if self.previous is not None:
            if context is not None:
                kwargs["context"] = context
            task = self.previous(loop, coro, **kwargs)
        else:
            task = asyncio.Task(coro, loop=loop, context=context, **kwargs)
        if scope is not None:
            scope.flow.work.track(task)
        return task


def install(loop: asyncio.AbstractEventLoop) -> None:
    """Install the flow-aware task factory on `loop` (idempotent)."""
    current = loop.get_task_factory()
    if getattr(current, "ergon", False):
        return
    loop.set_task_factory(_FlowTaskFactory(current))  # type: ignore[arg-type]
