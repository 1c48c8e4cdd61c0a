"""Server-side apply and ``metadata.managedFields``.

Ownership is tracked as sets of field paths per manager entry (manager, operation, subresource),
the same model as structured-merge-diff, with paths made of the elements the ``FieldsV1`` format
uses: ``f:name`` (a map key), ``k:{"name":"x"}`` (an item of a list-map), ``v:"x"`` (an item of a
set). That is enough for what kubectl ``apply --server-side`` and Helm 4 rely on:

- applying creates or merges (maps field by field, list-maps by key, sets as unions, other lists
  and scalars replaced);
- fields a manager applied before and omits now are removed, unless another manager owns them;
- applying a different value to a field another manager owns is a 409 ``Conflict`` listing the
  fields, unless ``force=true``, which takes the fields over;
- every non-apply write (create, update, patch) moves the fields it changed to its manager.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .errors import ApiError, Cause
from .schemas import SchemaNode

JSON = dict[str, Any]
Path = tuple[str, ...]

_IGNORED_METADATA = frozenset(
    {
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
        "generateName",
    }
)


@dataclass
class Entry:
    manager: str
    operation: str
    subresource: str
    api_version: str
    time: str
    fields: dict[Path, Any]  # path -> leaf value (None for non-leaf members such as list items)

    def as_json(self) -> JSON:
        out: JSON = {
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": to_fields_v1(self.fields),
        }
        if self.subresource:
            out["subresource"] = self.subresource
        return out


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# field sets


def field_set(obj: JSON, node: SchemaNode, *, root_only: str | None = None) -> dict[Path, Any]:
    """Owned paths in ``obj`` with their leaf values; ``root_only`` keeps one top-level field."""
    out: dict[Path, Any] = {}
    for key, value in obj.items():
        if key in ("apiVersion", "kind") or (root_only is not None and key not in (root_only,)):
            continue
        child = node.field(key) or SchemaNode({})
        if key == "metadata" and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in _IGNORED_METADATA}
            if not value:
                continue
        _collect(value, child, (f"f:{key}",), out)
    return out


def _collect(value: Any, node: SchemaNode, path: Path, out: dict[Path, Any]) -> None:
    if isinstance(value, dict) and value and node.map_type != "atomic":
        for key, item in value.items():
            _collect(item, node.field(key) or SchemaNode({}), (*path, f"f:{key}"), out)
        return
    if isinstance(value, list) and value and node.list_type in ("map", "set"):
        items = node.items() or SchemaNode({})
        for item in value:
            element = _element(item, node)
            if element is None:
                out[path] = value
                return
            if node.list_type == "map" and isinstance(item, dict):
                out[(*path, element)] = None
                for key, sub in item.items():
                    child = items.field(key) or SchemaNode({})
                    _collect(sub, child, (*path, element, f"f:{key}"), out)
            else:
                out[(*path, element)] = item
        return
    out[path] = value


def _element(item: Any, node: SchemaNode) -> str | None:
    if node.list_type == "set":
        return "v:" + json.dumps(item, separators=(",", ":"), sort_keys=True)
    if not isinstance(item, dict) or not node.map_keys:
        return None
    keys = {k: item.get(k) for k in node.map_keys if k in item}
    return "k:" + json.dumps(keys, separators=(",", ":"), sort_keys=True)


def to_fields_v1(fields: Iterable[Path]) -> JSON:
    tree: JSON = {}
    for path in sorted(fields):
        current = tree
        for element in path:
            current = current.setdefault(element, {})
    for path in fields:  # a member that also has children is marked with "."
        current = tree
        for element in path:
            current = current[element]
        if current and "." not in current:
            current["."] = {}
    return tree


def from_fields_v1(tree: JSON, prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    for element, sub in tree.items():
        if element == ".":
            out.add(prefix)
        elif isinstance(sub, dict) and sub:
            out |= from_fields_v1(sub, (*prefix, element))
        else:
            out.add((*prefix, element))
    return out


def render_path(path: Path) -> str:
    """``.spec.containers[name="x"].image``: how conflicts name a field."""
    out = ""
    for element in path:
        kind, _, body = element.partition(":")
        if kind == "f":
            out += f".{body}"
        elif kind == "k":
            keys = json.loads(body)
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in keys.items()) + "]"
        else:
            out += f"[={body}]"
    return out


# reading and writing stored entries


def load_entries(obj: JSON) -> list[Entry]:
    entries = []
    for raw in obj.get("metadata", {}).get("managedFields") or []:
        if not isinstance(raw, dict) or "manager" not in raw:
            continue
        paths = from_fields_v1(raw.get("fieldsV1") or {})
        entries.append(
            Entry(
                manager=str(raw["manager"]),
                operation=str(raw.get("operation", "Update")),
                subresource=str(raw.get("subresource", "")),
                api_version=str(raw.get("apiVersion", "")),
                time=str(raw.get("time", "")),
                fields={p: _MISSING_VALUE for p in paths},
            )
        )
    return entries


_MISSING_VALUE = object()


def store_entries(obj: JSON, entries: list[Entry]) -> None:
    kept = [entry.as_json() for entry in entries if entry.fields]
    if kept:
        obj["metadata"]["managedFields"] = kept
    else:
        obj["metadata"].pop("managedFields", None)


def record_update(
    old: JSON | None,
    new: JSON,
    node: SchemaNode,
    *,
    manager: str,
    subresource: str = "",
) -> None:
    """Give ``manager`` the fields a create/update/patch changed; set ``new``'s managedFields."""
    root_only = "status" if subresource == "status" else None
    before = field_set(old, node, root_only=root_only) if old is not None else {}
    after = field_set(new, node, root_only=root_only)
    changed = {p for p, v in after.items() if p not in before or before[p] != v}
    gone = set(before) - set(after)
    entries = load_entries(old) if old is not None else []
    for entry in entries:
        for path in changed | gone:
            entry.fields.pop(path, None)
    if changed:
        mine = _find(entries, manager, "Update", subresource)
        if mine is None:
            mine = Entry(manager, "Update", subresource, str(new.get("apiVersion", "")), now(), {})
            entries.append(mine)
        mine.fields.update({p: after[p] for p in changed})
        mine.time = now()
    store_entries(new, entries)


