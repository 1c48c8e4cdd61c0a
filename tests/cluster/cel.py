"""A small interpreter for the part of CEL that CRD validation rules use in practice.

``x-kubernetes-validations`` rules are CEL expressions over ``self`` (and ``oldSelf`` for
transition rules such as the immutability rule ``self == oldSelf``). A full CEL implementation
is far larger than a test server needs, so this one covers: literals, lists and maps, field
access and indexing, ``has()``, ``size()``, arithmetic, comparisons, ``in``, logical operators,
the ternary, the string methods ``startsWith``/``endsWith``/``contains``/``matches``/
``lowerAscii``/``upperAscii``, and the macros ``all``/``exists``/``exists_one``/``map``/
``filter``. Rules outside that subset raise :class:`CelUnsupported` at compile time and the
server skips them (README: known differences).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Env = dict[str, Any]
Evaluator = Callable[[Env], Any]


class CelUnsupported(Exception):
    """The rule does not parse, or uses CEL this interpreter does not implement."""


class CelError(Exception):
    """Evaluation failed (missing key, wrong types): the rule counts as violated."""


_TOKEN = re.compile(r"""
    \s*(?:
      (?P<num>\d+\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|0x[0-9a-fA-F]+u?|\d+u?)
     |(?P<str>[rR]?(?:'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*"))
     |(?P<op>==|!=|<=|>=|&&|\|\||[-+*/%<>!?:.,()\[\]{}])
     |(?P<id>[A-Za-z_][A-Za-z0-9_]*)
    )""", re.VERBOSE)


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str


def _tokenize(source: str) -> list[_Tok]:
    out, pos = [], 0
    source = source.rstrip()
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        if not match or match.end() == pos:
            raise CelUnsupported(f"cannot parse {source[pos:]!r}")
        kind = match.lastgroup or ""
        out.append(_Tok(kind, match.group(kind)))
        pos = match.end()
    out.append(_Tok("end", ""))
    return out


_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_BINARY = [("||",), ("&&",), ("==", "!=", "<", "<=", ">", ">=", "in"), ("+", "-"), ("*", "/", "%")]


class _Parser:
    """Recursive descent, one method per precedence level, producing closures."""

    def __init__(self, source: str) -> None:
        self.toks = _tokenize(source)
        self.pos = 0

    def peek(self) -> _Tok:
        return self.toks[self.pos]

    def take(self, text: str | None = None) -> _Tok:
        tok = self.toks[self.pos]
        if text is not None and tok.text != text:
            raise CelUnsupported(f"expected {text!r}, found {tok.text!r}")
        self.pos += 1
        return tok

    def parse(self) -> Evaluator:
        expr = self.ternary()
        if self.peek().kind != "end":
            raise CelUnsupported(f"unexpected {self.peek().text!r}")
        return expr

    def ternary(self) -> Evaluator:
        cond = self.binary(0)
        if self.peek().text != "?":
            return cond
        self.take("?")
        yes = self.ternary()
        self.take(":")
        no = self.ternary()
        return lambda env: yes(env) if _truth(cond(env)) else no(env)

    def binary(self, level: int) -> Evaluator:
        if level == len(_BINARY):
            return self.unary()
        left = self.binary(level + 1)
        while self.peek().text in _BINARY[level] and self.peek().kind in ("op", "id"):
            op = self.take().text
            right = self.binary(level + 1)
            left = _binary(op, left, right)
        return left

    def unary(self) -> Evaluator:
        if self.peek().text == "!":
            self.take()
            inner = self.unary()
            return lambda env: not _truth(inner(env))
        if self.peek().text == "-":
            self.take()
            inner = self.unary()
            return lambda env: -inner(env)
        return self.member()

    def member(self) -> Evaluator:
        expr = self.primary()
        while self.peek().text in (".", "["):
            if self.take().text == "[":
                index = self.ternary()
                self.take("]")
                expr = _index(expr, index)
                continue
            name = self.take().text
            if self.peek().text != "(":
                expr = _select(expr, name)
            elif name in _MACROS:
                expr = self.macro(expr, name)
            else:
                expr = _method(expr, name, self.args())
        return expr

    def args(self) -> list[Evaluator]:
        self.take("(")
        out = []
        while self.peek().text != ")":
            out.append(self.ternary())
            if self.peek().text == ",":
                self.take()
        self.take(")")
        return out

    def macro(self, target: Evaluator, name: str) -> Evaluator:
        self.take("(")
        var = self.take().text
        self.take(",")
        body = self.ternary()
        self.take(")")
        return _macro(name, target, var, body)

    def primary(self) -> Evaluator:
        tok = self.take()
        if tok.kind == "num":
            value = _number(tok.text)
            return lambda env: value
        if tok.kind == "str":
            text = _string(tok.text)
            return lambda env: text
        if tok.text == "(":
            inner = self.ternary()
            self.take(")")
            return inner
        if tok.text == "[":
            items = []
            while self.peek().text != "]":
                items.append(self.ternary())
                if self.peek().text == ",":
                    self.take()
            self.take("]")
            return lambda env: [item(env) for item in items]
        if tok.text == "{":
            pairs = []
            while self.peek().text != "}":
                key = self.ternary()
                self.take(":")
                pairs.append((key, self.ternary()))
                if self.peek().text == ",":
                    self.take()
            self.take("}")
            return lambda env: {k(env): v(env) for k, v in pairs}
        if tok.kind != "id":
            raise CelUnsupported(f"unexpected {tok.text!r}")
        constants = {"true": True, "false": False, "null": None}
        if tok.text in constants:
            constant = constants[tok.text]
            return lambda env: constant
        if self.peek().text == "(":
            return self.function(tok.text)
        name = tok.text
        return lambda env: _lookup(env, name)

    def function(self, name: str) -> Evaluator:
        if name == "has":
            self.take("(")
            start = self.pos
            self.member()
            if self.toks[self.pos - 2].text != ".":
                raise CelUnsupported("has() needs a field selection")
            field = self.toks[self.pos - 1].text
            end = self.pos - 2
            self.take(")")
            target = _Parser.__new__(_Parser)
            target.toks, target.pos = [*self.toks[start:end], _Tok("end", "")], 0
            holder = target.member()
            return lambda env: _has(holder(env), field)
        args = self.args()
        functions: dict[str, Callable[..., Any]] = {
            "size": len, "int": int, "double": float, "string": _to_string, "bool": bool,
            "dyn": lambda v: v,
        }
        if name not in functions:
            raise CelUnsupported(f"function {name}() is not supported")
        function = functions[name]
        return lambda env: _call(function, [arg(env) for arg in args])


def _truth(value: Any) -> bool:
    if not isinstance(value, bool):
        raise CelError("no matching overload for a logical operator")
    return value


def _lookup(env: Env, name: str) -> Any:
    if name not in env:
        raise CelError(f"undeclared reference to '{name}'")
    return env[name]


def _select(target: Evaluator, name: str) -> Evaluator:
    def select(env: Env) -> Any:
        value = target(env)
        if not isinstance(value, dict) or name not in value:
            raise CelError(f"no such key: {name}")
        return value[name]
    return select


def _index(target: Evaluator, index: Evaluator) -> Evaluator:
    def get(env: Env) -> Any:
        value, key = target(env), index(env)
        try:
            return value[key]
        except (KeyError, IndexError, TypeError) as exc:
            raise CelError(f"no such key: {key}") from exc
    return get


def _has(value: Any, field: str) -> bool:
    return isinstance(value, dict) and field in value


def _call(function: Callable[..., Any], args: list[Any]) -> Any:
    try:
        return function(*args)
    except (TypeError, ValueError) as exc:
        raise CelError(str(exc)) from exc


def _to_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_METHODS: dict[str, Callable[..., Any]] = {
    "size": len,
    "startsWith": lambda s, p: s.startswith(p),
    "endsWith": lambda s, p: s.endswith(p),
    "contains": lambda s, p: p in s,
    "matches": lambda s, p: re.search(p, s) is not None,
    "lowerAscii": lambda s: s.lower(),
    "upperAscii": lambda s: s.upper(),
    "trim": lambda s: s.strip(),
    "split": lambda s, sep: s.split(sep),
    "join": lambda items, sep="": sep.join(items),
}


def _method(target: Evaluator, name: str, args: list[Evaluator]) -> Evaluator:
    if name not in _METHODS:
        raise CelUnsupported(f"method {name}() is not supported")
    method = _METHODS[name]
    return lambda env: _call(method, [target(env), *(arg(env) for arg in args)])


def _macro(name: str, target: Evaluator, var: str, body: Evaluator) -> Evaluator:
    def run(env: Env) -> Any:
        collection = target(env)
        items = list(collection) if isinstance(collection, dict | list) else None
        if items is None:
            raise CelError(f"{name}() needs a list or map")
        results = [(item, body({**env, var: item})) for item in items]
        if name == "all":
            return all(_truth(r) for _, r in results)
        if name == "exists":
            return any(_truth(r) for _, r in results)
        if name == "exists_one":
            return sum(1 for _, r in results if _truth(r)) == 1
        if name == "map":
            return [r for _, r in results]
        return [item for item, r in results if _truth(r)]
    return run


def _binary(op: str, left: Evaluator, right: Evaluator) -> Evaluator:
    if op == "&&":
        return lambda env: _truth(left(env)) and _truth(right(env))
    if op == "||":
        return lambda env: _truth(left(env)) or _truth(right(env))

    def apply(env: Env) -> Any:
        a, b = left(env), right(env)
        try:
            if op == "==":
                return _equal(a, b)
            if op == "!=":
                return not _equal(a, b)
            if op == "in":
                return a in b
            if op == "/" and isinstance(a, int) and isinstance(b, int):
                return int(a / b)
            return _OPERATORS[op](a, b)
        except (TypeError, ZeroDivisionError) as exc:
            raise CelError(f"no matching overload for '{op}'") from exc
    return apply


_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
    "/": lambda a, b: a / b, "%": lambda a, b: a % b,
}


def _equal(a: Any, b: Any) -> bool:
    """CEL equality: no implicit bool/int mixing, structural for lists and maps."""
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return bool(a == b)


def _number(text: str) -> int | float:
    text = text.rstrip("uU")
    if text.lower().startswith("0x"):
        return int(text, 16)
    return float(text) if any(c in text for c in ".eE") else int(text)


def _string(text: str) -> str:
    raw = text[0] in "rR"
    body = text[2:-1] if raw else text[1:-1]
    if raw:
        return body
    return body.encode("latin-1", "backslashreplace").decode("unicode_escape")


@dataclass(frozen=True)
class Rule:
    """A compiled ``x-kubernetes-validations`` entry."""

    source: str
    evaluate: Evaluator
    message: str
    field_path: str
    reason: str
    uses_old_self: bool


def compile_rule(rule: dict[str, Any]) -> Rule:
    source = str(rule.get("rule", ""))
    evaluate = _Parser(source).parse()
    message = str(rule.get("message") or f"failed rule: {source}")
    return Rule(
        source=source, evaluate=evaluate, message=message,
        field_path=str(rule.get("fieldPath") or ""), reason=str(rule.get("reason") or ""),
        uses_old_self=re.search(r"\boldSelf\b", source) is not None,
    )
