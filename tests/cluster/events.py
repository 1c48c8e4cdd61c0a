"""Core ``v1`` Events and ``events.k8s.io/v1`` Events are one resource seen two ways.

A real server stores one kind and converts; so does this one: the store holds core/v1 Events,
and requests through ``events.k8s.io/v1`` are converted on the way in and out, so an Event
posted by kopf (core) is listed by ``kubectl events`` (events.k8s.io) and the other way round.
"""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]

# (core field, events.k8s.io field)
_RENAMED = (
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("count", "deprecatedCount"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("source", "deprecatedSource"),
    ("reportingComponent", "reportingController"),
)
_SHARED = (
    "metadata",
    "reason",
    "type",
    "action",
    "related",
    "series",
    "eventTime",
    "reportingInstance",
)


def to_events_v1(core: JSON) -> JSON:
    out: JSON = {"kind": "Event", "apiVersion": "events.k8s.io/v1"}
    for key in _SHARED:
        if key in core:
            out[key] = core[key]
    for old, new in _RENAMED:
        if core.get(old) not in (None, "", {}):
            out[new] = core[old]
    source = core.get("source") or {}
    if "reportingController" not in out and source.get("component"):
        out["reportingController"] = source["component"]
    if "reportingInstance" not in out and source.get("host"):
        out["reportingInstance"] = source["host"]
    return out


def to_core(event: JSON) -> JSON:
    out: JSON = {"kind": "Event", "apiVersion": "v1"}
    for key in _SHARED:
        if key in event:
            out[key] = event[key]
    for old, new in _RENAMED:
        if new in event:
            out[old] = event[new]
    out.setdefault("involvedObject", {})
    return out
