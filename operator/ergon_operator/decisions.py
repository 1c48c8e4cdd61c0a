"""What to do about a FlowRun, given what the operator observes. Pure: no I/O, no clock.

The flow record in the store is the truth about the flow; pods are the truth about what is
executing it; the FlowRun's status is only a report of both (and the place the pod-level attempt
count survives a deleted pod). `decide` turns those into a `Plan`; applying a plan twice is
harmless, so the operator can decide again after any event or restart.

Every time a decision depends on comes from a durable fact — the flow record, the FlowRun's
creation, a pod's creation or recorded end, or a time written in status before it is acted on —
never from the moment of the reconcile, so deciding again later reaches the same due times.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ergon import ErrorInfo, ExitCode, FailureCode, FlowStatus
from ergon_operator import pods as pod_specs
from ergon_operator import policy
from ergon_operator.pools import parse_routing
from ergon_operator.resources import (
    START_PROBLEMS,
    TERMINAL_PHASES,
    FlowRun,
    FlowRunStatus,
    Pod,
    Signal,
    format_time,
    parse_time,
)
from ergon_operator.settings import Settings
from ergon_operator.signals import invalid_spec_signals
from ergon_operator.status import (
    StepSummary,
    conditions,
    error_value,
    result_value,
    truncate,
    waiting_for,
)

# Failure codes shown as the reason of the `Failed` condition and of the Warning Event; any
# other failure is `FlowFailed` on the condition and `Failed` on the Event.
REASON_CODES = frozenset(
    {
        FailureCode.INVALID_FLOW,
        FailureCode.INVALID_INPUT,
        FailureCode.RETRIES_EXHAUSTED,
        FailureCode.DEADLINE_EXCEEDED,
    }
)
FLOW_FAILED = "FlowFailed"
POD_REJECTED = "PodRejected"
INVALID_SIGNAL = "InvalidSignal"
POOL_NOT_FOUND = "WorkerPoolNotFound"
# The namespace's store (ERGON_TENANCY=namespace) cannot be set up yet: the run waits.
PROVISIONING_STORE = "ProvisioningStore"
STORE_PROVISIONING_FAILED = "StoreProvisioningFailed"
POD_START_REASONS = frozenset({*START_PROBLEMS, "Unschedulable", POD_REJECTED})
# Failures the operator records itself, shown with their own reason: the pod never started, or
# was never created because the FlowRun breaks the worker policy.
OPERATOR_FAILURES = POD_START_REASONS | {policy.POLICY_VIOLATION}
IMAGE_PULL = frozenset({"ErrImagePull", "ImagePullBackOff"})  # the kubelet alternates these
MAX_EVENT_MESSAGE = 1024  # what `kubectl describe` shows in full; Events are a summary


@dataclass(frozen=True, slots=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Plan:
    """What the reconciler should do, in order: end the flow record, delete pods, create a pod,
    write the status, emit events, and come back at `wake_at`.

    `queued`: a pod is wanted but no worker slot is free (no pod in `create_pod`; the status says
    `Queued`). `delete_flowrun`: the run ended longer than its TTL ago."""

    status: FlowRunStatus
    create_pod: dict[str, Any] | None = None
    delete_pods: list[str] = field(default_factory=list)
    cancel_flow: bool = False
    fail_flow: ErrorInfo | None = None
    events: list[Event] = field(default_factory=list)
    wake_at: datetime | None = None
    queued: bool = False
    delete_flowrun: bool = False

    def wake(self, when: datetime) -> None:
        self.wake_at = when if self.wake_at is None else min(self.wake_at, when)

    def event(self, kind: str, reason: str, message: str) -> None:
        self.events.append(Event(kind, reason, truncate(message, MAX_EVENT_MESSAGE)))


@dataclass(frozen=True, slots=True)
class Observed:
    """What one reconcile saw. `pods`: worker pods of the run's namespace (decide keeps those the
    run owns, by uid); `signals`: the run's Signal resources; `slot_free`: whether a new worker
    pod may start now under the concurrency limits; `pod_rejected`: the API's message when the
    last attempt to create this run's pod was refused (quota, admission, missing account)."""

    run: FlowRun
    flow: FlowStatus | None
    steps: StepSummary
    pods: list[Pod]
    now: datetime
    signals: list[Signal] = field(default_factory=list)
    slot_free: bool = True
    pod_rejected: str | None = None
    # spec.workerPool names no WorkerPool (or one being deleted): the flow is not recorded yet,
    # or it waits for workers that do not exist.
    pool_missing: bool = False
    pool_image: str | None = None  # the image of the pool version the run is scheduled on
    # Why the namespace's store cannot be set up (tenant provisioning failed), or None. The
    # flow is then unknown (`flow` None) and the run waits.
    store_problem: str | None = None


