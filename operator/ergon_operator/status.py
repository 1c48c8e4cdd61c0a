"""Pieces of a FlowRun's status: conditions, the waiting summary, results, errors, step counts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ergon import ErrorInfo, StepRecord, SuspendReason, redact
from ergon_operator.resources import Condition, FlowRunError, format_time

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


def error_value(error: ErrorInfo | None) -> FlowRunError | None:
    if error is None:
        return None
    return FlowRunError(type=error.type, message=redact(error.message), retryable=error.retryable)


def conditions(
    previous: Sequence[Condition],
    *,
    phase: str,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> list[Condition]:
    """`Succeeded` (Unknown until the run ends) and `Ready` (False once it failed or was cancelled),
    keeping `lastTransitionTime` when a condition's status does not change."""
    succeeded = {"Succeeded": "True", "Failed": "False", "Cancelled": "False"}.get(phase, "Unknown")
    ready = "False" if phase in ("Failed", "Cancelled") else "True"
    before = {c.type: c for c in previous}
    result = []
    for kind, status in (("Succeeded", succeeded), ("Ready", ready)):
        old = before.get(kind)
        changed = old is None or old.status != status
        result.append(
            Condition(
                type=kind,
                status=status,
                reason=reason,
                message=redact(message),
                last_transition_time=format_time(now)
                if changed or old is None
                else old.last_transition_time,
                observed_generation=generation,
            )
        )
    return result
