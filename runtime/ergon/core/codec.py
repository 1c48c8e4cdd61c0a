"""JSON in and out, through pydantic only (never pickle).

Values are dumped with `pydantic_core.to_json`, which knows models, dataclasses, datetimes,
UUIDs, enums, sets and the JSON primitives. They are loaded back against the type the code
declares (a step's return annotation, a signal's type), so a replayed value has the same type as
a live one. Live runs also return the loaded value, so code sees on its first run exactly what
it will see on replay.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
from datetime import datetime
from typing import Any, cast

import pydantic_core
from pydantic import TypeAdapter

from ergon.core.errors import FlowError, StepError
from ergon.core.outcomes import SuspendReason
from ergon.core.retry import is_retryable

_UNTYPED: frozenset[object] = frozenset({Any, object})
_adapters: dict[object, TypeAdapter[Any]] = {}


def _adapter(type_: object) -> TypeAdapter[Any]:
    try:
        return _adapters[type_]
    except KeyError:
        adapter: TypeAdapter[Any] = TypeAdapter(cast(Any, type_))
        _adapters[type_] = adapter
        return adapter
    except TypeError:  # unhashable annotation
        return TypeAdapter(cast(Any, type_))


def dump(value: object, *, what: str) -> str:
    """Encode `value` as JSON text; `what` names it in the error ("step 'charge' result")."""
    try:
        return pydantic_core.to_json(value).decode()
    except pydantic_core.PydanticSerializationError as exc:
        raise TypeError(
            f"{what} of type {_type_name(value)} cannot be serialized to JSON: {exc}. "
            "Use JSON-friendly values: pydantic models, dataclasses, primitives, lists, dicts, "
            "datetimes, UUIDs."
        ) from None


def load(text: str, type_: object = Any) -> Any:
    """Decode JSON text, validating it against `type_` (Any: plain JSON values)."""
    if _hashable(type_) and type_ in _UNTYPED:
        return pydantic_core.from_json(text)
    return _adapter(type_).validate_json(text)


# Values whose JSON round trip gives back an equal value of the same type (floats only when
# finite: JSON has no inf/nan). `reload` hands these back without parsing the text again.
_SELF_LOADING: frozenset[type] = frozenset({int, str, bool, type(None)})


def reload(value: object, text: str, type_: object = Any) -> Any:
    """`load(text, type_)` for the text `dump` just made of `value`: what a replay would return.

    A step's live result goes through this on every step; for plain values of the declared type
    the answer is known without decoding (that is most steps), else the text is decoded.
    """
    kind = type(value)
    if type_ is not kind and type_ is not Any and type_ is not object:
        return load(text, type_)
    if kind in _SELF_LOADING or (kind is float and math.isfinite(cast(float, value))):
        return value
    return load(text, type_)


def validate(value: object, type_: object) -> Any:
    """Validate an already-decoded value against `type_` (signal payloads)."""
    if _hashable(type_) and type_ in _UNTYPED:
        return value
    return _adapter(type_).validate_python(value)


def args_hash(args: tuple[object, ...], kwargs: dict[str, object], *, what: str) -> str:
    """A short digest of a step's arguments; raises TypeError if they cannot be serialized."""
    value = [list(args), kwargs] if kwargs else list(args)
    try:
        data = pydantic_core.to_json(value)
    except pydantic_core.PydanticSerializationError:
        dump(value, what=what)  # raises the TypeError that names the culprit
        raise
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _type_name(value: object) -> str:
    cls = type(value)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


# --- errors --------------------------------------------------------------------------------


def error_from_exception(exc: BaseException) -> FlowError:
    """What gets recorded for an exception: its class, message, retryability and JSON args."""
    cls = type(exc)
    args: tuple[object, ...] = ()
    try:
        json.dumps(exc.args)
        args = tuple(exc.args)
    except (TypeError, ValueError):
        args = ()
    error = getattr(exc, "error", None)
    if isinstance(error, FlowError) and cls.__name__ == "ChildFlowError":
        return FlowError(cls.__name__, str(exc), error.retryable, cls.__module__, ())
    return FlowError(cls.__name__, str(exc), is_retryable(exc), cls.__module__, args)


def rebuild_exception(error: FlowError) -> BaseException:
    """The original exception if its class can be imported and rebuilt, else `StepError`."""
    if error.module:
        try:
            cls = getattr(importlib.import_module(error.module), error.type)
            if isinstance(cls, type) and issubclass(cls, Exception):
                exc = cls(*error.args)
                if str(exc) == error.message:
                    return exc
        except Exception:
            pass
    return StepError(error.type, error.message, error.retryable)


def error_to_json(error: FlowError | None) -> str | None:
    if error is None:
        return None
    data: dict[str, object] = {
        "type": error.type,
        "message": error.message,
        "retryable": error.retryable,
    }
    if error.module:
        data["module"] = error.module
    if error.args:
        data["args"] = list(error.args)
    return json.dumps(data)


def error_from_json(text: str | None) -> FlowError | None:
    if not text:
        return None
    data = json.loads(text)
    return FlowError(
        type=str(data["type"]),
        message=str(data["message"]),
        retryable=bool(data.get("retryable", True)),
        module=data.get("module"),
        args=tuple(data.get("args", ())),
    )


def reason_to_json(reason: SuspendReason | None) -> str | None:
    if reason is None:
        return None
    data: dict[str, object] = {"kind": reason.kind}
    if reason.name is not None:
        data["name"] = reason.name
    if reason.fire_at is not None:
        data["fire_at"] = reason.fire_at.isoformat()
    return json.dumps(data)


def reason_from_json(text: str | None) -> SuspendReason | None:
    if not text:
        return None
    data = json.loads(text)
    fire_at = data.get("fire_at")
    return SuspendReason(
        kind=data["kind"],
        name=data.get("name"),
        fire_at=datetime.fromisoformat(fire_at) if fire_at else None,
    )
