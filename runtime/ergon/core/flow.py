"""`ergon.Flow`, the class flows subclass, and resolving flow classes by name."""

from __future__ import annotations

import importlib
from collections.abc import Coroutine
from typing import Any
from uuid import UUID

from ergon.core.children import invoke
from ergon.core.definition import FlowModel
from ergon.core.errors import FlowLoadError


class Flow(FlowModel):
    """Base class of durable flows. Its pydantic fields are the flow's (immutable) input.

    Mark exactly one async method with `@ergon.flow`; mark the checkpointed operations it calls
    with `@ergon.step`. `class Order(ergon.Flow, name="orders.Order")` sets the name queues and
    the operator use; the default is `"module:QualName"`.
    """

    def invoke(
        self, child: FlowModel, *, flow_id: str | UUID | None = None
    ) -> Coroutine[Any, Any, Any]:
        """`ergon.invoke(child, flow_id=...)`: run `child` as a durable child flow."""
        return invoke(child, flow_id=flow_id)


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
