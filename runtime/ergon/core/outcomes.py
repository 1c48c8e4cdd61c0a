"""What one execution of a flow ends in, and the outcome a recorded flow stands at."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ergon.core import codec
from ergon.core.errors import ErrorInfo, FailureCode
from ergon.core.records import FlowStatus, SuspendReason


@dataclass(frozen=True, slots=True)
class Completed:
    """The flow returned `value`."""

    value: Any


@dataclass(frozen=True, slots=True)
class Failed:
    """The flow raised; `error` is what was recorded."""

    error: ErrorInfo


@dataclass(frozen=True, slots=True)
class Suspended:
    """The flow is waiting; executing it again later resumes it."""

    reason: SuspendReason


@dataclass(frozen=True, slots=True)
class Cancelled:
    """The flow was cancelled through `Client.cancel`."""


Outcome = Completed | Failed | Suspended | Cancelled


def outcome_of(status: FlowStatus) -> Outcome:
    """The outcome a recorded flow stands at: how it ended, or (for a flow that has not ended)
    `Suspended` with what it waits for."""
    if status.state == "completed":
        return Completed(codec.load(status.result or "null"))
    if status.state == "failed":
        return Failed(status.error or ErrorInfo(FailureCode.UNKNOWN, "flow failed", False))
    if status.state == "cancelled":
        return Cancelled()
    return Suspended(status.waiting_for or SuspendReason("child", status.id, None))
