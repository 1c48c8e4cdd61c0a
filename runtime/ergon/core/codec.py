"""JSON in and out, through pydantic only (never pickle).

Values are dumped with `pydantic_core.to_json`, which knows models, dataclasses, datetimes,
UUIDs, enums, sets and the JSON primitives. They are loaded back against the type the code
declares (a step's return annotation, a signal's type), so a replayed value has the same type as
a live one. Live runs also return the loaded value, so code sees on its first run exactly what
it will see on replay.

Values must be standard JSON (RFC 8259), which Postgres `jsonb`, Kubernetes status and other
languages can read: NaN and ±Infinity are refused where they enter (a step's result, a signal's
payload, a flow's input or result) instead of being stored as non-standard `NaN` tokens or
silently turned into `null` (what pydantic does for model fields). Text recorded with `NaN`
before this rule still loads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import math
from typing import Any, cast

import pydantic_core
from pydantic import BaseModel, TypeAdapter

from ergon.core.errors import ErrorInfo, FlowInputError, StepError
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
    """Encode `value` as JSON text; `what` names it in the error ("step 'charge' result").

    Raises TypeError when it cannot be serialized, or holds NaN or ±Infinity.
    """
    try:
        text = pydantic_core.to_json(value).decode()
    except pydantic_core.PydanticSerializationError as exc:
        raise TypeError(
            f"{what} of type {_type_name(value)} cannot be serialized to JSON: {exc}. "
            "Use JSON-friendly values: pydantic models, dataclasses, primitives, lists, dicts, "
            "datetimes, UUIDs."
        ) from None
    if _may_hide_non_finite(text):
        found = _non_finite(value, text)
        if found is not None:
            raise TypeError(f"{what} {found}. {_NON_FINITE_HINT}")
    return text


def dump_input(flow: BaseModel) -> str:
    """A flow's input as JSON text; `ergon.FlowInputError` if it holds NaN or ±Infinity (which
    pydantic would silently write as null)."""
    try:
        text = flow.model_dump_json()
    except pydantic_core.PydanticSerializationError as exc:
        raise FlowInputError(
            f"the input of flow {_type_name(flow)} cannot be serialized to JSON: {exc}"
        ) from None
    if _may_hide_non_finite(text):
        found = _non_finite(flow, text)
        if found is not None:
            raise FlowInputError(
                f"the input of flow {_type_name(flow)} {found}. {_NON_FINITE_HINT}"
            )
    return text


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


# --- non-finite floats ---------------------------------------------------------------------

_NON_FINITE_HINT = (
    "NaN and Infinity are not JSON (RFC 8259) and Ergon stores standard JSON: use None, a "
    "string or a finite number"
)
_SCALARS: frozenset[type] = frozenset({str, int, bool, type(None)})


def _may_hide_non_finite(text: str) -> bool:
    """Cheap screen of dumped text: a non-finite float shows as a NaN/Infinity token, or as null
    inside a pydantic model. Most values pass with three substring scans and no walk."""
    return "null" in text or "NaN" in text or "Infinity" in text


def _non_finite(value: object, text: str) -> str | None:
    """Where `value` holds a non-finite float ("contains NaN at ['a'][0]"), or None."""
    if _holds_non_finite(value):
        number, path = _locate_non_finite(value, ())
        where = "".join(f"[{key!r}]" for key in path)
        return f"contains {_spelled(number)}" + (f" at {where}" if where else "")
    if "NaN" in text or "Infinity" in text:  # e.g. a custom serializer produced it
        constants: list[str] = []
        json.loads(text, parse_constant=constants.append)
        if constants:
            return f"contains {constants[0]}"
    return None


def _holds_non_finite(value: object) -> bool:
    """Whether a NaN/±Infinity is inside `value` (iterative: values nest deeper than the
    recursion limit; no bookkeeping, as this walks every value whose JSON holds a null)."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind in _SCALARS:
            continue
        if kind is dict:
            stack.extend(cast(dict[object, object], item).values())
        elif kind is list or kind is tuple:
            stack.extend(cast(list[object], item))
        elif isinstance(item, float):
            if not math.isfinite(item):
                return True
        else:
            stack.extend(_members(item).values())
    return False


def _locate_non_finite(value: object, path: tuple[object, ...]) -> tuple[float, tuple[object, ...]]:
    """The first NaN/±Infinity inside `value` and the keys leading to it (it is known there)."""
    if isinstance(value, float) and not math.isfinite(value):
        return value, path
    for key, member in _members(value).items():
        if isinstance(member, float) and not math.isfinite(member):
            return member, (*path, key)
        if type(member) not in _SCALARS and _holds_non_finite(member):
            return _locate_non_finite(member, (*path, key))
    raise AssertionError("no non-finite float found")  # pragma: no cover


def _members(item: object) -> dict[Any, Any]:
    """What `item` holds, by key (index for sequences); nothing for other objects."""
    if isinstance(item, dict):
        return item
    if isinstance(item, (list, tuple, set, frozenset)):
        return dict(enumerate(item))
    if isinstance(item, BaseModel):
        members = dict(item.__dict__)
        members.update(item.__pydantic_extra__ or {})
        return members
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return {field.name: getattr(item, field.name) for field in dataclasses.fields(item)}
    return {}


def _spelled(number: float) -> str:
    return "NaN" if math.isnan(number) else ("Infinity" if number > 0 else "-Infinity")


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


def error_from_exception(exc: BaseException) -> ErrorInfo:
    """What gets recorded for an exception: its class, message, retryability and JSON args."""
    cls = type(exc)
    args: tuple[object, ...] = ()
    try:
        json.dumps(exc.args, allow_nan=False)
        args = tuple(exc.args)
    except (TypeError, ValueError):
        args = ()
    return ErrorInfo(cls.__name__, str(exc), is_retryable(exc), cls.__module__, args)


def rebuild_exception(error: ErrorInfo) -> BaseException:
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
