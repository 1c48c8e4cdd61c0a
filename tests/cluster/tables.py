"""``meta.k8s.io/v1`` Tables: what ``kubectl get`` prints, computed by the server.

kubectl asks for ``application/json;as=Table;v=v1;g=meta.k8s.io`` and prints the columns it gets
back. Custom resources use their CRD's ``additionalPrinterColumns`` (``date`` columns rendered as
ages, like the real table convertor); a few built-in kinds that people look at get their familiar
columns; every other kind gets NAME and CREATED AT, as kube-apiserver's default convertor does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .resources import ResourceType

JSON = dict[str, Any]
Column = tuple[str, str, str, int]  # name, type, format, priority
Cells = Callable[[JSON], list[Any]]


def human_age(stamp: Any, now: datetime | None = None) -> str:
    """``duration.HumanDuration`` of the time since ``stamp`` (an RFC 3339 string)."""
    if not isinstance(stamp, str) or not stamp:
        return "<unknown>"
    try:
        then = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return "<invalid>"
    seconds = int(((now or datetime.now(UTC)) - then).total_seconds())
    if seconds < -1:
        return "<invalid>"
    seconds = max(seconds, 0)
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 730:
        return f"{days}d"
    return f"{days // 365}y{days % 365}d" if days < 2920 else f"{days // 365}y"


def json_path(obj: Any, path: str) -> list[Any]:
    """Results of a simple JSONPath (``.a.b``, ``.a[0].b``, ``.a[*].b``); empty if absent."""
    current = [obj]
    path = path.strip().strip("{}").lstrip("$")
    for part in _split(path):
        step: list[Any] = []
        name, _, index = part.partition("[")
        for value in current:
            if name:
                value = value.get(name) if isinstance(value, dict) else None
            if index:
                wanted = index.rstrip("]")
                if not isinstance(value, list):
                    continue
                if wanted == "*":
                    step.extend(value)
                    continue
                try:
                    value = value[int(wanted)]
                except (ValueError, IndexError):
                    continue
            if value is not None:
                step.append(value)
        current = step
    return current


def _split(path: str) -> list[str]:
    parts, current, escaped = [], "", False
    for char in path:
        if escaped:
            current += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ".":
            if current:
                parts.append(current)
            current = ""
        else:
            current += char
    if current:
        parts.append(current)
    return parts


def to_table(
    rtype: ResourceType, objects: list[JSON], include_object: str, list_meta: JSON
) -> JSON:
    columns, cells = _columns(rtype)
    rows = []
    for obj in objects:
        row: JSON = {"cells": cells(obj)}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata", {}),
            }
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": [
            {"name": name, "type": kind, "format": fmt, "description": name, "priority": priority}
            for name, kind, fmt, priority in columns
        ],
        "rows": rows,
    }


def _columns(rtype: ResourceType) -> tuple[list[Column], Cells]:
    if rtype.custom:
        return _custom_columns(rtype)
    builtin = _BUILTIN.get(rtype.kind)
    if builtin is not None:
        return builtin
    return (
        [("Name", "string", "name", 0), ("Created At", "date", "", 0)],
        lambda o: [_name(o), o["metadata"].get("creationTimestamp")],
    )


def _custom_columns(rtype: ResourceType) -> tuple[list[Column], Cells]:
    specs = list(rtype.printer_columns)
    if not specs:
        return (
            [("Name", "string", "name", 0), ("Age", "date", "", 0)],
            lambda o: [_name(o), human_age(o["metadata"].get("creationTimestamp"))],
        )
    columns: list[Column] = [("Name", "string", "name", 0)]
    columns += [
        (
            str(c.get("name")),
            str(c.get("type", "string")),
            str(c.get("format", "")),
            int(c.get("priority", 0)),
        )
        for c in specs
    ]

    def cells(obj: JSON) -> list[Any]:
        out: list[Any] = [_name(obj)]
        for spec in specs:
            found = json_path(obj, str(spec.get("jsonPath", "")))
            out.append(_cell(found, str(spec.get("type", "string"))))
        return out

    return columns, cells


def _cell(found: list[Any], kind: str) -> Any:
    if not found:
        return None
    value = found[0] if len(found) == 1 else found
    if kind == "date":
        return human_age(value)
    if kind in ("integer", "number", "boolean") and not isinstance(value, dict | list):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value) if not isinstance(value, bool) else ("true" if value else "false")


def _name(obj: JSON) -> str:
    return str(obj["metadata"].get("name", ""))


def _age(obj: JSON) -> str:
    return human_age(obj["metadata"].get("creationTimestamp"))


def _pod_status(pod: JSON) -> str:
    if pod["metadata"].get("deletionTimestamp"):
        return "Terminating"
    status = pod.get("status") or {}
    reason = status.get("reason") or status.get("phase") or "Pending"
    for entry in status.get("containerStatuses") or []:
        state = entry.get("state") or {}
        waiting, terminated = state.get("waiting"), state.get("terminated")
        if waiting and waiting.get("reason"):
            reason = waiting["reason"]
        elif terminated:
            reason = terminated.get("reason") or f"ExitCode:{terminated.get('exitCode')}"
    return str(reason)


def _pod_cells(pod: JSON) -> list[Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    total = len((pod.get("spec") or {}).get("containers") or [])
    ready = sum(1 for s in statuses if s.get("ready"))
    restarts = sum(int(s.get("restartCount", 0)) for s in statuses)
    status = pod.get("status") or {}
    return [
        _name(pod),
        f"{ready}/{total}",
        _pod_status(pod),
        restarts,
        _age(pod),
        status.get("podIP") or "<none>",
        (pod.get("spec") or {}).get("nodeName") or "<none>",
        "<none>",
        "<none>",
    ]


def _event_cells(event: JSON) -> list[Any]:
    involved = event.get("involvedObject") or event.get("regarding") or {}
    last = (
        event.get("lastTimestamp")
        or event.get("eventTime")
        or event["metadata"].get("creationTimestamp")
    )
    return [
        human_age(last),
        event.get("type", ""),
        event.get("reason", ""),
        f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}",
        event.get("message") or event.get("note") or "",
    ]


def _workload_cells(obj: JSON) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return [
        _name(obj),
        f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
        status.get("updatedReplicas", 0),
        status.get("availableReplicas", 0),
        _age(obj),
    ]


def _service_cells(svc: JSON) -> list[Any]:
    spec = svc.get("spec") or {}
    ports = ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in spec.get("ports") or [])
    return [
        _name(svc),
        spec.get("type", "ClusterIP"),
        spec.get("clusterIP", "<none>"),
        "<none>",
        ports or "<none>",
        _age(svc),
    ]


_N: Column = ("Name", "string", "name", 0)
_AGE: Column = ("Age", "string", "", 0)
_BUILTIN: dict[str, tuple[list[Column], Cells]] = {
    "Pod": (
        [
            _N,
            ("Ready", "string", "", 0),
            ("Status", "string", "", 0),
            ("Restarts", "string", "", 0),
            _AGE,
            ("IP", "string", "", 1),
            ("Node", "string", "", 1),
            ("Nominated Node", "string", "", 1),
            ("Readiness Gates", "string", "", 1),
        ],
        _pod_cells,
    ),
    "Namespace": (
        [_N, ("Status", "string", "", 0), _AGE],
        lambda o: [_name(o), (o.get("status") or {}).get("phase", ""), _age(o)],
    ),
    "ConfigMap": (
        [_N, ("Data", "integer", "", 0), _AGE],
        lambda o: [_name(o), len(o.get("data") or {}) + len(o.get("binaryData") or {}), _age(o)],
    ),
    "Secret": (
        [_N, ("Type", "string", "", 0), ("Data", "integer", "", 0), _AGE],
        lambda o: [_name(o), o.get("type", ""), len(o.get("data") or {}), _age(o)],
    ),
    "ServiceAccount": (
        [_N, ("Secrets", "integer", "", 0), _AGE],
        lambda o: [_name(o), len(o.get("secrets") or []), _age(o)],
    ),
    "Deployment": (
        [
            _N,
            ("Ready", "string", "", 0),
            ("Up-to-date", "integer", "", 0),
            ("Available", "integer", "", 0),
            _AGE,
        ],
        _workload_cells,
    ),
    "StatefulSet": (
        [_N, ("Ready", "string", "", 0), _AGE],
        lambda o: [
            _name(o),
            f"{(o.get('status') or {}).get('readyReplicas', 0)}/"
            f"{(o.get('spec') or {}).get('replicas', 1)}",
            _age(o),
        ],
    ),
    "ReplicaSet": (
        [
            _N,
            ("Desired", "integer", "", 0),
            ("Current", "integer", "", 0),
            ("Ready", "integer", "", 0),
            _AGE,
        ],
        lambda o: [
            _name(o),
            (o.get("spec") or {}).get("replicas", 1),
            (o.get("status") or {}).get("replicas", 0),
            (o.get("status") or {}).get("readyReplicas", 0),
            _age(o),
        ],
    ),
    "Service": (
        [
            _N,
            ("Type", "string", "", 0),
            ("Cluster-IP", "string", "", 0),
            ("External-IP", "string", "", 0),
            ("Port(s)", "string", "", 0),
            _AGE,
        ],
        _service_cells,
    ),
    "Event": (
        [
            ("Last Seen", "string", "", 0),
            ("Type", "string", "", 0),
            ("Reason", "string", "", 0),
            ("Object", "string", "", 0),
            ("Message", "string", "", 0),
        ],
        _event_cells,
    ),
    "Node": (
        [
            _N,
            ("Status", "string", "", 0),
            ("Roles", "string", "", 0),
            _AGE,
            ("Version", "string", "", 0),
        ],
        lambda o: [_name(o), "Ready", "<none>", _age(o), "v1.33.0"],
    ),
    "CustomResourceDefinition": (
        [_N, ("Created At", "date", "", 0)],
        lambda o: [_name(o), o["metadata"].get("creationTimestamp")],
    ),
}
