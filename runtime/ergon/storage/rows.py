"""Records as table rows and back, once for every adapter.

A flow row and a step row have one column order (`FLOW_COLUMNS`, `STEP_COLUMNS`), used by the
SQL stores' statements and by the Redis store's step records. Mapping a row to a `FlowStatus` or
a `StepRecord` happens here only; each adapter passes how its driver spells a time (SQLite: a
float of seconds, Redis: integer microseconds, asyncpg: a `datetime` already).

Errors and suspension reasons are stored as small JSON objects (`error_to_json`,
`reason_to_json`), readable in ad-hoc queries; payloads stay the JSON text the core made.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Protocol

from ergon.core.errors import ErrorInfo
from ergon.core.records import FlowStatus, StepRecord, SuspendReason, key_tuple

FLOW_COLUMNS: tuple[str, ...] = (
    "id",
    "flow",
    "input",
    "state",
    "version",
    "parent_id",
    "result",
    "error",
    "waiting_for",
    "wake_at",
    "attempts",
    "epoch",
    "lease_owner",
    "lease_expires_at",
    "cancel_requested",
    "events",
    "created_at",
    "updated_at",
    "origin",
)
STEP_COLUMNS: tuple[str, ...] = (
    "key",
    "name",
    "kind",
    "state",
    "attempts",
    "result",
    "error",
    "started_at",
    "completed_at",
    "fire_at",
    "flow_attempt",
    "args_hash",
)
FLOW_COLUMN_LIST = ", ".join(FLOW_COLUMNS)
STEP_COLUMN_LIST = ", ".join(STEP_COLUMNS)

ReadTime = Callable[[Any], datetime | None]
WriteTime = Callable[[datetime | None], Any]


class Row(Protocol):
    """A driver's row: indexable by column position (a tuple, an `asyncpg.Record`)."""

    def __getitem__(self, index: int, /) -> Any: ...


def as_is(value: Any) -> Any:
    """The time conversion for drivers that hand back (and take) `datetime`s."""
    return value


def flow_from_row(row: Row, time: ReadTime = as_is) -> FlowStatus:
    """A flow from its columns in `FLOW_COLUMNS` order."""
    return FlowStatus(
        id=row[0],
        flow=row[1],
        input=row[2],
        state=row[3],
        version=row[4],
        parent_id=row[5],
        result=row[6],
        error=error_from_json(row[7]),
        waiting_for=reason_from_json(row[8]),
        wake_at=time(row[9]),
        attempts=int(row[10]),
        epoch=int(row[11]),
        lease_owner=row[12],
        lease_expires_at=time(row[13]),
        cancel_requested=bool(row[14]),
        events=int(row[15]),
        created_at=_present(time(row[16])),
        updated_at=_present(time(row[17])),
        origin=row[18],
    )


def flow_values(flow: FlowStatus, time: WriteTime = as_is) -> dict[str, Any]:
    """A flow's columns by name (the inverse of `flow_from_row`)."""
    return {
        "id": flow.id,
        "flow": flow.flow,
        "input": flow.input,
        "state": flow.state,
        "version": flow.version,
        "parent_id": flow.parent_id,
        "result": flow.result,
        "error": error_to_json(flow.error),
        "waiting_for": reason_to_json(flow.waiting_for),
        "wake_at": time(flow.wake_at),
        "attempts": flow.attempts,
        "epoch": flow.epoch,
        "lease_owner": flow.lease_owner,
        "lease_expires_at": time(flow.lease_expires_at),
        "cancel_requested": flow.cancel_requested,
        "events": flow.events,
        "created_at": time(flow.created_at),
        "updated_at": time(flow.updated_at),
        "origin": flow.origin,
    }


def steps_from_rows(rows: Iterable[Row], time: ReadTime = as_is) -> list[StepRecord]:
    """Steps from their columns in `STEP_COLUMNS` order, sorted by key."""
    steps = [
        StepRecord(
            key=r[0],
            name=r[1],
            kind=r[2],
            state=r[3],
            attempts=r[4],
            result=r[5],
            error=error_from_json(r[6]),
            started_at=time(r[7]),
            completed_at=time(r[8]),
            fire_at=time(r[9]),
            flow_attempt=r[10],
            args_hash=r[11],
        )
        for r in rows
    ]
    steps.sort(key=lambda s: key_tuple(s.key))
    return steps


def step_values(step: StepRecord, time: WriteTime = as_is) -> tuple[Any, ...]:
    """A step's columns in `STEP_COLUMNS` order."""
    return (
        step.key,
        step.name,
        step.kind,
        step.state,
        step.attempts,
        step.result,
        error_to_json(step.error),
        time(step.started_at),
        time(step.completed_at),
        time(step.fire_at),
        step.flow_attempt,
        step.args_hash,
    )


def _present(value: datetime | None) -> datetime:
    if value is None:
        raise ValueError("a flow row without its creation or update time")
    return value


# --- JSON columns --------------------------------------------------------------------------


def error_to_json(error: ErrorInfo | None) -> str | None:
    if error is None:
        return None
    data: dict[str, object] = {
        "type": error.type,
        "message": error.message,
        "retryable": error.retryable,
    }
    if error.module:
        data["module"] = error.module
    if error.args:
        data["args"] = list(error.args)
    return json.dumps(data)


def error_from_json(text: str | None) -> ErrorInfo | None:
    if not text:
        return None
    data = json.loads(text)
    return ErrorInfo(
        type=str(data["type"]),
        message=str(data["message"]),
        retryable=bool(data.get("retryable", True)),
        module=data.get("module"),
        args=tuple(data.get("args", ())),
    )


def reason_to_json(reason: SuspendReason | None) -> str | None:
    if reason is None:
        return None
    data: dict[str, object] = {"kind": reason.kind}
    if reason.name is not None:
        data["name"] = reason.name
    if reason.fire_at is not None:
        data["fire_at"] = reason.fire_at.isoformat()
    return json.dumps(data)


def reason_from_json(text: str | None) -> SuspendReason | None:
    if not text:
        return None
    data = json.loads(text)
    fire_at = data.get("fire_at")
    return SuspendReason(
        kind=data["kind"],
        name=data.get("name"),
        fire_at=datetime.fromisoformat(fire_at) if fire_at else None,
    )