def decide(seen: Observed, settings: Settings) -> Plan:
    run, flow, now = seen.run, seen.flow, seen.now
    pods = sorted((p for p in seen.pods if p.owner_uid == run.uid), key=lambda p: p.sequence)
    active = [p for p in pods if p.active]
    latest = pods[-1] if pods else None
    status = _base_status(seen, pods, latest)
    plan = Plan(status=status)
    _report_invalid_signals(plan, run)

    if seen.store_problem is not None and run.cancel:
        # Cancelled while its namespace's store cannot be set up: nothing of it runs (its pods
        # go); a flow recorded before is cancelled once the store is back (flow not terminal,
        # spec.cancel).
        plan.delete_pods = [p.name for p in active]
        status.completed_at = status.completed_at or format_time(now)
        return _report(plan, run, "Cancelled", "Cancelled", "cancelled by spec.cancel", now)
    if seen.store_problem is not None:
        message = f"waiting for the namespace's store: {seen.store_problem}"
        if {c.type: c.reason for c in run.status.conditions}.get("Ready") != PROVISIONING_STORE:
            plan.event("Warning", STORE_PROVISIONING_FAILED, f"{message}; retrying with backoff")
        return _report(plan, run, "Pending", PROVISIONING_STORE, message, now)

    if (
        run.worker_pool is not None
        and seen.pool_missing
        and (flow is None or not flow.is_terminal)
        and not run.cancel
    ):
        message = f"no WorkerPool {run.worker_pool!r} in namespace {run.namespace}"
        if {c.type: c.reason for c in run.status.conditions}.get("Ready") != POOL_NOT_FOUND:
            plan.event("Warning", POOL_NOT_FOUND, f"{message}; the run starts once it exists")
        return _report(plan, run, "Pending", POOL_NOT_FOUND, message, now)
    if flow is None and run.phase in TERMINAL_PHASES:
        # It ended, and its record is not in the store it reads now (the namespace's own since
        # ERGON_TENANCY changed to namespace, or deleted by hand): the status stays the report
        # of how it ended; only pod cleanup and the TTL still apply.
        plan.status = run.status.model_copy(deep=True)
        return _cleanup(plan, run, pods, settings, now)
    if flow is None and run.cancel:  # cancelled before its flow was ever recorded
        status.completed_at = status.completed_at or format_time(now)
        return _report(plan, run, "Cancelled", "Cancelled", "cancelled by spec.cancel", now)
    if flow is None:  # the reconciler records the flow first; this only happens if that failed
        return _report(plan, run, "Pending", "Recording", "recording the flow in the store", now)
    if flow.is_terminal:
        _ended(plan, run, flow, active, now)
        return _cleanup(plan, run, pods, settings, now)
    if run.cancel:
        plan.cancel_flow = True
        plan.delete_pods = [p.name for p in active]
        plan.event("Normal", "Cancelled", "spec.cancel is true; flow cancelled")
        status.completed_at = status.completed_at or format_time(now)
        return _report(plan, run, "Cancelled", "Cancelled", "cancelled by spec.cancel", now)
    started = parse_time(status.started_at)
    if run.timeout_seconds and started is not None:
        deadline = started + timedelta(seconds=run.timeout_seconds)
        if now >= deadline:
            message = f"the run did not finish within timeoutSeconds={run.timeout_seconds:g}"
            plan.fail_flow = ErrorInfo(FailureCode.DEADLINE_EXCEEDED, message, False)
            plan.delete_pods = [p.name for p in active]
            plan.event("Warning", FailureCode.DEADLINE_EXCEEDED, message)
            status.error = error_value(plan.fail_flow)
            status.completed_at = format_time(deadline)
            return _report(plan, run, "Failed", FailureCode.DEADLINE_EXCEEDED, message, now)
        plan.wake(deadline)
    if run.worker_pool is not None:
        _on_pool(plan, seen)
    elif active:
        _running(plan, run, flow, active[-1], settings, now)
    elif flow.state == "suspended":
        _suspended(plan, seen, latest, settings)
    else:
        crashed = flow.state == "running" or (latest is not None and latest.phase == "Failed")
        if crashed and (latest is not None or status.pod_name):
            _crashed(plan, seen, latest, settings)
        else:
            _start_pod(plan, seen, latest, settings, resumed=run.phase == "Suspended")
    return _cleanup(plan, run, pods, settings, now, flow_state=flow.state)