def _find(entries: list[Entry], manager: str, operation: str, subresource: str) -> Entry | None:
    for entry in entries:
        if (entry.manager, entry.operation, entry.subresource) == (manager, operation, subresource):
            return entry
    return None


# apply


def apply(
    live: JSON | None,
    config: JSON,
    node: SchemaNode,
    *,
    manager: str,
    force: bool,
    subresource: str = "",
) -> JSON:
    """The object after ``manager`` applies ``config`` to ``live`` (None: it does not exist)."""
    root_only = "status" if subresource == "status" else None
    applied = field_set(config, node, root_only=root_only)
    entries = load_entries(live) if live is not None else []
    merged: JSON = copy.deepcopy(live) if live is not None else {}
    if live is not None:
        current = field_set(live, node, root_only=root_only)
        _check_conflicts(entries, applied, current, manager, subresource, force)
    merged = dict(_merge(merged, config, node))
    previous = _find(entries, manager, "Apply", subresource)
    if previous is not None:
        others: set[Path] = set()
        for entry in entries:
            if entry is not previous:
                others |= set(entry.fields)
        doomed = set(previous.fields) - set(applied) - others
        for path in sorted(doomed, key=len, reverse=True):
            _delete_path(merged, path)
            _drop_emptied_parents(merged, path, set(applied) | others)
    else:
        api_version = str(config.get("apiVersion", ""))
        previous = Entry(manager, "Apply", subresource, api_version, now(), {})
        entries.append(previous)
    previous.fields = dict(applied)
    previous.api_version = str(config.get("apiVersion", previous.api_version))
    previous.time = now()
    merged.setdefault("metadata", {})
    store_entries(merged, entries)
    return merged


