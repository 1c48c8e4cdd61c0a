"""Pieces of a FlowRun's status: conditions, the waiting summary, results, errors, step counts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ergon import FlowError, StepRecord, SuspendReason
from ergon.core.redaction import redact
from ergon_operator.resources import format_time

MAX_RESULT_BYTES = 4096
PREVIEW_BYTES = 1024


@dataclass(frozen=True, slots=True)
class StepSummary:
    completed: int
    current: str | None

    @classmethod
    def of(cls, steps: Sequence[StepRecord]) -> StepSummary:
        completed = sum(1 for s in steps if s.state == "completed")
        return cls(completed, steps[-1].name if steps else None)


def waiting_for(reason: SuspendReason | None) -> tuple[dict[str, str] | None, str]:
    """`status.waitingFor` and the one-line `status.waiting` for a suspension."""
    if reason is None:
        return None, ""
    when = format_time(reason.fire_at) or ""
    if reason.kind == "signal":
        return {"signal": reason.name or ""}, f"signal:{reason.name}"
    if reason.kind == "child":
        return {"child": reason.name or ""}, f"child:{reason.name}"
    if reason.kind == "retry":
        return {"timer": when}, f"retry:{when}"
    return {"timer": when}, f"timer:{when}"


def result_value(text: str | None) -> Any:
    """The flow's result for `status.result`; large ones are truncated with a marker."""
    if text is None:
        return None
    if len(text.encode()) <= MAX_RESULT_BYTES:
        return json.loads(text)
    return {"truncated": True, "size": len(text.encode()), "preview": text[:PREVIEW_BYTES]}


def error_value(error: FlowError | None) -> dict[str, Any] | None:
    if error is None:
        return None
    return {"type": error.type, "message": redact(error.message), "retryable": error.retryable}


def conditions(
    previous: Sequence[dict[str, Any]],
    *,
    phase: str,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> list[dict[str, Any]]:
    """`Succeeded` (Unknown until the run ends) and `Ready` (False once it failed or was cancelled),
    keeping `lastTransitionTime` when a condition's status does not change."""
    succeeded = {"Succeeded": "True", "Failed": "False", "Cancelled": "False"}.get(phase, "Unknown")
    ready = "False" if phase in ("Failed", "Cancelled") else "True"
    before = {c.get("type"): c for c in previous if isinstance(c, dict)}
    result = []
    for kind, status in (("Succeeded", succeeded), ("Ready", ready)):
        old = before.get(kind) or {}
        changed = old.get("status") != status
        result.append(
            {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": redact(message),
                "lastTransitionTime": format_time(now)
                if changed
                else old.get("lastTransitionTime"),
                "observedGeneration": generation,
            }
        )
    return result