def _base_status(seen: Observed, pods: list[Pod], latest: Pod | None) -> FlowRunStatus:
    old, run = seen.run.status, seen.run
    started = old.started_at
    if started is None:
        # A pod was created before the status recording it was written (an operator crash in
        # between): the pod's own creation is when the run started.
        times = [t for p in pods if (t := p.created_at or p.started_at) is not None]
        first = min(times, default=None)
        if first is None and (old.attempts or old.pod_name):
            first = run.created_at  # pods were made and are gone: the earliest durable time
        started = format_time(first)
    return FlowRunStatus(
        observed_generation=run.generation,
        flow_id=run.uid,
        attempts=old.attempts or (latest.attempt if latest else 0),
        pod_name=old.pod_name or (latest.name if latest else None),
        steps_completed=seen.steps.completed,
        current_step=seen.steps.current,
        started_at=started,
        completed_at=old.completed_at,
        last_pod_ended_at=old.last_pod_ended_at,
        next_attempt_at=old.next_attempt_at,
        pod_problem_since=old.pod_problem_since,
        delivered_signals=list(old.delivered_signals),
        invalid_signals=list(old.invalid_signals),
        image=old.image,
        version=old.version,
        worker_pool=old.worker_pool,
    )


def _report_invalid_signals(plan: Plan, run: FlowRun) -> None:
    """Keys of `spec.signals` that can never be delivered: listed in `status.invalidSignals`
    and reported once in a Warning Event; everything else about the run goes on."""
    invalid = invalid_spec_signals(run)
    for name, problem in invalid.items():
        if name not in run.status.invalid_signals:
            plan.event("Warning", INVALID_SIGNAL, f"spec.signals[{name[:64]!r}]: {problem}")
    plan.status.invalid_signals = sorted(invalid)


def _ended(plan: Plan, run: FlowRun, flow: FlowStatus, active: list[Pod], now: datetime) -> None:
    status = plan.status
    status.completed_at = status.completed_at or format_time(flow.updated_at)
    status.next_attempt_at = status.pod_problem_since = None
    if flow.state == "completed":
        status.result = result_value(flow.result)
        if run.phase != "Succeeded":
            plan.event("Normal", "Succeeded", "the flow completed")
        _report(plan, run, "Succeeded", "Completed", "the flow completed", now)
        return
    if flow.state == "cancelled":
        plan.delete_pods = [p.name for p in active]
        if run.phase != "Cancelled":
            plan.event("Normal", "Cancelled", "the flow was cancelled")
        _report(plan, run, "Cancelled", "Cancelled", "the flow was cancelled", now)
        return
    error = flow.error or ErrorInfo(FailureCode.UNKNOWN, "the flow failed", False)
    status.error = error_value(error)
    code = FailureCode.of(error.type)  # records of earlier releases say UnknownFlow: InvalidFlow
    reason = code if code in REASON_CODES else FLOW_FAILED
    if error.type in OPERATOR_FAILURES:  # failed by the operator: no pod ever started
        reason = error.type
    message = f"{error.type}: {error.message}"
    ended_by_operator = code == FailureCode.DEADLINE_EXCEEDED or error.type in OPERATOR_FAILURES
    plan.delete_pods = [p.name for p in active] if ended_by_operator else []
    if run.phase != "Failed":
        plan.event("Warning", "Failed" if reason == FLOW_FAILED else reason, message)
    _report(plan, run, "Failed", reason, message, now)


