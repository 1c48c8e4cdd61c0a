"""`ergon.Flow`, the `@ergon.flow` entry point, and resolving flows by name."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, overload

from pydantic import BaseModel, ConfigDict

from ergon.core.errors import FlowDefinitionError, FlowLoadError
from ergon.core.retry import RetryPolicy

if TYPE_CHECKING:
    from uuid import UUID

R = TypeVar("R")
F = TypeVar("F", bound="Flow")
EntryMethod = Callable[[Any], Coroutine[Any, Any, Any]]


@dataclass(frozen=True, slots=True)
class FlowOptions:
    """What `@ergon.flow(...)` says about the entry method."""

    retry: RetryPolicy = RetryPolicy.NONE


class Flow(BaseModel):
    """Base class of durable flows. Its pydantic fields are the flow's (immutable) input.

    Mark exactly one async method with `@ergon.flow`; mark the checkpointed operations it calls
    with `@ergon.step`. `class Order(ergon.Flow, name="orders.Order")` sets the name queues and
    the operator use; the default is `"module:QualName"`.
    """

    model_config = ConfigDict(frozen=True)

    __ergon_name__: ClassVar[str | None] = None

    def __init_subclass__(cls, *, name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.__ergon_name__ = name
        entries = [attr for attr, value in vars(cls).items() if _flow_options(value) is not None]
        if len(entries) > 1:
            raise FlowDefinitionError(
                f"{cls.__qualname__} marks {len(entries)} methods with @ergon.flow "
                f"({', '.join(entries)}); a Flow has exactly one entry point."
            )

    @classmethod
    def flow_name(cls) -> str:
        """The flow's identity in stores, queues and FlowRun resources."""
        own = cls.__dict__.get("__ergon_name__")
        return own if isinstance(own, str) else f"{cls.__module__}:{cls.__qualname__}"

    def invoke(self, child: Flow, *, flow_id: str | UUID | None = None) -> Awaitable[Any]:
        """Run `child` as a durable child flow and return its result.

        The child's id is derived from this flow's id and the call's position unless `flow_id`
        is given. A failed child raises `ergon.ChildFlowError`.
        """
        from ergon.core.children import invoke

        return invoke(child, flow_id=None if flow_id is None else str(flow_id))


def _flow_options(value: object) -> FlowOptions | None:
    options = getattr(value, "__ergon_flow__", None)
    return options if isinstance(options, FlowOptions) else None


def entry_point(cls: type[Flow]) -> tuple[EntryMethod, FlowOptions]:
    """The `@ergon.flow` method of a Flow class (possibly inherited)."""
    for klass in cls.__mro__:
        for value in vars(klass).values():
            options = _flow_options(value)
            if options is not None:
                return value, options
    raise FlowDefinitionError(
        f"{cls.__qualname__} has no @ergon.flow method. Mark its async entry method, "
        "for example:\n\n    @ergon.flow\n    async def run(self) -> str: ..."
    )


@overload
def flow(fn: Callable[[F], Coroutine[Any, Any, R]], /) -> Callable[[F], Coroutine[Any, Any, R]]: ...


@overload
def flow(
    *, retry: RetryPolicy = ...
) -> Callable[[Callable[[F], Coroutine[Any, Any, R]]], Callable[[F], Coroutine[Any, Any, R]]]: ...


def flow(fn: Any = None, /, *, retry: RetryPolicy = RetryPolicy.NONE) -> Any:
    """Mark a Flow's async entry method. `retry` is the flow-level policy workers apply."""
    if fn is not None and not callable(fn):
        raise FlowDefinitionError(
            "@ergon.flow takes keyword arguments only: @ergon.flow(retry=...)"
        )
    if not isinstance(retry, RetryPolicy):
        raise FlowDefinitionError(f"@ergon.flow(retry=...) needs a RetryPolicy, got {retry!r}")

    def mark(method: Callable[..., Any]) -> Callable[..., Any]:
        if not inspect.iscoroutinefunction(method):
            raise FlowDefinitionError(
                f"@ergon.flow method {method.__qualname__} must be async (async def)."
            )
        params = [p for p in inspect.signature(method).parameters.values() if p.name != "self"]
        if any(p.default is inspect.Parameter.empty for p in params):
            raise FlowDefinitionError(
                f"@ergon.flow method {method.__qualname__} takes no arguments besides self: "
                "a flow's input is the fields of its Flow class."
            )
        method.__ergon_flow__ = FlowOptions(retry=retry)  # type: ignore[attr-defined]
        return method

    return mark(fn) if fn is not None else mark


def load_flow(path: str) -> type[Flow]:
    """Import a Flow class from `"package.module:QualName"`."""
    module_name, sep, qualname = path.partition(":")
    if not sep or not module_name or not qualname:
        raise FlowLoadError(f"flow path {path!r} must look like 'package.module:FlowClass'")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise FlowLoadError(
            f"cannot import module {module_name!r} for flow {path!r}: {exc}"
        ) from exc
    for attr in qualname.split("."):
        try:
            target = getattr(target, attr)
        except AttributeError:
            raise FlowLoadError(f"module {module_name!r} has no attribute {qualname!r}") from None
    if not (isinstance(target, type) and issubclass(target, Flow)):
        raise FlowLoadError(f"{path!r} is not an ergon.Flow subclass")
    return target
