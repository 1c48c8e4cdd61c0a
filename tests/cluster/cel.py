"""CEL for the test cluster, evaluated by cel-python (``celpy``): CRD validation rules
(``x-kubernetes-validations``, see ``validation.py``) and ValidatingAdmissionPolicy expressions
(``admission_policy.py``).

Rules are CEL expressions over ``self`` (and ``oldSelf`` for transition rules such as the
immutability rule ``self == oldSelf``); policy expressions over ``object``, ``oldObject``,
``request``, ``namespaceObject`` and ``variables``. cel-python parses and evaluates standard CEL
(literals, field access, ``has()``, ``size()``, arithmetic, comparisons, ``in``, logic, the
ternary, ``startsWith``/``endsWith``/``contains``/``matches``, the macros ``all``/``exists``/
``exists_one``/``map``/``filter``); this module adds, as cel-python custom functions, what
Kubernetes has on top of it:

- CEL's heterogeneous equality, as cel-go has it: ``1 == 1.0`` is true, ``true == 1`` is false,
  values of different types are unequal rather than an error (cel-python refuses mixed numbers
  and, its booleans being ints, finds ``true == 1``);
- the Kubernetes strings library (``charAt``, ``indexOf``, ``lastIndexOf``, ``lowerAscii``,
  ``upperAscii``, ``replace``, ``split``, ``substring``, ``trim``, ``join``) and the lists
  library's ``isSorted``, ``sum``, ``indexOf`` and ``lastIndexOf`` (``min`` is cel-python's own);
- ``string()`` of doubles and booleans as cel-go writes them (``1e+06``, ``true``);
- the Kubernetes quantity library: ``quantity('8Gi')`` and ``isQuantity(s)``, and on a quantity
  ``isGreaterThan``, ``isLessThan``, ``compareTo``, ``add``, ``sub``, ``sign``, ``isInteger``,
  ``asInteger``, ``asApproximateFloat``; quantities compare with ``==`` by value
  (``quantity('1Gi') == quantity('1024Mi')``), exactly (fractions, not floats).

Each source is parsed once (:func:`program` is cached). A function that is neither CEL's nor
added here raises :class:`CelUnsupported` at compile time, worded as cel-go's checker words it
(``ERROR: <input>:1:1: undeclared reference to 'f' (in container '')``), as kube-apiserver
rejects undeclared references when the CRD or policy is written. Functions Kubernetes has but
this module lacks (the URL, IP/CIDR, regex ``find``, ``format``, semver, authorizer and optional
libraries, lists' ``max``, ...) raise its subclass :class:`CelNotImplemented`: the server skips
such CRD rules and treats such policy expressions as compilation errors at admission time
(README: known differences).
"""

from __future__ import annotations

import decimal
import functools
import itertools
import math
import operator
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import celpy
import lark
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
    """The rule does not parse, or calls a function that neither CEL nor this module defines.

    The message is cel-go's: one ``ERROR: <input>:line:column: ...`` block per problem.
    """


class CelNotImplemented(CelUnsupported):
    """The expression calls a Kubernetes CEL library function this module does not provide."""


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