def _running(
    plan: Plan, run: FlowRun, flow: FlowStatus, pod: Pod, settings: Settings, now: datetime
) -> None:
    """A pod exists and has not ended: running, starting, or unable to start."""
    status = plan.status
    status.pod_name = pod.name
    status.attempts = pod.attempt
    status.last_pod_ended_at = status.next_attempt_at = None
    if pod.phase == "Running" or flow.state == "running":
        status.pod_problem_since = None
        _report(plan, run, "Running", "PodRunning", f"pod {pod.name} is executing the flow", now)
        return
    if pod.problem is None:
        status.pod_problem_since = None
        _report(plan, run, "Pending", "PodStarting", f"pod {pod.name} is starting", now)
        return
    detail = f": {pod.problem_message}" if pod.problem_message else ""
    message = f"pod {pod.name} cannot start ({pod.problem}{detail})"
    since = pod.created_at or parse_time(status.pod_problem_since) or now
    _start_problem(plan, run, pod.problem, message, since, settings, now, delete=[pod.name])


def _start_problem(
    plan: Plan,
    run: FlowRun,
    reason: str,
    message: str,
    since: datetime,
    settings: Settings,
    now: datetime,
    *,
    delete: list[str],
) -> None:
    """A worker pod that cannot start (or be created): reported with its reason at once, and the
    run failed with that reason once `pod_start_grace_seconds` have passed since `since`."""
    status = plan.status
    status.pod_problem_since = status.pod_problem_since or format_time(since)
    since = parse_time(status.pod_problem_since) or since
    deadline = since + timedelta(seconds=settings.pod_start_grace_seconds)
    if now >= deadline:
        message = f"{message}; gave up after {settings.pod_start_grace_seconds:g} s"
        plan.fail_flow = ErrorInfo(reason, message, False)
        plan.create_pod = None
        plan.delete_pods = delete
        status.error = error_value(plan.fail_flow)
        status.completed_at = format_time(deadline)
        status.pod_problem_since = None
        plan.event("Warning", reason, message)
        _report(plan, run, "Failed", reason, message, now)
        return
    previous = {c.type: c.reason for c in run.status.conditions}.get("Ready")
    if previous != reason and not {previous, reason} <= IMAGE_PULL:
        plan.event("Warning", reason, message)
    plan.wake(deadline)
    _report(plan, run, "Pending", reason, message, now)


def _suspended(plan: Plan, seen: Observed, latest: Pod | None, settings: Settings) -> None:
    run, flow, now = seen.run, seen.flow, seen.now
    assert flow is not None
    reason = flow.waiting_for
    due = reason.fire_at if reason is not None else flow.wake_at
    if due is not None and now >= due:
        _start_pod(plan, seen, latest, settings, resumed=True)
        return
    plan.status.waiting_for, plan.status.waiting = waiting_for(reason)
    plan.status.pod_problem_since = None
    if due is not None:
        plan.wake(due)
    waiting = plan.status.waiting or "an event"
    if run.phase != "Suspended":
        plan.event("Normal", "Suspended", f"waiting for {waiting}; no pod running")
    _report(plan, run, "Suspended", "Waiting", f"waiting for {waiting}", now)


def _on_pool(plan: Plan, seen: Observed) -> None:
    """A run on a worker pool: no pod of its own; the flow record says where it is. The pool's
    workers claim it (and its wake-ups), so the operator only reports."""
    run, flow, now, status = seen.run, seen.flow, seen.now, plan.status
    assert flow is not None and run.worker_pool is not None
    routing = parse_routing(flow.version)
    if status.worker_pool is None:
        status.worker_pool = run.worker_pool
        status.version = routing[2] if routing else flow.version
        plan.event(
            "Normal",
            "Scheduled",
            f"scheduled on worker pool {run.worker_pool}, version {status.version}",
        )
    status.image = status.image or seen.pool_image
    status.attempts = flow.attempts
    status.pod_name = None
    status.started_at = status.started_at or format_time(flow.created_at)
    where = f"worker pool {run.worker_pool} (version {status.version})"
    if flow.state == "running":  # no Event: a claim is routine (as a pod starting is)
        status.waiting_for, status.waiting = None, ""
        _report(plan, run, "Running", "Executing", f"executing on {where}", now)
        return
    if flow.state == "suspended":
        reason = flow.waiting_for
        due = reason.fire_at if reason is not None else flow.wake_at
        if due is None or now < due:
            status.waiting_for, status.waiting = waiting_for(reason)
            if due is not None:
                plan.wake(due)  # report the wake-up; the pool's workers act on it themselves
            waiting = status.waiting or "an event"
            if run.phase != "Suspended":
                plan.event("Normal", "Suspended", f"waiting for {waiting} on {where}")
            _report(plan, run, "Suspended", "Waiting", f"waiting for {waiting}", now)
            return
    status.waiting_for, status.waiting = None, ""
    _report(plan, run, "Pending", "WaitingForWorker", f"waiting for a worker of {where}", now)


