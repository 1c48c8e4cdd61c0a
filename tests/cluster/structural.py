"""Defaulting and pruning of objects against a structural schema, as CRDs require.

The order follows the real apiextensions decoder: nulls without a default are dropped where the
schema does not allow null, then ``default`` values fill missing fields, then unknown fields
are pruned (kept below ``x-kubernetes-preserve-unknown-fields``). The pruned paths are returned so
the server can honour ``fieldValidation=Strict`` / ``Warn`` the way kubectl expects.

The same walk (:func:`unknown_fields`) finds unknown fields in built-in kinds, whose schemas
come from the OpenAPI definitions; built-ins are never pruned, only reported.
"""

from __future__ import annotations

import copy
from typing import Any

from .schemas import SchemaNode

JSON = dict[str, Any]

_ROOT_KEPT = ("apiVersion", "kind", "metadata")


def default_and_prune(obj: JSON, node: SchemaNode) -> list[str]:
    """Default, then prune, ``obj`` in place (the caller's own copy); return the pruned paths."""
    _apply_defaults(obj, node)
    pruned: list[str] = []
    _prune_object(obj, node, "", pruned, root=True)
    return pruned


def apply_defaults(obj: Any, node: SchemaNode) -> None:
    _apply_defaults(obj, node)


def _apply_defaults(value: Any, node: SchemaNode) -> None:
    schema = node.schema
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for key in [k for k, v in value.items() if v is None]:
            sub = properties.get(key)
            if sub is not None and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            elif sub is not None and not sub.get("nullable"):
                del value[key]
        for key, sub in properties.items():
            if key not in value and isinstance(sub, dict) and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
        for key, item in value.items():
            child = node.field(key)
            if child is not None:
                _apply_defaults(item, child)
    elif isinstance(value, list):
        items = node.items()
        if items is not None:
            for item in value:
                _apply_defaults(item, items)


def _prune_object(value: Any, node: SchemaNode, path: str, pruned: list[str], root: bool) -> None:
    if isinstance(value, dict):
        if node.schema.get("x-kubernetes-preserve-unknown-fields"):
            for key, item in value.items():
                sub = (node.schema.get("properties") or {}).get(key)
                if sub is not None:
                    _prune_object(item, SchemaNode(sub), _join(path, key), pruned, root=False)
            return
        embedded = bool(node.schema.get("x-kubernetes-embedded-resource"))
        for key in list(value):
            if (
                (root or embedded)
                and key in _ROOT_KEPT
                and key not in (node.schema.get("properties") or {})
            ):
                continue
            child = node.field(key)
            if child is None:
                pruned.append(_join(path, key))
                del value[key]
                continue
            _prune_object(value[key], child, _join(path, key), pruned, root=False)
    elif isinstance(value, list):
        items = node.items()
        if items is None:
            return
        for index, item in enumerate(value):
            _prune_object(item, items, f"{path}[{index}]", pruned, root=False)


def unknown_fields(value: Any, node: SchemaNode, path: str = "") -> list[str]:
    """Paths in ``value`` that ``node`` does not declare (for strict field validation)."""
    found: list[str] = []
    if node.is_free_form:
        return found
    if isinstance(value, dict) and node.type in ("object", None):
        for key, item in value.items():
            child = node.field(key)
            if child is None:
                found.append(_join(path, key))
            else:
                found.extend(unknown_fields(item, child, _join(path, key)))
    elif isinstance(value, list) and node.type == "array":
        items = node.items()
        if items is not None:
            for index, item in enumerate(value):
                found.extend(unknown_fields(item, items, f"{path}[{index}]"))
    return found


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
