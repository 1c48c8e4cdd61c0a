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
import re
from typing import Any

import jsonpatch
import jsonpointer

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


# JSON patch (RFC 6902), applied by ``jsonpatch``; its errors worded as kube-apiserver words them
# (``k8s.io/apiserver`` uses ``evanphx/json-patch``)

_OPERATIONS = frozenset({"add", "remove", "replace", "move", "copy", "test"})


def json_patch(document: Any, operations: Any) -> Any:
    if not isinstance(operations, list):
        raise PatchError("json patch must be a list of operations")
    doc = copy.deepcopy(document)
    for operation in copy.deepcopy(operations):
        if not isinstance(operation, dict) or "op" not in operation:
            raise PatchError(f"invalid operation {operation!r}")
        if operation["op"] not in _OPERATIONS:
            raise PatchError(f"Unexpected kind: {operation['op']}")
        try:  # atomic: a failed operation leaves ``doc`` as it was, to word the error against
            doc = jsonpatch.JsonPatch([operation]).apply(doc, in_place=True, atomic=True)
        except jsonpatch.JsonPatchTestFailed as exc:
            raise PatchError(f"testing value {operation.get('path', '')} failed") from exc
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
            raise PatchError(_explain(doc, operation, exc)) from exc
    return doc


def _resolves(doc: Any, path: str) -> bool:
    try:
        jsonpointer.resolve_pointer(doc, path)
    except jsonpointer.JsonPointerException:
        return False
    return True


def _explain(doc: Any, operation: JSON, exc: Exception) -> str:
    """What kube-apiserver says about the operation that failed on ``doc``."""
    op = operation["op"]
    from_path = operation.get("from")
    source = op in ("move", "copy") and not _resolves(doc, str(from_path))
    path = str(from_path if source else operation.get("path", ""))
    action = ("remove" if op == "move" else "get") if source else op
    if op == "move" and not source and path.startswith(f"{from_path}/"):
        return f'doc is missing path: "{path}": missing value'  # removed before it is added
    try:
        parts = jsonpointer.JsonPointer(path).parts
    except jsonpointer.JsonPointerException:
        return f'invalid JSON pointer "{path}"'
    try:
        parent = jsonpointer.JsonPointer.from_parts(parts[:-1]).resolve(doc)
    except jsonpointer.JsonPointerException:
        return f'doc is missing path: "{path}": missing value'
    last = parts[-1] if parts else ""
    if isinstance(parent, list):
        if not re.fullmatch(r"-?\d+", last) and not (last == "-" and action == "add"):
            return f'invalid index {last!r} in "{path}"'
        return f"unable to access invalid index: {last}"
    if isinstance(parent, dict):
        if action == "remove" and last not in parent:
            return f"Unable to remove nonexistent key: {last}: missing value"
        if action == "replace" and last not in parent:
            return f"replace operation does not apply: doc is missing key: {path}"
        if action == "get" and last not in parent:
            return f'doc is missing path: "{path}": missing value'
        return str(exc)  # e.g. moving a value into its own child
    if action == "add":
        return f'doc is missing path: "{path}"'
    if action == "remove":
        return f"Unable to remove nonexistent key: {last}: missing value"
    return f'doc is missing path: "{path}": missing value'


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
            orders[key[len(_ORDER) :]] = value if isinstance(value, list) else []
            continue
        if key.startswith(_DELETE_PRIMITIVE):
            field = key[len(_DELETE_PRIMITIVE) :]
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
            (
                i
                for i, existing in enumerate(merged)
                if isinstance(existing, dict) and existing.get(key) == item.get(key)
            ),
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
        enumerate(values),
        key=lambda pair: (wanted.get(identity(pair[1]), len(wanted)), pair[0]),
    )
    return [item for _, item in ranked]


def _is_directive_only(item: Any) -> bool:
    return isinstance(item, dict) and set(item) == {_DIRECTIVE}


def _strip_directives(item: Any) -> Any:
    if isinstance(item, dict):
        return {
            k: _strip_directives(v)
            for k, v in item.items()
            if k not in (_DIRECTIVE, _RETAIN) and not k.startswith((_ORDER, _DELETE_PRIMITIVE))
        }
    if isinstance(item, list):
        return [_strip_directives(v) for v in item]
    return copy.deepcopy(item)