def _crashed(plan: Plan, seen: Observed, latest: Pod | None, settings: Settings) -> None:
    """The last pod ended (or vanished) before the flow did: retry after the backoff, counted
    from the pod's recorded end, or — when the pod object is gone — from the end time written in
    status the first time the crash was seen."""
    run, now, status = seen.run, seen.now, plan.status
    if latest is not None and _sequence_of(status.pod_name) > latest.sequence:
        latest = None  # the pod status names is gone; `latest` is an older one
    attempt = latest.attempt if latest is not None else max(status.attempts, 1)
    what = _describe_end(latest, status.pod_name)
    ended = (latest.finished_at if latest is not None else None) or parse_time(
        status.last_pod_ended_at
    )
    ended = parse_time(format_time(ended or now))
    assert ended is not None
    status.last_pod_ended_at = format_time(ended)
    if attempt >= run.retry.max_attempts:
        message = f"{attempt} worker pods ended before the flow did; the last one {what}"
        plan.fail_flow = ErrorInfo(FailureCode.RETRIES_EXHAUSTED, message, False)
        status.error = error_value(plan.fail_flow)
        status.completed_at = format_time(ended)
        status.next_attempt_at = None
        plan.event("Warning", FailureCode.RETRIES_EXHAUSTED, message)
        _report(plan, run, "Failed", FailureCode.RETRIES_EXHAUSTED, message, now)
        return
    due = ended + timedelta(seconds=run.retry.delay_after(attempt))
    status.next_attempt_at = format_time(due)
    if now < due:
        plan.wake(due)
        message = f"pod {what}; attempt {attempt + 1} starts at {format_time(due)}"
        _report(plan, run, "Pending", "BackoffRetry", message, now)
        return
    if seen.slot_free and seen.pod_rejected is None:
        plan.event("Warning", "Retrying", f"pod {what}; starting attempt {attempt + 1}")
    _start_pod(plan, seen, latest, settings, attempt=attempt + 1)


def _start_pod(
    plan: Plan,
    seen: Observed,
    latest: Pod | None,
    settings: Settings,
    *,
    resumed: bool = False,
    attempt: int | None = None,
) -> None:
    run, now, status = seen.run, seen.now, plan.status
    sequence = max(latest.sequence if latest else 0, _sequence_of(status.pod_name)) + 1
    if attempt is None:
        attempt = max(latest.attempt if latest else 1, status.attempts or 1)
    violation = policy.check(
        policy=settings.policy,
        default_image=settings.worker_image,
        image=pod_specs.worker_image(run, settings),  # spec.image, or the image it is pinned to
        template=run.pod_template,
    )
    if violation is not None:
        message = f"the worker pod would break the worker policy: {violation}"
        plan.fail_flow = ErrorInfo(policy.POLICY_VIOLATION, message, False)
        status.error = error_value(plan.fail_flow)
        status.completed_at = format_time(now)
        plan.event("Warning", policy.POLICY_VIOLATION, message)
        _report(plan, run, "Failed", policy.POLICY_VIOLATION, message, now)
        return
    if not seen.slot_free:
        plan.queued = True
        message = f"waiting for a free worker slot (priority {run.priority})"
        if {c.type: c.reason for c in run.status.conditions}.get("Ready") != "Queued":
            plan.event("Normal", "Queued", message)
        _report(plan, run, "Pending", "Queued", message, now)
        return
    taken = {p.name for p in seen.pods if p.owner_uid != run.uid}
    while pod_specs.pod_name(run, sequence) in taken:  # pods of an earlier FlowRun of this name
        sequence += 1
    manifest = pod_specs.worker_pod(run, settings, sequence=sequence, attempt=attempt)
    name = manifest["metadata"]["name"]
    plan.create_pod = manifest
    if seen.pod_rejected is not None:
        # The API refused this pod before; try again (the cause may be fixed), report why it
        # cannot start, and give up after the grace. The pod's name is not recorded: it does
        # not exist.
        message = f"the API refused worker pod {name}: {seen.pod_rejected}"
        _start_problem(plan, run, POD_REJECTED, message, now, settings, now, delete=[])
        return
    status.pod_name, status.attempts = name, attempt
    status.image = manifest["spec"]["containers"][0]["image"]  # pinned for every later pod
    status.version = status.version or run.version
    status.started_at = status.started_at or format_time(now)
    status.last_pod_ended_at = status.next_attempt_at = status.pod_problem_since = None
    status.waiting_for, status.waiting = None, ""
    if resumed:
        plan.event("Normal", "Resumed", f"resuming the flow in pod {name}")
    plan.event("Normal", "CreatedPod", f"created pod {name} (attempt {attempt})")
    _report(plan, run, "Pending", "PodCreated", f"starting pod {name}", now)