def go_float(value: float) -> str:
    """A double as cel-go's ``string()`` writes it (Go's ``%g``: ``1.5``, ``1e+06``)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1, value) < 0 else "0"
    sign, digits, exponent = decimal.Decimal(repr(value)).normalize().as_tuple()
    shown = "".join(map(str, digits))
    assert isinstance(exponent, int)
    point = len(shown) + exponent  # digits before the decimal point
    prefix = "-" if sign else ""
    if point - 1 < -4 or point - 1 >= 6:
        mantissa = shown[0] + ("." + shown[1:] if len(shown) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if point - 1 < 0 else '+'}{abs(point - 1):02d}"
    if point <= 0:
        return f"{prefix}0.{'0' * -point}{shown}"
    if point >= len(shown):
        return f"{prefix}{shown}{'0' * (point - len(shown))}"
    return f"{prefix}{shown[:point]}.{shown[point:]}"


def _string(value: Any) -> Result:
    """``string()``, with doubles and booleans written as cel-go writes them."""
    if isinstance(value, celtypes.DoubleType):
        return celtypes.StringType(go_float(float(value)))
    if isinstance(value, celtypes.BoolType | bool):
        return celtypes.StringType("true" if value else "false")
    return base_functions["string"](value)


# The Kubernetes quantity library (k8s.io/apiserver/pkg/cel/library/quantity.go)

_QUANTITY_FORMAT = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
_QUANTITY = re.compile(_QUANTITY_FORMAT)
_QUANTITY_NUMBER = re.compile(r"^([+-]?)([0-9]*)(?:\.([0-9]*))?$")
_BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL_SUFFIXES = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12}
_DECIMAL_SUFFIXES |= {"P": 15, "E": 18}
_EXPONENT = re.compile(r"^[eE]([-+]?[0-9]+)$")
_INT64 = (-(2**63), 2**63 - 1)


class Quantity:
    """A ``resource.Quantity`` as the CEL library sees it: an exact value, compared by value."""

    __slots__ = ("text", "value")

    def __init__(self, value: Fraction, text: str = "") -> None:
        self.value = value
        self.text = text or str(value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Quantity) and self.value == other.value

    def __hash__(self) -> int:
        return hash(self.value)

    def __repr__(self) -> str:
        return f"quantity({self.text!r})"


def parse_quantity(text: str) -> Quantity:
    """``resource.ParseQuantity``; :class:`ValueError` with its message when ``text`` is none."""
    match = _QUANTITY.match(text.strip())
    number = _QUANTITY_NUMBER.match(match.group(1)) if match else None
    if match is None or number is None or not (number.group(2) or number.group(3)):
        raise ValueError(f"quantities must match the regular expression '{_QUANTITY_FORMAT}'")
    sign, whole, fraction = number.group(1), number.group(2), number.group(3) or ""
    value = Fraction(int(whole or "0")) + (
        Fraction(int(fraction), 10 ** len(fraction)) if fraction else 0
    )
    suffix = match.group(2)
    if suffix in _BINARY_SUFFIXES:
        value *= 2 ** _BINARY_SUFFIXES[suffix]
    elif suffix in _DECIMAL_SUFFIXES:
        value *= Fraction(10) ** _DECIMAL_SUFFIXES[suffix]
    elif (exponent := _EXPONENT.match(suffix)) is not None:
        value *= Fraction(10) ** int(exponent.group(1))
    else:
        raise ValueError("unable to parse quantity's suffix")
    return Quantity(-value if sign == "-" else value, text)


def _quantity(text: Any) -> Result:
    if not isinstance(text, celtypes.StringType):
        return CELEvalError("no such overload")
    try:
        return parse_quantity(str(text))  # type: ignore[return-value]
    except ValueError as exc:
        return CELEvalError(str(exc))


def _is_quantity(text: Any) -> Result:
    if not isinstance(text, celtypes.StringType):
        return CELEvalError("no such overload")
    try:
        parse_quantity(str(text))
    except ValueError:
        return celtypes.BoolType(False)
    return celtypes.BoolType(True)


def _quantities(*values: Any) -> list[Fraction] | None:
    if all(isinstance(value, Quantity) for value in values):
        return [value.value for value in values]
    return None


def _compare(left: Any, right: Any) -> int | None:
    values = _quantities(left, right)
    if values is None:
        return None
    return (values[0] > values[1]) - (values[0] < values[1])


def _compared(left: Any, right: Any, convert: Callable[[int], Result]) -> Result:
    order = _compare(left, right)
    return CELEvalError("no such overload") if order is None else convert(order)


def _arithmetic(left: Any, right: Any, sign: int) -> Result:
    if isinstance(right, celtypes.IntType) and not isinstance(right, celtypes.BoolType):
        right = Quantity(Fraction(int(right)))
    values = _quantities(left, right)
    if values is None:
        return CELEvalError("no such overload")
    return Quantity(values[0] + sign * values[1])  # type: ignore[return-value]


def _as_integer(value: Any) -> Result:
    values = _quantities(value)
    if values is None:
        return CELEvalError("no such overload")
    exact = values[0]
    if exact.denominator != 1 or not _INT64[0] <= exact.numerator <= _INT64[1]:
        return CELEvalError("cannot convert value to integer")
    return celtypes.IntType(exact.numerator)


def _is_integer(value: Any) -> Result:
    converted = _as_integer(value)
    if isinstance(converted, CELEvalError) and _quantities(value) is None:
        return converted
    return celtypes.BoolType(not isinstance(converted, CELEvalError))


def _approximate(value: Any) -> Result:
    values = _quantities(value)
    return CELEvalError("no such overload") if values is None else celtypes.DoubleType(values[0])


def _sign(value: Any) -> Result:
    values = _quantities(value)
    if values is None:
        return CELEvalError("no such overload")
    return celtypes.IntType((values[0] > 0) - (values[0] < 0))


QUANTITY_FUNCTIONS: dict[str, CELFunction] = {
    "quantity": _quantity,
    "isQuantity": _is_quantity,
    "isGreaterThan": lambda a, b: _compared(a, b, lambda o: celtypes.BoolType(o > 0)),
    "isLessThan": lambda a, b: _compared(a, b, lambda o: celtypes.BoolType(o < 0)),
    "compareTo": lambda a, b: _compared(a, b, celtypes.IntType),
    "add": lambda a, b: _arithmetic(a, b, 1),
    "sub": lambda a, b: _arithmetic(a, b, -1),
    "sign": _sign,
    "isInteger": _is_integer,
    "asInteger": _as_integer,
    "asApproximateFloat": _approximate,
}
# ``quantity('1')`` and ``isQuantity('1')`` are global functions, the rest methods of a quantity.
_GLOBAL_ONLY = frozenset({"quantity", "isQuantity"})
_METHOD_ONLY = frozenset(QUANTITY_FUNCTIONS) - _GLOBAL_ONLY


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
    "string": _string,
    **QUANTITY_FUNCTIONS,
}
# handled by cel-python's evaluator itself rather than through its function table
_MACROS = frozenset({"has", "dyn", "all", "exists", "exists_one", "map", "filter", "min"})
_KNOWN = frozenset(base_functions) | frozenset(FUNCTIONS) | _MACROS


# Kubernetes CEL names this module does not implement: calling them is CelNotImplemented (the
# real server accepts them), not an undeclared reference. Functions and methods first (the URL,
# regex, IP/CIDR, format, semver, authorizer, optional and extended strings/lists libraries),
# then the variables and namespaces of the authorizer, sets, math and optional libraries.
KUBERNETES_ONLY = frozenset(
    {
        *("url", "isURL", "getScheme", "getHost", "getHostname", "getPort"),
        *("getEscapedPath", "getQuery", "find", "findAll", "max", "slice", "flatten"),
        *("ip", "isIP", "cidr", "isCIDR", "family", "isCanonical", "isUnspecified"),
        *("isLoopback", "isLinkLocalMulticast", "isLinkLocalUnicast", "isGlobalUnicast"),
        *("containsIP", "containsCIDR", "masked", "prefixLength", "format", "quote"),
        *("reverse", "semver", "isSemver", "major", "minor", "patch", "path", "group"),
        *("resource", "subresource", "namespace", "name", "check", "allowed", "reason"),
        *("errored", "error", "serviceAccount", "fieldSelector", "labelSelector"),
        *("hasValue", "value", "orValue", "of", "none", "transformList", "transformMap"),
        *("transformMapEntry", "validate", "named"),
    }
)
KUBERNETES_VARIABLES = frozenset({"authorizer", "sets", "math", "optional", "strings", "lists"})
# Type names usable as values (``type(x) == string``).
_TYPE_NAMES = frozenset(
    {"bool", "bytes", "double", "duration", "int", "list", "map", "null_type", "string"}
) | frozenset({"timestamp", "type", "uint", "dyn"})
_COMPREHENSIONS = frozenset({"all", "exists", "exists_one", "map", "filter"})


# compiling and evaluating


@functools.cache
def _environment() -> celpy.Environment:
    return celpy.Environment()


def issue(source: str, line: int, column: int, text: str) -> str:
    """One of cel-go's compile errors: the position, the text, the line and a caret under it."""
    lines = source.splitlines() or [""]
    shown = lines[line - 1] if 0 < line <= len(lines) else ""
    return f"ERROR: <input>:{line}:{column}: {text}\n | {shown}\n | {'.' * (column - 1)}^"


