"""Label and field selectors, parsed from query strings and matched against objects.

Parsing follows ``k8s.io/apimachinery/pkg/labels``: requirements separated by commas, each one of
``key``, ``!key``, ``key=v``, ``key==v``, ``key!=v``, ``key in (a,b)``, ``key notin (a,b)``,
``key>n``, ``key<n``. Field selectors accept only ``=``, ``==`` and ``!=`` and only the fields
the real server indexes for each kind; anything else is a 400, as kubectl users would see.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import bad_request

JSON = dict[str, Any]


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # exists, !exists, =, !=, in, notin, gt, lt
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if not present:
            return False
        try:
            number, bound = int(str(value)), int(self.values[0])
        except ValueError:
            return False
        return number > bound if self.op == "gt" else number < bound


Selector = tuple[Requirement, ...]

_SET_RE = re.compile(r"^\s*(\S+)\s+(in|notin)\s*\((.*)\)\s*$")
_OP_RE = re.compile(r"^\s*([^=!<>\s]+)\s*(==|=|!=|>|<)\s*(\S*)\s*$")
_KEY_RE = re.compile(
    r"^([a-z0-9A-Z]([-a-z0-9A-Z.]*[a-z0-9A-Z])?/)?[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$"
)
_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def parse_label_selector(text: str | None) -> Selector:
    if not text or not text.strip():
        return ()
    return tuple(_parse_requirement(part) for part in _split_top_level(text))


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses: ``a in (x,y),b`` is two requirements."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part for part in parts if part.strip()]


def _parse_requirement(text: str) -> Requirement:
    stripped = text.strip()
    if match := _SET_RE.match(stripped):
        key, op, body = match.groups()
        values = tuple(v.strip() for v in body.split(",") if v.strip())
        return _checked(Requirement(key, op, values), text)
    if match := _OP_RE.match(stripped):
        key, op, value = match.groups()
        op = {"==": "=", ">": "gt", "<": "lt"}.get(op, op)
        return _checked(Requirement(key, op, (value,)), text)
    if stripped.startswith("!"):
        return _checked(Requirement(stripped[1:].strip(), "!exists"), text)
    return _checked(Requirement(stripped, "exists"), text)


def _checked(requirement: Requirement, text: str) -> Requirement:
    if not _KEY_RE.match(requirement.key):
        raise bad_request(f"unable to parse requirement: invalid label key {requirement.key!r}")
    if requirement.op in ("gt", "lt"):
        if not requirement.values[0].lstrip("-").isdigit():
            raise bad_request(f"unable to parse requirement: {text!r}: value must be an integer")
    else:
        for value in requirement.values:
            if not _VALUE_RE.match(value):
                raise bad_request(f"unable to parse requirement: invalid label value {value!r}")
    return requirement


def labels_match(selector: Selector, obj: JSON) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(requirement.matches(labels) for requirement in selector)


def selector_from_label_selector(spec: JSON | None) -> Selector:
    """A ``metav1.LabelSelector`` (matchLabels/matchExpressions) as requirements."""
    if not spec:
        return ()
    out = [Requirement(k, "=", (str(v),)) for k, v in (spec.get("matchLabels") or {}).items()]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}
    for expression in spec.get("matchExpressions") or []:
        op = ops.get(expression.get("operator", ""), "exists")
        out.append(Requirement(expression["key"], op, tuple(expression.get("values") or ())))
    return tuple(out)


def format_selector(selector: Selector) -> str:
    """Render requirements back to query form (scale subresource's ``status.selector``)."""
    parts = []
    for r in selector:
        if r.op == "exists":
            parts.append(r.key)
        elif r.op == "!exists":
            parts.append(f"!{r.key}")
        elif r.op in ("in", "notin"):
            parts.append(f"{r.key} {r.op} ({','.join(r.values)})")
        else:
            parts.append(f"{r.key}{r.op}{r.values[0]}")
    return ",".join(parts)


# field selectors

_COMMON_FIELDS = frozenset({"metadata.name", "metadata.namespace"})
_FIELDS_BY_KIND: dict[str, frozenset[str]] = {
    "Pod": frozenset(
        {
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        }
    ),
    "Event": frozenset(
        {
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "reportingController",
        }
    ),
    "Secret": frozenset({"type"}),
    "Namespace": frozenset({"status.phase"}),
    "Node": frozenset({"spec.unschedulable"}),
    "ReplicationController": frozenset({"status.replicas"}),
    "Job": frozenset({"status.successful"}),
}

FieldGetter = Callable[[JSON], str]


@dataclass(frozen=True)
class FieldRequirement:
    path: str
    negate: bool
    value: str

    def matches(self, obj: JSON) -> bool:
        return (field_value(obj, self.path) == self.value) != self.negate


def parse_field_selector(
    text: str | None,
    kind: str,
    extra_fields: frozenset[str] = frozenset(),
) -> tuple[FieldRequirement, ...]:
    if not text or not text.strip():
        return ()
    allowed = _COMMON_FIELDS | _FIELDS_BY_KIND.get(kind, frozenset()) | extra_fields
    out = []
    for part in _split_top_level(text):
        match = re.match(r"^\s*([^=!\s]+)\s*(==|=|!=)\s*(.*?)\s*$", part)
        if not match:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        path, op, value = match.groups()
        if path not in allowed:
            raise bad_request(f"field label not supported: {path}")
        out.append(FieldRequirement(path, op == "!=", value))
    return tuple(out)


def fields_match(requirements: tuple[FieldRequirement, ...], obj: JSON) -> bool:
    return all(requirement.matches(obj) for requirement in requirements)


def field_value(obj: JSON, path: str) -> str:
    """The string a field selector compares against; missing fields compare as ""."""
    if path == "source":  # core/v1 Event's source is an object; its component is indexed
        return str((obj.get("source") or {}).get("component") or "")
    current: Any = obj
    for part in path.lstrip(".").split("."):
        if not isinstance(current, dict):
            return ""
        current = current.get(part)
    if current is None:
        return ""
    if isinstance(current, bool):
        return "true" if current else "false"
    return str(current)