def _check_conflicts(
    entries: list[Entry],
    applied: dict[Path, Any],
    current: dict[Path, Any],
    manager: str,
    subresource: str,
    force: bool,
) -> None:
    conflicts: list[tuple[Entry, Path]] = []
    for entry in entries:
        if entry.manager == manager or entry.subresource != subresource:
            continue  # a manager never conflicts with itself, whatever the operation
        for path in applied.keys() & entry.fields.keys():
            if path in current and current[path] != applied[path]:
                conflicts.append((entry, path))
    if not conflicts:
        return
    if force:
        for entry, path in conflicts:
            entry.fields.pop(path, None)
        return
    causes = [
        Cause(
            "FieldManagerConflict",
            f'conflict with "{entry.manager}"'
            + (f" using {entry.api_version}" if entry.operation == "Update" else ""),
            render_path(path),
        )
        for entry, path in conflicts
    ]
    count = len(causes)
    listing = (
        "\n".join(f"- {c.message}: {c.field}" for c in causes)
        if count > 1
        else (f"{causes[0].message}: {causes[0].field}")
    )
    message = f"Apply failed with {count} conflict{'s' if count > 1 else ''}: {listing}"
    raise ApiError(409, "Conflict", message, {}, causes)


def _merge(live: Any, config: Any, node: SchemaNode) -> Any:
    if isinstance(config, dict) and isinstance(live, dict) and node.map_type != "atomic":
        out = dict(live)
        for key, value in config.items():
            out[key] = _merge(live.get(key), value, node.field(key) or SchemaNode({}))
        return out
    if isinstance(config, list) and isinstance(live, list) and node.list_type in ("map", "set"):
        if node.list_type == "set":
            return list(live) + [copy.deepcopy(v) for v in config if v not in live]
        out_list = list(live)
        items = node.items() or SchemaNode({})
        for item in config:
            element = _element(item, node)
            position = next(
                (i for i, existing in enumerate(out_list) if _element(existing, node) == element),
                None,
            )
            if position is None:
                out_list.append(copy.deepcopy(item))
            else:
                out_list[position] = _merge(out_list[position], item, items)
        return out_list
    return copy.deepcopy(config)


def _delete_path(obj: Any, path: Path) -> None:
    current = obj
    for element in path[:-1]:
        current = _step(current, element)
        if current is None:
            return
    last = path[-1]
    kind, _, body = last.partition(":")
    if kind == "f" and isinstance(current, dict):
        current.pop(body, None)
    elif isinstance(current, list):
        current[:] = [item for item in current if not _matches(item, kind, body)]


def _drop_emptied_parents(obj: JSON, path: Path, owned: set[Path]) -> None:
    """Removing the last field of a map leaves no empty map behind, unless someone owns it."""
    for depth in range(len(path) - 1, 0, -1):
        parent_path = path[:depth]
        if parent_path in owned or any(p[:depth] == parent_path for p in owned):
            return
        current: Any = obj
        for element in parent_path:
            current = _step(current, element)
        if current not in ({}, []):
            return
        _delete_path(obj, parent_path)


def _step(current: Any, element: str) -> Any:
    kind, _, body = element.partition(":")
    if kind == "f":
        return current.get(body) if isinstance(current, dict) else None
    if isinstance(current, list):
        return next((item for item in current if _matches(item, kind, body)), None)
    return None


def _matches(item: Any, kind: str, body: str) -> bool:
    if kind == "v":
        return bool(json.dumps(item, separators=(",", ":"), sort_keys=True) == body)
    if kind == "k" and isinstance(item, dict):
        keys = json.loads(body)
        return all(item.get(k) == v for k, v in keys.items())
    return False