def _cleanup(
    plan: Plan,
    run: FlowRun,
    pods: list[Pod],
    settings: Settings,
    now: datetime,
    *,
    flow_state: str | None = None,
) -> Plan:
    """Finished pods to delete under the run's podGC strategy, and the FlowRun itself once its
    TTL after finishing has passed.

    `OnFlowRunCompletion` (the default) deletes, when the run ends, every finished pod but the
    last one and the last failed one, so `kubectl logs` still shows how the run ended and why
    a pod crashed. `OnPodCompletion` deletes pods as soon as they are no longer needed — while
    the run goes on, every finished pod but the newest (deleted too once the flow is suspended:
    its work is recorded) — and keeps only the last failed pod. `OnFlowRunSuccess` deletes
    every pod of a run that succeeded and keeps all pods of one that did not; `Never` keeps
    everything."""
    strategy = run.pod_gc or settings.pod_gc_strategy
    final = plan.status.phase in ("Succeeded", "Failed", "Cancelled")
    finished = [p for p in pods if not p.active and not p.deleting]
    victims: list[Pod] = []
    if strategy == "OnFlowRunSuccess":
        victims = finished if plan.status.phase == "Succeeded" else []
    elif strategy in ("OnPodCompletion", "OnFlowRunCompletion"):
        if final and strategy == "OnFlowRunCompletion":
            victims = [p for p in finished if p is not pods[-1]]
        elif final:
            victims = finished
        elif strategy == "OnPodCompletion":
            newest = pods[-1] if pods else None
            keep_newest = newest is not None and not (
                newest.phase == "Succeeded" and flow_state == "suspended"
            )
            victims = [p for p in finished if not (keep_newest and p is newest)]
        failed = [p for p in finished if p.phase == "Failed"]
        if failed:
            victims = [p for p in victims if p is not failed[-1]]
    for pod in victims:
        if pod.name not in plan.delete_pods:
            plan.delete_pods.append(pod.name)
    ttl = run.ttl_seconds_after_finished
    if ttl is None:
        ttl = settings.ttl_seconds_after_finished
    completed = parse_time(plan.status.completed_at)
    if final and ttl is not None and completed is not None:
        expires = completed + timedelta(seconds=ttl)
        if now >= expires:
            plan.delete_flowrun = True
        else:
            plan.wake(expires)
    return plan


def _report(plan: Plan, run: FlowRun, phase: str, reason: str, message: str, now: datetime) -> Plan:
    plan.status.phase = phase
    plan.status.conditions = conditions(
        run.status.conditions,
        phase=phase,
        reason=reason,
        message=message,
        generation=run.generation,
        now=now,
    )
    return plan


def _describe_end(pod: Pod | None, name: object) -> str:
    if pod is None:
        return f"{name} disappeared"
    code = ExitCode.describe(pod.exit_code) if pod.exit_code is not None else "no exit code"
    return f"{pod.name} ended ({pod.phase}, {code}{', ' + pod.reason if pod.reason else ''})"


def _sequence_of(name: str | None) -> int:
    if name is None:
        return 0
    tail = name.rpartition("-")[2]
    return int(tail) if tail.isdigit() else 0
