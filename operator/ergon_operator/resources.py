"""Typed views of the Kubernetes objects the operator reads: FlowRuns (and the status it
writes on them), their pods, Signals.

Bodies arrive as plain dicts (from kopf or the API); these views parse only what decisions need,
with defaults for what the API server may omit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

GROUP = "ergon.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
FLOWRUN_LABEL = "ergon.dev/flowrun"
ATTEMPT_LABEL = "ergon.dev/attempt"
SEQUENCE_LABEL = "ergon.dev/pod-sequence"
POOL_LABEL = "ergon.dev/workerpool"  # on a worker pool's Deployments and pods
TERMINAL_PHASES = frozenset({"Succeeded", "Failed", "Cancelled"})
POD_GC_STRATEGIES = ("OnPodCompletion", "OnFlowRunCompletion", "OnFlowRunSuccess", "Never")
# Container waiting reasons that mean the pod cannot start on its own (a missing Secret or
# ConfigMap, an image that cannot be pulled); `ContainerCreating` and the like are normal.
START_PROBLEMS = frozenset(
    {
        "CreateContainerConfigError",
        "CreateContainerError",
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "ErrImageNeverPull",
    }
)


def utcnow() -> datetime:
    return datetime.now(UTC)


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


class _Camel(BaseModel):
    """A piece of a resource's status: snake_case in Python, camelCase in the API."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Condition(_Camel):
    type: str
    status: str
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = None
    observed_generation: int | None = None


class FlowRunError(_Camel):
    """`status.error`: the flow's `ergon.ErrorInfo`, its message redacted."""

    type: str
    message: str
    retryable: bool


class FlowRunStatus(_Camel):
    """`FlowRun.status` as the operator writes it (`to_body`) and reads it back (`parse`)."""

    observed_generation: int | None = None
    flow_id: str | None = None
    attempts: int = 0
    pod_name: str | None = None
    steps_completed: int = 0
    current_step: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    last_pod_ended_at: str | None = None
    next_attempt_at: str | None = None
    pod_problem_since: str | None = None
    delivered_signals: list[str] = Field(default_factory=list)
    invalid_signals: list[str] = Field(default_factory=list)
    # What the run is pinned to: the image of its first worker pod (every later pod uses it),
    # or for a run on a worker pool, the pool and the version it was scheduled on.
    image: str | None = None
    version: str | None = None
    worker_pool: str | None = None
    waiting_for: dict[str, str] | None = None
    waiting: str = ""
    result: Any = None
    error: FlowRunError | None = None
    phase: str | None = None
    conditions: list[Condition] = Field(default_factory=list)

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> FlowRunStatus:
        """The status read from the API. A field that does not parse (edited by hand, written
        by another version) is dropped rather than stopping every reconcile of the FlowRun."""
        data = dict(body)
        while True:
            try:
                return cls.model_validate(data)
            except ValidationError as exc:
                bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]} & data.keys()
                if not bad:
                    return cls()
                for key in bad:
                    del data[key]

    def to_body(self) -> dict[str, Any]:
        """The status as the API holds it: camelCase keys, JSON values."""
        return self.model_dump(mode="json", by_alias=True)


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
    status: FlowRunStatus
    status_body: dict[str, Any]  # the status as read, to patch against
    deleting: bool = False
    priority: int = 0
    pod_gc: str | None = None  # spec.podGC.strategy; None: the operator's default
    ttl_seconds_after_finished: int | None = None
    worker_pool: str | None = None  # spec.workerPool: run by that pool's workers, no pod

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> FlowRun:
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        retry = spec.get("retry") or {}
        timeout = spec.get("timeoutSeconds")
        ttl = spec.get("ttlSecondsAfterFinished")
        strategy = (spec.get("podGC") or {}).get("strategy")
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
            status=FlowRunStatus.parse(body.get("status") or {}),
            status_body=dict(body.get("status") or {}),
            deleting=bool(meta.get("deletionTimestamp")),
            priority=_int(spec.get("priority")),
            pod_gc=strategy if strategy in POD_GC_STRATEGIES else None,
            ttl_seconds_after_finished=max(_int(ttl), 0) if ttl is not None else None,
            worker_pool=spec.get("workerPool") or None,
        )

    @property
    def phase(self) -> str | None:
        return self.status.phase

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
    owner_uid: str | None = None  # the controller owner's uid: the FlowRun the pod belongs to
    created_at: datetime | None = None
    # Why a Pending pod does not start: a container waiting reason from START_PROBLEMS, or
    # `Unschedulable`, with the kubelet's or scheduler's message.
    problem: str | None = None
    problem_message: str = ""

    @property
    def active(self) -> bool:
        """Still running (or about to): the flow may be executing in it."""
        return self.phase in ("Pending", "Running", "Unknown") and not self.deleting

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> Pod:
        meta = body.get("metadata") or {}
        labels = meta.get("labels") or {}
        status = body.get("status") or {}
        exit_code, reason, finished = None, None, None
        problem, problem_message = None, ""
        for container in status.get("containerStatuses") or []:
            state = container.get("state") or {}
            terminated = state.get("terminated")
            if terminated:
                exit_code = terminated.get("exitCode")
                reason = terminated.get("reason")
                finished = parse_time(terminated.get("finishedAt"))
            waiting = state.get("waiting") or {}
            if waiting.get("reason") in START_PROBLEMS:
                problem = str(waiting["reason"])
                problem_message = str(waiting.get("message") or "")
        for condition in status.get("conditions") or []:
            unschedulable = condition.get("type") == "PodScheduled" and (
                condition.get("status") == "False"
            )
            if problem is None and unschedulable:
                problem = "Unschedulable"
                problem_message = str(condition.get("message") or "")
        owner = next(
            (o for o in meta.get("ownerReferences") or [] if o.get("controller")),
            None,
        )
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
            owner_uid=str(owner["uid"]) if owner and owner.get("uid") else None,
            created_at=parse_time(meta.get("creationTimestamp")),
            problem=problem,
            problem_message=problem_message,
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
    generation: int = 1

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
            generation=int(meta.get("generation") or 1),
        )

    @property
    def phase(self) -> str:
        return str(self.status.get("phase") or "Pending")


def _int(value: object) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return 0
