"""Pieces of a FlowRun's status: conditions, the waiting summary, results, errors, step counts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ergon import ErrorInfo, StepRecord, SuspendReason, redact
from ergon_operator.resources import START_PROBLEMS, Condition, FlowRunError, format_time

MAX_RESULT_BYTES = 4096
PREVIEW_BYTES = 1024
# The CRD's maxLength for condition messages and `status.error.message`: a longer one makes the
# API refuse the whole status patch (422) and the run's status would never change again.
MAX_MESSAGE = 32768
# Reasons under which a run that has not ended is still not Ready: it is not progressing on its
# own (waiting for a retry or a worker slot, or its pod cannot start).
NOT_READY_REASONS = START_PROBLEMS | {
    "BackoffRetry",
    "Queued",
    "PodRejected",
    "Unschedulable",
    "Recording",
    "WorkerPoolNotFound",
}


def truncate(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text` cut to at most `limit` UTF-8 bytes (so at most `limit` characters too), ending in
    a marker saying how much was cut; never splits a character."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    marker = f"… [truncated {len(data) - limit} bytes]"
    keep = limit - len(marker.encode()) - 16  # room for the marker's count to grow
    head = data[: max(keep, 0)].decode("utf-8", "ignore")
    cut = len(data) - len(head.encode("utf-8", "surrogatepass"))
    return f"{head}… [truncated {cut} bytes]"


@dataclass(frozen=True, slots=True)
class StepSummary:
    completed: int
    current: str | None

    @classmethod
    def of(cls, steps: Sequence[StepRecord]) -> StepSummary:
        """STEPS counts completed steps only: sleeps, signal waits and child flows are shown by
        WAITING while they last, not counted as steps."""
        completed = sum(1 for s in steps if s.kind == "step" and s.state == "completed")
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
    preview = text.encode("utf-8", "surrogatepass")[:PREVIEW_BYTES].decode("utf-8", "ignore")
    return {"truncated": True, "size": len(text.encode()), "preview": preview}


def error_value(error: ErrorInfo | None) -> FlowRunError | None:
    if error is None:
        return None
    return FlowRunError(
        type=truncate(error.type, 1024),
        message=truncate(redact(error.message)),
        retryable=error.retryable,
    )


def conditions(
    previous: Sequence[Condition],
    *,
    phase: str,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> list[Condition]:
    """`Succeeded` (Unknown until the run ends) and `Ready` (True while the run progresses or
    waits normally, or has succeeded; False once it failed or was cancelled, and while it waits
    for a retry or a worker slot or its pod cannot start), keeping `lastTransitionTime` when a
    condition's status does not change."""
    succeeded = {"Succeeded": "True", "Failed": "False", "Cancelled": "False"}.get(phase, "Unknown")
    not_ready = phase in ("Failed", "Cancelled") or reason in NOT_READY_REASONS
    ready = "False" if not_ready else "True"
    message = truncate(redact(message))
    before = {c.type: c for c in previous}
    result = []
    for kind, status in (("Succeeded", succeeded), ("Ready", ready)):
        old = before.get(kind)
        changed = old is None or old.status != status
        result.append(
            Condition(
                type=kind,
                status=status,
                reason=truncate(reason, 1024),
                message=message,
                last_transition_time=format_time(now)
                if changed or old is None
                else old.last_transition_time,
                observed_generation=generation,
            )
        )
    return result
