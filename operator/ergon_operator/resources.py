"""Typed views of the Kubernetes objects the operator reads: FlowRuns, their pods, Signals.

Bodies arrive as plain dicts (from kopf or the API); these views parse only what decisions need,
with defaults for what the API server may omit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

GROUP = "ergon.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
FLOWRUN_LABEL = "ergon.dev/flowrun"
ATTEMPT_LABEL = "ergon.dev/attempt"
SEQUENCE_LABEL = "ergon.dev/pod-sequence"
TERMINAL_PHASES = frozenset({"Succeeded", "Failed", "Cancelled"})


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def format_time(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class RetrySpec:
    max_attempts: int = 3
    backoff_seconds: float = 10.0
    max_backoff_seconds: float = 300.0

    def delay_after(self, attempt: int) -> float:
        """Seconds before pod attempt `attempt + 1`, after pod attempt `attempt` died."""
        return float(min(self.backoff_seconds * 2 ** max(attempt - 1, 0), self.max_backoff_seconds))


@dataclass(frozen=True, slots=True)
class FlowRun:
    namespace: str
    name: str
    uid: str
    generation: int
    created_at: datetime | None
    flow: str
    input: dict[str, Any]
    image: str | None
    version: str | None
    retry: RetrySpec
    timeout_seconds: float | None
    cancel: bool
    signals: dict[str, Any]
    pod_template: dict[str, Any]
    status: dict[str, Any]
    deleting: bool = False

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> FlowRun:
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        retry = spec.get("retry") or {}
        timeout = spec.get("timeoutSeconds")
        return cls(
            namespace=str(meta.get("namespace") or "default"),
            name=str(meta.get("name")),
            uid=str(meta.get("uid")),
            generation=int(meta.get("generation") or 1),
            created_at=parse_time(meta.get("creationTimestamp")),
            flow=str(spec.get("flow") or ""),
            input=dict(spec.get("input") or {}),
            image=spec.get("image") or None,
            version=spec.get("version") or None,
            retry=RetrySpec(
                max_attempts=int(retry.get("maxAttempts", 3)),
                backoff_seconds=float(retry.get("backoffSeconds", 10)),
                max_backoff_seconds=float(retry.get("maxBackoffSeconds", 300)),
            ),
            timeout_seconds=float(timeout) if timeout else None,
            cancel=bool(spec.get("cancel", False)),
            signals=dict(spec.get("signals") or {}),
            pod_template=dict(spec.get("podTemplate") or {}),
            status=dict(body.get("status") or {}),
            deleting=bool(meta.get("deletionTimestamp")),
        )

    @property
    def phase(self) -> str | None:
        phase = self.status.get("phase")
        return phase if isinstance(phase, str) else None

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class Pod:
    """A worker pod of a FlowRun, as much as decisions need."""

    name: str
    sequence: int
    attempt: int
    phase: str
    exit_code: int | None = None
    reason: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    deleting: bool = False

    @property
    def active(self) -> bool:
        """Still running (or about to): the flow may be executing in it."""
        return self.phase in ("Pending", "Running", "Unknown") and not self.deleting

    @property
    def ended(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> Pod:
        meta = body.get("metadata") or {}
        labels = meta.get("labels") or {}
        status = body.get("status") or {}
        exit_code, reason, finished = None, None, None
        for container in status.get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated")
            if terminated:
                exit_code = terminated.get("exitCode")
                reason = terminated.get("reason")
                finished = parse_time(terminated.get("finishedAt"))
        return cls(
            name=str(meta.get("name")),
            sequence=_int(labels.get(SEQUENCE_LABEL)),
            attempt=max(_int(labels.get(ATTEMPT_LABEL)), 1),
            phase=str(status.get("phase") or "Pending"),
            exit_code=exit_code,
            reason=reason or status.get("reason"),
            started_at=parse_time(status.get("startTime")),
            finished_at=finished,
            deleting=bool(meta.get("deletionTimestamp")),
        )


@dataclass(frozen=True, slots=True)
class Signal:
    namespace: str
    name: str
    uid: str
    flow_run: str
    signal: str
    payload: Any
    status: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> Signal:
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        return cls(
            namespace=str(meta.get("namespace") or "default"),
            name=str(meta.get("name")),
            uid=str(meta.get("uid")),
            flow_run=str(spec.get("flowRun") or ""),
            signal=str(spec.get("name") or ""),
            payload=spec.get("payload"),
            status=dict(body.get("status") or {}),
        )

    @property
    def phase(self) -> str:
        return str(self.status.get("phase") or "Pending")


def _int(value: object) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return 0
