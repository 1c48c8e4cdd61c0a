"""`ergon.dag`: explicit dependency graphs of steps, run with bounded parallelism."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, TypeVar

from ergon.core.context import Scope, enter, flow_scope, leave
from ergon.core.errors import FlowContextError, FlowDefinitionError
from ergon.core.step import StepOptions, run_step, step_options

T = TypeVar("T")

_UNSET: Any = object()


class StepHandle(Generic[T]):
    """A node of a dag; pass it as an argument to make another node depend on it."""

    __slots__ = ("_error", "_value", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._value: Any = _UNSET
        self._error: BaseException | None = None

    def result(self) -> T:
        """The node's result once the dag has run; raises the node's error if it failed."""
        if self._error is not None:
            raise self._error
        if self._value is _UNSET:
            raise RuntimeError(f"dag node {self.name!r} has not run (use .result() after the dag)")
        value: T = self._value
        return value

    def done(self) -> bool:
        return self._value is not _UNSET or self._error is not None


@dataclass(slots=True)
class _Node:
    key: str
    options: StepOptions
    handle: StepHandle[Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    deps: list[StepHandle[Any]] = field(default_factory=list)


class Dag:
    """A graph of steps, built by `ergon.dag()`: collects steps with `add` inside
    `async with`, runs them when the block ends."""

    def __init__(self, *, limit: int | None = None) -> None:
        if limit is not None and limit < 1:
            raise ValueError(f"ergon.dag(limit=...) must be at least 1, got {limit}")
        self._scope_: Scope | None = None
        self._limit = limit
        self._nodes: list[_Node] = []
        self._handles: dict[int, _Node] = {}

    def add(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> StepHandle[T]:
        """Add the step `fn` (a bound `@ergon.step` method). Handles among the arguments are
        dependencies: the node runs after them and receives their results in their place.
        """
        options = step_options(fn)
        if options is None:
            raise FlowDefinitionError(
                f"dag nodes must be @ergon.step methods, got {getattr(fn, '__qualname__', fn)!r}"
            )
        bound = getattr(fn, "__self__", None)
        call_args = (bound, *args) if bound is not None else args
        deps = [a for a in (*args, *kwargs.values()) if isinstance(a, StepHandle)]
        for dep in deps:
            if id(dep) not in self._handles:
                raise ValueError(f"dag node {options.name!r} depends on a handle of another dag")
        handle: StepHandle[T] = StepHandle(options.name)
        node = _Node(self._scope.sequence.next_key(), options, handle, call_args, kwargs, deps)
        self._nodes.append(node)
        self._handles[id(handle)] = node
        return handle

    async def run(self) -> None:
        gate = asyncio.Semaphore(self._limit) if self._limit else None
        done = {id(node.handle): asyncio.Event() for node in self._nodes}
        failure: list[BaseException] = []

        async def run_node(node: _Node) -> None:
            try:
                for dep in node.deps:
                    await done[id(dep)].wait()
                if failure or any(dep._error is not None for dep in node.deps):
                    node.handle._error = RuntimeError(
                        f"dag node {node.options.name!r} did not run: a node it depends on failed"
                    )
                    return
                if gate is not None:
                    await gate.acquire()
                try:
                    if failure:
                        node.handle._error = RuntimeError(
                            f"dag node {node.options.name!r} did not run: another node failed"
                        )
                        return
                    args = tuple(_resolve(a) for a in node.args)
                    kwargs = {k: _resolve(v) for k, v in node.kwargs.items()}
                    node.handle._value = await run_step(
                        self._scope, node.key, node.options, args, kwargs
                    )
                except BaseException as exc:
                    node.handle._error = exc
                    failure.append(exc)
                    raise
                finally:
                    if gate is not None:
                        gate.release()
            finally:
                done[id(node.handle)].set()

        token = enter(Scope(self._scope.flow, self._scope.sequence, None, internal=True))
        try:
            tasks = [asyncio.ensure_future(run_node(node)) for node in self._nodes]
        finally:
            leave(token)
        await asyncio.gather(*tasks, return_exceptions=True)
        if failure:
            raise failure[0]

    @property
    def _scope(self) -> Scope:
        if self._scope_ is None:
            raise FlowContextError("use a dag inside its block: async with ergon.dag() as g: ...")
        return self._scope_

    async def __aenter__(self) -> Dag:
        if self._scope_ is not None:
            raise FlowContextError("a dag runs once: use a new ergon.dag() for another graph")
        self._scope_ = flow_scope("ergon.dag()")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            await self.run()


def _resolve(value: Any) -> Any:
    return value.result() if isinstance(value, StepHandle) else value


def dag(*, limit: int | None = None) -> Dag:
    """Build a graph of steps; independent nodes run in parallel, at most `limit` at a time.

    async with ergon.dag(limit=4) as g:
        user = g.add(self.fetch_user)
        orders = g.add(self.fetch_orders)
        summary = g.add(self.merge, user, orders)
    return summary.result()
    """
    return Dag(limit=limit)