def _at(source: str, token: Any, text: str) -> str:
    line, column = getattr(token, "line", None) or 1, getattr(token, "column", None) or 1
    return issue(source, int(line), int(column), text)


@functools.lru_cache(maxsize=1024)
def parse(source: str) -> lark.Tree[Any]:
    """cel-python's syntax tree of ``source``; :class:`CelUnsupported` with cel-go's syntax error
    (or :class:`CelNotImplemented` for optional-field syntax, ``a.?b``, which cel-go parses)."""
    try:
        return _environment().compile(source)
    except CELParseError as exc:
        line, column = getattr(exc, "line", None) or 1, getattr(exc, "column", None) or 1
        context = exc.__context__
        found = getattr(context, "token", None)
        shown = str(found)
        if found is None or found.type == "$END":  # cel-go points past the last character
            shown, lines = "<EOF>", source.splitlines() or [""]
            line, column = len(lines), len(lines[-1]) + 1
        error = issue(source, int(line), int(column), f"Syntax error: mismatched input '{shown}'")
        if re.search(r"\.\?|\[\?", source):
            raise CelNotImplemented(
                f"{error} (optional field syntax is not supported by the test cluster)"
            ) from exc
        raise CelUnsupported(error) from exc


def _called(ast: lark.Tree[Any]) -> Iterator[tuple[str, bool, Any]]:
    """The functions and methods a parsed expression calls: (name, as a method, its token)."""
    for tree in ast.iter_subtrees():
        if tree.data == "ident_arg":
            yield str(tree.children[0]), False, tree.children[0]
        elif tree.data == "member_dot_arg":
            yield str(tree.children[1]), True, tree.children[1]


