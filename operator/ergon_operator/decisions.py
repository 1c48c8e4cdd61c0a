"""What to do about a FlowRun, given what the operator observes. Pure: no I/O, no clock.

The flow record in the store is the truth about the flow; pods are the truth about what is
executing it; the FlowRun's status is only a report of both (and the place the pod-level attempt
count survives a deleted pod). `decide` turns those into a `Plan`; applying a plan twice is
harmless, so the operator can decide again after any event or restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ergon import ErrorInfo, ExitCode, FailureCode, FlowStatus
from ergon_operator import pods as pod_specs
from ergon_operator.resources import FlowRun, FlowRunStatus, Pod, format_time, parse_time
from ergon_operator.settings import Settings
from ergon_operator.status import (
    StepSummary,
    conditions,
    error_value,
    result_value,
    waiting_for,
)

# Failure codes shown as the reason of the `Failed` condition; any other failure is `FlowFailed`.
REASON_CODES = frozenset(
    {
        FailureCode.INVALID_FLOW,
        FailureCode.INVALID_INPUT,
        FailureCode.RETRIES_EXHAUSTED,
        FailureCode.DEADLINE_EXCEEDED,
    }
)
FLOW_FAILED = "FlowFailed"


@dataclass(frozen=True, slots=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Plan:
    """What the reconciler should do, in order: end the flow record, delete pods, create a pod,
    write the status, emit events, and come back at `wake_at`."""

    status: FlowRunStatus
    create_pod: dict[str, Any] | None = None
    delete_pods: list[str] = field(default_factory=list)
    cancel_flow: bool = False
    fail_flow: ErrorInfo | None = None
    events: list[Event] = field(default_factory=list)
    wake_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Observed:
    run: FlowRun
    flow: FlowStatus | None
    steps: StepSummary
    pods: list[Pod]
    now: datetime


def decide(seen: Observed, settings: Settings) -> Plan:
    run, flow, now = seen.run, seen.flow, seen.now
    pods = sorted(seen.pods, key=lambda p: p.sequence)
    active = [p for p in pods if p.active]
    latest = pods[-1] if pods else None
    status = _base_status(seen, latest)
    plan = Plan(status=status)

    if flow is None:  # the reconciler records the flow first; this only happens if that failed
        return _report(plan, run, "Pending", "Recording", "recording the flow in the store", now)
    if flow.is_terminal:
        return _ended(plan, run, flow, active, now)
    if run.cancel:
        plan.cancel_flow = True
        plan.delete_pods = [p.name for p in active]
        plan.events.append(Event("Normal", "Cancelled", "spec.cancel is true; flow cancelled"))
        return _report(plan, run, "Cancelled", "Cancelled", "cancelled by spec.cancel", now)
    started = parse_time(status.started_at)
    if run.timeout_seconds and started is not None:
        deadline = started + timedelta(seconds=run.timeout_seconds)
        if now >= deadline:
            message = f"the run did not finish within timeoutSeconds={run.timeout_seconds:g}"
            plan.fail_flow = ErrorInfo(FailureCode.DEADLINE_EXCEEDED, message, False)
            plan.delete_pods = [p.name for p in active]
            plan.events.append(Event("Warning", "Failed", message))
            status.error = error_value(plan.fail_flow)
            status.completed_at = format_time(now)
            return _report(plan, run, "Failed", FailureCode.DEADLINE_EXCEEDED, message, now)
        plan.wake_at = deadline
    if active:
        pod = active[-1]
        status.pod_name = pod.name
        status.attempts = pod.attempt
        phase = "Running" if pod.phase == "Running" or flow.state == "running" else "Pending"
        return _report(plan, run, phase, "PodRunning", f"pod {pod.name} is executing the flow", now)
    if flow.state == "suspended":
        return _suspended(plan, run, flow, latest, settings, now)
    crashed = flow.state == "running" or (latest is not None and latest.phase == "Failed")
    if crashed and (latest is not None or status.pod_name):
        return _crashed(plan, run, latest, settings, now)
    resumed = run.phase == "Suspended"
    return _start_pod(plan, run, latest, settings, now, resumed=resumed)


def _base_status(seen: Observed, latest: Pod | None) -> FlowRunStatus:
    old = seen.run.status
    return FlowRunStatus(
        observed_generation=seen.run.generation,
        flow_id=seen.run.uid,
        attempts=old.attempts or (latest.attempt if latest else 0),
        pod_name=old.pod_name or (latest.name if latest else None),
        steps_completed=seen.steps.completed,
        current_step=seen.steps.current,
        started_at=old.started_at,
        completed_at=old.completed_at,
        delivered_signals=list(old.delivered_signals),
    )


def _ended(plan: Plan, run: FlowRun, flow: FlowStatus, active: list[Pod], now: datetime) -> Plan:
    status = plan.status
    status.completed_at = status.completed_at or format_time(flow.updated_at)
    if flow.state == "completed":
        status.result = result_value(flow.result)
        if run.phase != "Succeeded":
            plan.events.append(Event("Normal", "Succeeded", "the flow completed"))
        return _report(plan, run, "Succeeded", "Completed", "the flow completed", now)
    if flow.state == "cancelled":
        plan.delete_pods = [p.name for p in active]
        if run.phase != "Cancelled":
            plan.events.append(Event("Normal", "Cancelled", "the flow was cancelled"))
        return _report(plan, run, "Cancelled", "Cancelled", "the flow was cancelled", now)
    error = flow.error or ErrorInfo(FailureCode.UNKNOWN, "the flow failed", False)
    status.error = error_value(error)
    code = FailureCode.of(error.type)  # records of earlier releases say UnknownFlow: InvalidFlow
    reason = code if code in REASON_CODES else FLOW_FAILED
    message = f"{error.type}: {error.message}"
    plan.delete_pods = [p.name for p in active] if code == FailureCode.DEADLINE_EXCEEDED else []
    if run.phase != "Failed":
        plan.events.append(Event("Warning", "Failed", message))
    return _report(plan, run, "Failed", reason, message, now)


def _suspended(
    plan: Plan,
    run: FlowRun,
    flow: FlowStatus,
    latest: Pod | None,
    settings: Settings,
    now: datetime,
) -> Plan:
    reason = flow.waiting_for
    due = reason.fire_at if reason is not None else flow.wake_at
    if due is not None and now >= due:
        return _start_pod(plan, run, latest, settings, now, resumed=True)
    plan.status.waiting_for, plan.status.waiting = waiting_for(reason)
    if due is not None:
        plan.wake_at = due if plan.wake_at is None else min(plan.wake_at, due)
    waiting = plan.status.waiting or "an event"
    if run.phase != "Suspended":
        plan.events.append(Event("Normal", "Suspended", f"waiting for {waiting}; no pod running"))
    return _report(plan, run, "Suspended", "Waiting", f"waiting for {waiting}", now)


def _crashed(
    plan: Plan, run: FlowRun, latest: Pod | None, settings: Settings, now: datetime
) -> Plan:
    attempt = latest.attempt if latest is not None else max(plan.status.attempts, 1)
    what = _describe_end(latest, plan.status.pod_name)
    if attempt >= run.retry.max_attempts:
        message = f"{attempt} worker pods ended before the flow did; the last one {what}"
        plan.fail_flow = ErrorInfo(FailureCode.RETRIES_EXHAUSTED, message, False)
        plan.status.error = error_value(plan.fail_flow)
        plan.status.completed_at = format_time(now)
        plan.events.append(Event("Warning", "Failed", message))
        return _report(plan, run, "Failed", FailureCode.RETRIES_EXHAUSTED, message, now)
    delay = run.retry.delay_after(attempt)
    ended_at = (latest.finished_at if latest is not None else None) or now
    due = ended_at + timedelta(seconds=delay)
    if now < due:
        plan.wake_at = due if plan.wake_at is None else min(plan.wake_at, due)
        message = f"pod {what}; attempt {attempt + 1} starts at {format_time(due)}"
        return _report(plan, run, "Pending", "BackoffRetry", message, now)
    plan.events.append(Event("Warning", "Retrying", f"pod {what}; starting attempt {attempt + 1}"))
    return _start_pod(plan, run, latest, settings, now, attempt=attempt + 1)


def _start_pod(
    plan: Plan,
    run: FlowRun,
    latest: Pod | None,
    settings: Settings,
    now: datetime,
    *,
    resumed: bool = False,
    attempt: int | None = None,
) -> Plan:
    sequence = max(latest.sequence if latest else 0, _sequence_of(plan.status.pod_name)) + 1
    if attempt is None:
        attempt = max(latest.attempt if latest else 1, plan.status.attempts or 1)
    manifest = pod_specs.worker_pod(run, settings, sequence=sequence, attempt=attempt)
    name = manifest["metadata"]["name"]
    plan.create_pod = manifest
    plan.status.pod_name, plan.status.attempts = name, attempt
    plan.status.started_at = plan.status.started_at or format_time(now)
    if resumed:
        plan.events.append(Event("Normal", "Resumed", f"resuming the flow in pod {name}"))
    plan.events.append(Event("Normal", "CreatedPod", f"created pod {name} (attempt {attempt})"))
    return _report(plan, run, "Pending", "PodCreated", f"starting pod {name}", now)


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
