"""CRD validation rules (``x-kubernetes-validations``) evaluated by cel-python (``celpy``).

Rules are CEL expressions over ``self`` (and ``oldSelf`` for transition rules such as the
immutability rule ``self == oldSelf``). cel-python parses and evaluates standard CEL (literals,
field access, ``has()``, ``size()``, arithmetic, comparisons, ``in``, logic, the ternary,
``startsWith``/``endsWith``/``contains``/``matches``, the macros ``all``/``exists``/
``exists_one``/``map``/``filter``); this module adds, as cel-python custom functions, what
Kubernetes has on top of it:

- CEL's heterogeneous equality, as cel-go has it: ``1 == 1.0`` is true, ``true == 1`` is false,
  values of different types are unequal rather than an error (cel-python refuses mixed numbers
  and, its booleans being ints, finds ``true == 1``);
- the Kubernetes strings library (``charAt``, ``indexOf``, ``lastIndexOf``, ``lowerAscii``,
  ``upperAscii``, ``replace``, ``split``, ``substring``, ``trim``, ``join``) and the lists
  library's ``isSorted``, ``sum``, ``indexOf`` and ``lastIndexOf`` (``min`` is cel-python's own).

Each rule's source is parsed once (:func:`program` is cached). Functions that are neither CEL's
nor added here (the quantity, URL, IP, regex and format libraries, lists' ``max``, ...) raise
:class:`CelUnsupported` at compile time, as kube-apiserver rejects undeclared references when the
CRD is written; the server skips such rules (README: known differences).
"""

from __future__ import annotations

import functools
import itertools
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import celpy
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import (
    CELEvalError,
    CELFunction,
    CELUnsupportedError,
    Result,
    base_functions,
)

Env = dict[str, Any]


class CelUnsupported(Exception):
    """The rule does not parse, or calls a function that neither CEL nor this module defines."""


class CelError(Exception):
    """Evaluation failed (missing key, wrong types): the rule counts as violated."""


# Kubernetes' additions, as cel-python custom functions


def _same(left: Any, right: Any) -> bool:
    booleans = isinstance(left, celtypes.BoolType), isinstance(right, celtypes.BoolType)
    if any(booleans):
        return all(booleans) and bool(left) == bool(right)
    numbers = (celtypes.IntType, celtypes.UintType, celtypes.DoubleType)
    if isinstance(left, numbers) and isinstance(right, numbers):
        return (
            float(left) == float(right)
            if isinstance(left, float) or isinstance(right, float)
            else int(left) == int(right)
        )
    if isinstance(left, celtypes.ListType) and isinstance(right, celtypes.ListType):
        return len(left) == len(right) and all(map(_same, left, right))
    if isinstance(left, celtypes.MapType) and isinstance(right, celtypes.MapType):
        return left.keys() == right.keys() and all(_same(v, right[k]) for k, v in left.items())
    if type(left) is not type(right):
        return False
    return bool(left == right)


def _equal(left: Result, right: Result) -> Result:
    for side in (left, right):
        if isinstance(side, CELEvalError):
            return side
    return celtypes.BoolType(_same(left, right))


def _not_equal(left: Result, right: Result) -> Result:
    equal = _equal(left, right)
    return equal if isinstance(equal, CELEvalError) else celtypes.BoolType(not equal)


def _text(value: Any) -> str:
    if not isinstance(value, celtypes.StringType):
        raise TypeError(f"{type(value).__name__} is not a string")
    return str(value)


def _ascii(text: Any, convert: Callable[[str], str]) -> Result:
    return celtypes.StringType("".join(convert(c) if c.isascii() else c for c in _text(text)))


def _char_at(text: Any, index: Any) -> Result:
    value = _text(text)
    if not 0 <= int(index) <= len(value):
        raise ValueError(f"index out of range: {index}")
    return celtypes.StringType(value[int(index) : int(index) + 1])


def _index_of(target: Any, item: Any, start: Any = 0) -> Result:
    if isinstance(target, celtypes.ListType):
        return celtypes.IntType(next((i for i, v in enumerate(target) if _same(v, item)), -1))
    value = _text(target)
    if not 0 <= int(start) <= len(value):
        raise ValueError(f"index out of range: {start}")
    return celtypes.IntType(value.find(_text(item), int(start)))


def _last_index_of(target: Any, item: Any, end: Any = None) -> Result:
    if isinstance(target, celtypes.ListType):
        found = [i for i, v in enumerate(target) if _same(v, item)]
        return celtypes.IntType(found[-1] if found else -1)
    value, sub = _text(target), _text(item)
    stop = len(value) if end is None else int(end)
    if not 0 <= stop <= len(value):
        raise ValueError(f"index out of range: {end}")
    return celtypes.IntType(value.rfind(sub, 0, stop + len(sub)))


def _replace(text: Any, old: Any, new: Any, count: Any = -1) -> Result:
    return celtypes.StringType(_text(text).replace(_text(old), _text(new), int(count)))