def _undeclared_functions(source: str, ast: lark.Tree[Any]) -> tuple[list[str], list[str]]:
    """cel-go's undeclared-reference errors, split: unknown anywhere, and Kubernetes-only."""
    unknown: list[str] = []
    kubernetes: list[str] = []
    for name, method, token in _called(ast):
        misplaced = (name in _GLOBAL_ONLY and method) or (name in _METHOD_ONLY and not method)
        if name in _KNOWN and not misplaced:
            continue
        if name in KUBERNETES_ONLY and not misplaced:
            text = f"'{name}' (a Kubernetes CEL library) is not supported by the test cluster"
            kubernetes.append(_at(source, token, text))
            continue
        unknown.append(_at(source, token, f"undeclared reference to '{name}' (in container '')"))
    return unknown, kubernetes


@functools.lru_cache(maxsize=1024)
def program(source: str) -> celpy.Runner:
    """Parse ``source`` once and bind the functions above; :class:`CelUnsupported` if it can't."""
    ast = parse(source)
    unknown, kubernetes = _undeclared_functions(source, ast)
    if unknown:
        raise CelUnsupported("\n".join(unknown + kubernetes))
    if kubernetes:
        raise CelNotImplemented("\n".join(kubernetes))
    return _environment().program(ast, functions=FUNCTIONS)


def check_names(
    source: str, declared: Collection[str], variables: Collection[str] | None = None
) -> tuple[list[str], list[str]]:
    """cel-go's checker errors for the identifiers ``source`` reads: names neither ``declared``
    nor bound by a comprehension (``undeclared reference``), and, when ``variables`` is given,
    ``variables.x`` for an ``x`` not among them (``undefined field``). Returned split as
    :func:`program` splits them: errors the real server reports, and uses of the Kubernetes
    libraries' variables (``authorizer``, ``sets``, ...) that the test cluster lacks."""
    ast = parse(source)
    bound = set(_TYPE_NAMES)
    for tree in ast.iter_subtrees():
        if tree.data == "member_dot_arg" and str(tree.children[1]) in _COMPREHENSIONS:
            arguments = tree.children[2] if len(tree.children) > 2 else None
            if isinstance(arguments, lark.Tree) and arguments.children:
                name = _bare_identifier(arguments.children[0])
                if name is not None:
                    bound.add(name)
    errors: list[str] = []
    kubernetes: list[str] = []
    for tree in ast.iter_subtrees():
        if tree.data == "ident":
            token = tree.children[0]
            name = str(token)
            if name in declared or name in bound:
                continue
            if name in KUBERNETES_VARIABLES:
                kubernetes.append(
                    _at(source, token, f"'{name}' is not supported by the test cluster")
                )
            else:
                errors.append(
                    _at(source, token, f"undeclared reference to '{name}' (in container '')")
                )
        elif tree.data == "member_dot" and variables is not None:
            base, field = tree.children[0], tree.children[1]
            if _bare_identifier(base) == "variables" and str(field) not in variables:
                errors.append(_at(source, field, f"undefined field '{field}'"))
    return errors, kubernetes


def _bare_identifier(node: Any) -> str | None:
    """The name when ``node`` (an expression or member subtree) is just an identifier."""
    while isinstance(node, lark.Tree):
        if node.data == "ident":
            return str(node.children[0])
        if len(node.children) != 1:
            return None
        node = node.children[0]
    return None


def selections(ast: lark.Tree[Any], roots: Collection[str]) -> Iterator[list[Any]]:
    """Field selections from a root identifier: ``object.spec.x`` is ``[object, spec, x]``
    (tokens, for positions), for every ``member_dot`` chain whose root is one of ``roots``."""
    for tree in ast.iter_subtrees():
        if tree.data != "member_dot":
            continue
        chain: list[Any] = []
        node: Any = tree
        while isinstance(node, lark.Tree) and node.data in ("member_dot", "member"):
            if node.data == "member_dot":
                chain.append(node.children[1])
                node = node.children[0]
            elif len(node.children) == 1:
                node = node.children[0]
            else:
                break
        root = _bare_identifier(node)
        if root in roots:
            token = _identifier_token(node)
            yield [token, *reversed(chain)]


def _identifier_token(node: Any) -> Any:
    while isinstance(node, lark.Tree):
        if node.data == "ident":
            return node.children[0]
        node = node.children[0]
    return node


def evaluate(runner: celpy.Runner, activation: Mapping[str, Any]) -> Any:
    """Run a compiled expression over CEL values; its CEL result, or :class:`CelError`."""
    try:
        result = runner.evaluate(dict(activation))
    except CELEvalError as exc:
        raise CelError(_message(exc)) from exc
    except (CELUnsupportedError, TypeError, ValueError, LookupError, ArithmeticError) as exc:
        raise CelError(str(exc)) from exc
    if isinstance(result, CELEvalError):
        raise CelError(_message(result))
    return result


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
        activation = {name: json_to_cel(value) for name, value in env.items()}
        return _plain(evaluate(self.program, activation))


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
