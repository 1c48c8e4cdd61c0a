"""What defines a flow: its input model, its name and its `@ergon.flow` entry point.

`FlowModel` is the part of `ergon.Flow` the core's operations and the executor need. It lives
below them so they can take flows without importing `ergon.core.flow`, whose `Flow` adds
`invoke`, an alias of the child-flow operation built on them.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, overload

from pydantic import BaseModel, ConfigDict

from ergon.core.errors import FlowDefinitionError
from ergon.core.retry import RetryPolicy

R = TypeVar("R")
F = TypeVar("F", bound="FlowModel")
EntryMethod = Callable[[Any], Coroutine[Any, Any, Any]]


@dataclass(frozen=True, slots=True)
class FlowOptions:
    """What `@ergon.flow(...)` says about the entry method."""

    retry: RetryPolicy = RetryPolicy.NONE


class FlowModel(BaseModel):
    """A flow's definition: its pydantic fields are its (immutable) input, `flow_name()` its
    identity, and exactly one `@ergon.flow` method its entry point. Subclass `ergon.Flow`."""

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


def _flow_options(value: object) -> FlowOptions | None:
    options = getattr(value, "__ergon_flow__", None)
    return options if isinstance(options, FlowOptions) else None


def entry_point(cls: type[FlowModel]) -> tuple[EntryMethod, FlowOptions]:
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


def result_type(fn: Callable[..., Any]) -> object:
    """The return annotation of a flow's entry method or a step (`Any` when there is none or it
    cannot be resolved): what a recorded result is loaded back as."""
    try:
        return typing.get_type_hints(fn).get("return", Any)
    except Exception:
        return Any


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