def _split(text: Any, separator: Any, limit: Any = -1) -> Result:
    value, sep, limit = _text(text), _text(separator), int(limit)
    if limit == 0:
        return celtypes.ListType()
    parts = list(value) if sep == "" else value.split(sep, -1 if limit < 0 else limit - 1)
    if sep == "" and 0 < limit < len(parts):
        parts = [*parts[: limit - 1], "".join(parts[limit - 1 :])]
    return celtypes.ListType(celtypes.StringType(p) for p in parts)


def _substring(text: Any, start: Any, end: Any = None) -> Result:
    value = _text(text)
    stop = len(value) if end is None else int(end)
    if not 0 <= int(start) <= stop <= len(value):
        raise ValueError(f"index out of range: {start}, {stop}")
    return celtypes.StringType(value[int(start) : stop])


def _join(items: Any, separator: Any = None) -> Result:
    if not isinstance(items, celtypes.ListType):
        raise TypeError("join needs a list of strings")
    sep = "" if separator is None else _text(separator)
    return celtypes.StringType(sep.join(_text(item) for item in items))


def _is_sorted(items: Any) -> Result:
    if not isinstance(items, celtypes.ListType):
        raise TypeError("isSorted needs a list")
    values: list[Any] = list(items)
    return celtypes.BoolType(all(a <= b for a, b in itertools.pairwise(values)))


def _sum(items: Any) -> Result:
    if not isinstance(items, celtypes.ListType):
        raise TypeError("sum needs a list")
    total: Result = items[0] if items else celtypes.IntType(0)
    for item in items[1:]:
        total = operator.add(total, item)
    return total


FUNCTIONS: dict[str, CELFunction] = {
    "_==_": _equal,
    "_!=_": _not_equal,
    "charAt": _char_at,
    "indexOf": _index_of,
    "lastIndexOf": _last_index_of,
    "lowerAscii": lambda text: _ascii(text, str.lower),
    "upperAscii": lambda text: _ascii(text, str.upper),
    "replace": _replace,
    "split": _split,
    "substring": _substring,
    "trim": lambda text: celtypes.StringType(_text(text).strip()),
    "join": _join,
    "isSorted": _is_sorted,
    "sum": _sum,
}
# handled by cel-python's evaluator itself rather than through its function table
_MACROS = frozenset({"has", "dyn", "all", "exists", "exists_one", "map", "filter", "min"})
_KNOWN = frozenset(base_functions) | frozenset(FUNCTIONS) | _MACROS


# compiling and evaluating


@functools.cache
def _environment() -> celpy.Environment:
    return celpy.Environment()


def _called(ast: Any) -> Iterable[str]:
    """The names of the functions and methods a parsed expression calls."""
    for tree in ast.iter_subtrees():
        if tree.data == "ident_arg":
            yield str(tree.children[0])
        elif tree.data == "member_dot_arg":
            yield str(tree.children[1])


@functools.lru_cache(maxsize=1024)
def program(source: str) -> celpy.Runner:
    """Parse ``source`` once and bind the functions above; :class:`CelUnsupported` if it can't."""
    environment = _environment()
    try:
        ast = environment.compile(source)
    except CELParseError as exc:
        raise CelUnsupported(f"cannot parse {source!r}: {exc}") from exc
    for name in _called(ast):
        if name not in _KNOWN:
            raise CelUnsupported(f"undeclared reference to '{name}'")
    return environment.program(ast, functions=FUNCTIONS)


def _message(error: CELEvalError) -> str:
    """cel-python's error as kube-apiserver words it (``no such key: x``)."""
    text = str(error.args[0]) if error.args else "evaluation error"
    cause = error.args[1] if len(error.args) > 1 else None
    missing = re.fullmatch(r"no such member in mapping: '(.*)'", text)
    if missing:
        return f"no such key: {missing.group(1)}"
    if cause is IndexError:
        return "index out of bounds"
    if "no matching overload" in text or text == "no such overload":
        return "no such overload"
    return text.split(" (in activation")[0]


def _plain(value: Any) -> Any:
    return bool(value) if isinstance(value, celtypes.BoolType) else value


@dataclass(frozen=True)
class Rule:
    """A compiled ``x-kubernetes-validations`` entry."""

    source: str
    program: celpy.Runner
    message: str
    field_path: str
    reason: str
    uses_old_self: bool

    def evaluate(self, env: Env) -> Any:
        """The rule's value (a Python bool for a boolean rule) with ``env``'s JSON values."""
        try:
            activation = {name: json_to_cel(value) for name, value in env.items()}
            result = self.program.evaluate(activation)
        except CELEvalError as exc:
            raise CelError(_message(exc)) from exc
        except (CELUnsupportedError, TypeError, ValueError, LookupError, ArithmeticError) as exc:
            raise CelError(str(exc)) from exc
        if isinstance(result, CELEvalError):
            raise CelError(_message(result))
        return _plain(result)


def compile_rule(rule: dict[str, Any]) -> Rule:
    source = str(rule.get("rule", ""))
    message = str(rule.get("message") or f"failed rule: {source}")
    return Rule(
        source=source,
        program=program(source),
        message=message,
        field_path=str(rule.get("fieldPath") or ""),
        reason=str(rule.get("reason") or ""),
        uses_old_self=re.search(r"\boldSelf\b", source) is not None,
    )
