"""What one execution of a flow ends in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from ergon.core.errors import FlowError

SuspendKind = Literal["signal", "timer", "child", "retry"]


@dataclass(frozen=True, slots=True)
class SuspendReason:
    """Why a flow stopped without ending.

    `kind` is `"signal"` (waiting for `name`), `"timer"` (until `fire_at`), `"child"` (waiting for
    the child flow whose id is `name`) or `"retry"` (a flow-level retry is due at `fire_at`). A
    signal wait with a timeout carries its deadline in `fire_at` as well.
    """

    kind: SuspendKind
    name: str | None = None
    fire_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Completed:
    """The flow returned `value`."""

    value: Any


@dataclass(frozen=True, slots=True)
class Failed:
    """The flow raised; `error` is what was recorded."""

    error: FlowError


@dataclass(frozen=True, slots=True)
class Suspended:
    """The flow is waiting; executing it again later resumes it."""

    reason: SuspendReason


@dataclass(frozen=True, slots=True)
class Cancelled:
    """The flow was cancelled through `Client.cancel`."""


Outcome = Completed | Failed | Suspended | Cancelled
