"""The three PATCH flavours besides server-side apply: JSON merge, JSON patch, strategic merge.

Strategic merge patch follows ``k8s.io/apimachinery/pkg/util/strategicpatch`` for the parts
kubectl and controllers emit: lists with ``x-kubernetes-patch-strategy: merge`` merge by their
``x-kubernetes-patch-merge-key`` (containers by name, ports by containerPort, ...) or, for
primitive lists such as finalizers, as a union; and the directives ``$patch`` (replace, delete,
merge), ``$retainKeys``, ``$deleteFromPrimitiveList/<field>`` and ``$setElementOrder/<field>``.
The merge metadata comes from the OpenAPI definitions, so every built-in kind is covered.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from .schemas import SchemaNode

JSON = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
APPLY_PATCH_CBOR = "application/apply-patch+cbor"


class PatchError(Exception):
    """The patch cannot be applied to this object (the server answers 422 or 400)."""


# JSON merge patch (RFC 7386)


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# JSON patch (RFC 6902)


def json_patch(document: Any, operations: Any) -> Any:
    if not isinstance(operations, list):
        raise PatchError("json patch must be a list of operations")
    doc = copy.deepcopy(document)
    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation:
            raise PatchError(f"invalid operation {operation!r}")
        doc = _apply_operation(doc, operation)
    return doc


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f'invalid JSON pointer "{path}"')
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _parent(doc: Any, parts: list[str], path: str) -> Any:
    current = doc
    for part in parts[:-1]:
        try:
            current = current[int(part)] if isinstance(current, list) else current[part]
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise PatchError(f"doc is missing path: \"{path}\": missing value") from exc
    return current


def _index(container: list[Any], part: str, path: str, *, for_add: bool) -> int:
    if for_add and part == "-":
        return len(container)
    try:
        index = int(part)
    except ValueError as exc:
        raise PatchError(f"invalid index {part!r} in \"{path}\"") from exc
    limit = len(container) if for_add else len(container) - 1
    if index < 0 or index > limit:
        raise PatchError(f"unable to access invalid index: {index}")
    return index


def _get(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        return doc
    parent = _parent(doc, parts, path)
    if isinstance(parent, list):
        return parent[_index(parent, parts[-1], path, for_add=False)]
    if not isinstance(parent, dict) or parts[-1] not in parent:
        raise PatchError(f"doc is missing path: \"{path}\": missing value")
    return parent[parts[-1]]


def _remove(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    parent = _parent(doc, parts, path)
    if isinstance(parent, list):
        return parent.pop(_index(parent, parts[-1], path, for_add=False))
    if not isinstance(parent, dict) or parts[-1] not in parent:
        raise PatchError(f"Unable to remove nonexistent key: {parts[-1]}: missing value")
    return parent.pop(parts[-1])


def _add(doc: Any, path: str, value: Any, *, replace: bool = False) -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    parent = _parent(doc, parts, path)
    if isinstance(parent, list):
        if replace:
            parent[_index(parent, parts[-1], path, for_add=False)] = value
        else:
            parent.insert(_index(parent, parts[-1], path, for_add=True), value)
    elif isinstance(parent, dict):
        if replace and parts[-1] not in parent:
            raise PatchError(f"replace operation does not apply: doc is missing key: {path}")
        parent[parts[-1]] = value
    else:
        raise PatchError(f"doc is missing path: \"{path}\"")
    return doc


def _apply_operation(doc: Any, operation: JSON) -> Any:
    op, path = operation["op"], str(operation.get("path", ""))
    if op == "add":
        return _add(doc, path, copy.deepcopy(operation.get("value")))
    if op == "remove":
        _remove(doc, path)
        return doc
    if op == "replace":
        return _add(doc, path, copy.deepcopy(operation.get("value")), replace=True)
    if op == "move":
        value = _remove(doc, str(operation["from"]))
        return _add(doc, path, value)
    if op == "copy":
        return _add(doc, path, copy.deepcopy(_get(doc, str(operation["from"]))))
    if op == "test":
        if _get(doc, path) != operation.get("value"):
            raise PatchError(f"testing value {path} failed")
        return doc
    raise PatchError(f"Unexpected kind: {op}")


# strategic merge patch

_DIRECTIVE = "$patch"
_RETAIN = "$retainKeys"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"
_ORDER = "$setElementOrder/"


def strategic_merge(original: Any, patch: Any, node: SchemaNode | None) -> Any:
    """Apply a strategic merge patch to a copy of ``original``."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get(_DIRECTIVE)
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != _DIRECTIVE}
    if directive == "delete":
        return None
    result = dict(original) if isinstance(original, dict) else {}
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in (_DIRECTIVE, _RETAIN):
            continue
        if key.startswith(_ORDER):
            orders[key[len(_ORDER):]] = value if isinstance(value, list) else []
            continue
        if key.startswith(_DELETE_PRIMITIVE):
            field = key[len(_DELETE_PRIMITIVE):]
            doomed = value if isinstance(value, list) else []
            result[field] = [v for v in result.get(field) or [] if v not in doomed]
            continue
        child = node.field(key) if node is not None else None
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _merge_list(result.get(key), value, child)
        elif isinstance(value, dict):
            merged = strategic_merge(result.get(key), value, child)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = copy.deepcopy(value)
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            result[field] = _reorder(result[field], order, node.field(field) if node else None)
    retain = patch.get(_RETAIN)
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(original: Any, patch: list[Any], node: SchemaNode | None) -> list[Any]:
    if node is None or "merge" not in node.patch_strategies or not isinstance(original, list):
        return [_strip_directives(item) for item in patch if not _is_directive_only(item)]
    if any(isinstance(item, dict) and item.get(_DIRECTIVE) == "replace" for item in patch):
        return [_strip_directives(item) for item in patch if not _is_directive_only(item)]
    key = node.patch_merge_key
    if key is None:  # primitive list: union, keeping the original order
        merged = list(original)
        merged.extend(copy.deepcopy(v) for v in patch if v not in merged)
        return merged
    items = node.items()
    merged = list(original)
    for item in patch:
        if not isinstance(item, dict):
            continue
        position = next(
            (i for i, existing in enumerate(merged)
             if isinstance(existing, dict) and existing.get(key) == item.get(key)),
            None,
        )
        if item.get(_DIRECTIVE) == "delete":
            if position is not None:
                merged.pop(position)
        elif position is None:
            merged.append(_strip_directives(item))
        else:
            merged[position] = strategic_merge(merged[position], item, items)
    return merged


def _reorder(values: list[Any], order: list[Any], node: SchemaNode | None) -> list[Any]:
    """Put items named in ``$setElementOrder`` first, in that order; keep the rest after."""
    key = node.patch_merge_key if node is not None else None

    def identity(item: Any) -> str:
        picked = item.get(key) if key and isinstance(item, dict) else item
        return json.dumps(picked, sort_keys=True)

    wanted = {identity(item): index for index, item in enumerate(order)}
    ranked = sorted(
        enumerate(values), key=lambda pair: (wanted.get(identity(pair[1]), len(wanted)), pair[0]),
    )
    return [item for _, item in ranked]


def _is_directive_only(item: Any) -> bool:
    return isinstance(item, dict) and set(item) == {_DIRECTIVE}


def _strip_directives(item: Any) -> Any:
    if isinstance(item, dict):
        return {
            k: _strip_directives(v) for k, v in item.items()
            if k not in (_DIRECTIVE, _RETAIN) and not k.startswith((_ORDER, _DELETE_PRIMITIVE))
        }
    if isinstance(item, list):
        return [_strip_directives(v) for v in item]
    return copy.deepcopy(item)
