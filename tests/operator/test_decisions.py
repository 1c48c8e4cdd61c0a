"""The operator's decisions, as pure functions: FlowRun + flow record + pods -> plan."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import ergon
from ergon.storage import FlowState, FlowStatus
from ergon_operator.decisions import Observed, Plan, decide
from ergon_operator.resources import FlowRun, Pod
from ergon_operator.settings import Settings
from ergon_operator.status import StepSummary
from tests.chart.schemas import restricted_violations, validate_builtin

NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
SETTINGS = Settings(
    store="postgresql://x/y", store_secret="ergon-postgres", worker_image="ergon:dev-worker"
)
UID = "5f0c3e2a-0000-4000-8000-000000000001"


def flowrun(status: dict[str, Any] | None = None, **spec: Any) -> FlowRun:
    body = {
        "apiVersion": "ergon.dev/v1alpha1",
        "kind": "FlowRun",
        "metadata": {"name": "order-42", "namespace": "shop", "uid": UID, "generation": 1},
        "spec": {
            "flow": "examples.orders:OrderFlow",
            "input": {"order_id": "42"},
            "retry": {"maxAttempts": 3, "backoffSeconds": 10, "maxBackoffSeconds": 300},
            **spec,
        },
        "status": status or {},
    }
    return FlowRun.parse(body)


def record(state: FlowState, **fields: Any) -> FlowStatus:
    return FlowStatus(
        id=UID,
        flow="examples.orders:OrderFlow",
        state=state,
        input='{"order_id":"42"}',
        created_at=NOW - timedelta(minutes=5),
        updated_at=NOW - timedelta(minutes=1),
        **fields,
    )


def pod(sequence: int, phase: str, *, attempt: int = 1, exit_code: int | None = None,
        finished: datetime | None = None, reason: str | None = None) -> Pod:  # fmt: skip
    return Pod(
        name=f"order-42-{sequence}",
        sequence=sequence,
        attempt=attempt,
        phase=phase,
        exit_code=exit_code,
        reason=reason,
        finished_at=finished,
    )


NO_STEPS = StepSummary(0, None)


def plan_for(run: FlowRun, flow: FlowStatus | None, pods: list[Pod], *, now: datetime = NOW,
             steps: StepSummary = NO_STEPS) -> Plan:  # fmt: skip
    return decide(Observed(run, flow, steps, pods, now), SETTINGS)


def reasons(plan: Plan) -> list[str]:
    return [e.reason for e in plan.events]


def condition(plan: Plan, kind: str) -> dict[str, Any]:
    return next(c for c in plan.status.to_body()["conditions"] if c["type"] == kind)


def test_a_new_flowrun_gets_its_first_pod() -> None:
    plan = plan_for(flowrun(), record("pending"), [])
    assert plan.create_pod is not None
    meta = plan.create_pod["metadata"]
    assert meta["name"] == "order-42-1"
    assert meta["labels"]["ergon.dev/flowrun"] == "order-42"
    assert meta["ownerReferences"][0]["uid"] == UID
    container = plan.create_pod["spec"]["containers"][0]
    assert container["command"] == ["ergon", "run-flow", "--flow-id", UID]
    assert container["image"] == "ergon:dev-worker"
    assert container["env"][0]["valueFrom"]["secretKeyRef"] == {
        "name": "ergon-postgres",
        "key": "dsn",
    }
    assert plan.status.phase == "Pending" and plan.status.attempts == 1
    assert plan.status.started_at == "2026-11-24T12:00:00Z"
    assert plan.status.flow_id == UID and plan.status.observed_generation == 1
    assert reasons(plan) == ["CreatedPod"]
    assert condition(plan, "Succeeded")["status"] == "Unknown"


def test_the_worker_pod_is_valid_and_meets_the_restricted_profile() -> None:
    run = flowrun(podTemplate={"labels": {"team": "a"}, "env": [{"name": "X", "value": "1"}],
                               "resources": {"limits": {"memory": "256Mi"}},
                               "serviceAccountName": "custom"})  # fmt: skip
    manifest = plan_for(run, record("pending"), []).create_pod
    assert manifest is not None
    validate_builtin(manifest)
    assert restricted_violations(manifest["spec"]) == []
    assert manifest["spec"]["serviceAccountName"] == "custom"
    assert manifest["metadata"]["labels"]["team"] == "a"
    assert manifest["spec"]["containers"][0]["env"][-1] == {"name": "X", "value": "1"}


def test_long_names_make_valid_pod_names() -> None:
    body = flowrun().status_body
    run = FlowRun.parse({"metadata": {"name": "x" * 63, "namespace": "n", "uid": UID},
                         "spec": {"flow": "a:B", "input": {}}, "status": body})  # fmt: skip
    manifest = plan_for(run, record("pending"), [pod(9, "Succeeded", exit_code=0)]).create_pod
    assert manifest is not None
    assert manifest["metadata"]["name"] == "x" * 60 + "-10"


def test_a_running_pod_means_running() -> None:
    plan = plan_for(flowrun({"podName": "order-42-1", "attempts": 1}), record("running"),
                    [pod(1, "Running")], steps=StepSummary(2, "charge"))  # fmt: skip
    assert plan.create_pod is None and plan.status.phase == "Running"
    assert (plan.status.steps_completed, plan.status.current_step) == (2, "charge")


def test_a_completed_flow_succeeds_with_its_result() -> None:
    plan = plan_for(flowrun({"phase": "Running"}), record("completed", result='"shipped"'),
                    [pod(1, "Succeeded", exit_code=0)])  # fmt: skip
    assert plan.status.phase == "Succeeded" and plan.status.result == "shipped"
    assert plan.status.completed_at == "2026-11-24T11:59:00Z"
    assert condition(plan, "Succeeded")["status"] == "True"
    assert condition(plan, "Ready")["status"] == "True"
    assert reasons(plan) == ["Succeeded"]
    again = plan_for(flowrun(plan.status.to_body()), record("completed", result='"shipped"'), [])
    assert again.events == [] and again.create_pod is None
    assert (
        condition(again, "Succeeded")["lastTransitionTime"]
        == condition(plan, "Succeeded")["lastTransitionTime"]
    )


def test_large_results_are_truncated_with_a_marker() -> None:
    big = json.dumps("x" * 10_000)
    plan = plan_for(flowrun(), record("completed", result=big), [])
    assert plan.status.result["truncated"] is True
    assert plan.status.result["size"] == len(big)
    assert len(plan.status.result["preview"]) == 1024


def test_flows_that_cannot_run_fail_with_their_reason() -> None:
    for kind in ("InvalidFlow", "InvalidInput"):
        error = ergon.ErrorInfo(kind, f"{kind} explained", False)
        plan = plan_for(flowrun(), record("failed", error=error), [pod(1, "Failed", exit_code=2)])
        assert plan.status.phase == "Failed"
        assert condition(plan, "Succeeded")["reason"] == kind
        assert condition(plan, "Succeeded")["status"] == "False"
        assert plan.status.to_body()["error"] == {
            "type": kind,
            "message": f"{kind} explained",
            "retryable": False,
        }
        assert plan.create_pod is None


def test_records_of_earlier_releases_say_unknown_flow_for_invalid_flow() -> None:
    error = ergon.ErrorInfo("UnknownFlow", "flow 'a:B' is not registered", False)
    plan = plan_for(flowrun(), record("failed", error=error), [pod(1, "Failed", exit_code=1)])
    assert condition(plan, "Succeeded")["reason"] == "InvalidFlow"
    assert plan.status.error is not None and plan.status.error.type == "UnknownFlow"


def test_a_flow_error_fails_the_run_without_a_pod_retry() -> None:
    error = ergon.ErrorInfo("ValueError", "bad order", False)
    plan = plan_for(flowrun(), record("failed", error=error), [pod(1, "Failed", exit_code=1)])
    assert plan.status.phase == "Failed" and condition(plan, "Succeeded")["reason"] == "FlowFailed"
    assert plan.create_pod is None


def test_waiting_for_a_signal_suspends_without_a_pod() -> None:
    reason = ergon.SuspendReason("signal", "approval")
    plan = plan_for(flowrun({"phase": "Running"}), record("suspended", waiting_for=reason),
                    [pod(1, "Succeeded", exit_code=0)])  # fmt: skip
    assert plan.status.phase == "Suspended"
    assert plan.status.waiting_for == {"signal": "approval"}
    assert plan.status.waiting == "signal:approval"
    assert plan.create_pod is None and plan.wake_at is None
    assert reasons(plan) == ["Suspended"]


def test_a_woken_flow_gets_a_new_pod_at_once() -> None:
    plan = plan_for(flowrun({"phase": "Suspended", "attempts": 1, "podName": "order-42-1"}),
                    record("pending"), [pod(1, "Succeeded", exit_code=0)])  # fmt: skip
    assert plan.create_pod is not None
    assert plan.create_pod["metadata"]["name"] == "order-42-2"
    assert plan.status.attempts == 1  # resuming is not a retry
    assert reasons(plan) == ["Resumed", "CreatedPod"]


def test_a_durable_timer_wakes_the_run_at_its_time() -> None:
    fire_at = NOW + timedelta(seconds=30)
    reason = ergon.SuspendReason("timer", None, fire_at)
    suspended = record("suspended", waiting_for=reason, wake_at=fire_at)
    plan = plan_for(flowrun(), suspended, [pod(1, "Succeeded", exit_code=0)])
    assert plan.status.waiting_for == {"timer": "2026-11-24T12:00:30Z"}
    assert plan.status.waiting == "timer:2026-11-24T12:00:30Z"
    assert plan.wake_at == fire_at and plan.create_pod is None
    due = plan_for(flowrun(plan.status.to_body()), suspended,
                   [pod(1, "Succeeded", exit_code=0)], now=fire_at)  # fmt: skip
    assert due.create_pod is not None and "Resumed" in reasons(due)


def test_a_dead_pod_is_retried_after_backoff() -> None:
    died = NOW - timedelta(seconds=4)
    pods = [pod(1, "Failed", exit_code=137, reason="OOMKilled", finished=died)]
    run = flowrun({"phase": "Running", "attempts": 1, "podName": "order-42-1"})
    waiting = plan_for(run, record("running"), pods)
    assert waiting.create_pod is None
    assert waiting.wake_at == died + timedelta(seconds=10)
    assert waiting.status.phase == "Pending"
    assert condition(waiting, "Succeeded")["reason"] == "BackoffRetry"
    assert "OOMKilled" in condition(waiting, "Succeeded")["message"]
    retry = plan_for(run, record("running"), pods, now=died + timedelta(seconds=10))
    assert retry.create_pod is not None
    assert retry.create_pod["metadata"]["labels"]["ergon.dev/attempt"] == "2"
    assert retry.status.attempts == 2
    assert reasons(retry) == ["Retrying", "CreatedPod"]


def test_backoff_doubles_and_is_capped() -> None:
    run = flowrun(retry={"maxAttempts": 10, "backoffSeconds": 10, "maxBackoffSeconds": 60})
    assert [run.retry.delay_after(n) for n in (1, 2, 3, 4, 5)] == [10, 20, 40, 60, 60]


def test_retries_run_out() -> None:
    pods = [pod(3, "Failed", attempt=3, exit_code=137, finished=NOW - timedelta(hours=1))]
    plan = plan_for(flowrun({"attempts": 3}), record("running"), pods)
    assert plan.fail_flow is not None and plan.fail_flow.type == "RetriesExhausted"
    assert plan.status.phase == "Failed"
    assert condition(plan, "Succeeded")["reason"] == "RetriesExhausted"
    assert plan.create_pod is None


def test_a_pod_that_never_opened_the_flow_counts_as_a_crash() -> None:
    pods = [pod(1, "Failed", exit_code=127, finished=NOW - timedelta(seconds=1))]
    plan = plan_for(flowrun({"attempts": 1, "podName": "order-42-1"}), record("pending"), pods)
    assert plan.create_pod is None and condition(plan, "Succeeded")["reason"] == "BackoffRetry"


def test_a_deleted_pod_is_replaced_from_what_status_remembers() -> None:
    run = flowrun({"phase": "Running", "attempts": 2, "podName": "order-42-4"})
    plan = plan_for(run, record("running"), [])
    assert plan.create_pod is None  # backoff counted from now
    later = plan_for(run, record("running"), [], now=NOW)
    assert later.wake_at == NOW + timedelta(seconds=20)


def test_cancel_cancels_the_flow_and_deletes_its_pods() -> None:
    plan = plan_for(flowrun(cancel=True), record("running"), [pod(1, "Running")])
    assert plan.cancel_flow and plan.delete_pods == ["order-42-1"]
    assert plan.status.phase == "Cancelled"
    assert condition(plan, "Ready")["status"] == "False"


def test_the_deadline_fails_the_run() -> None:
    run = flowrun({"startedAt": "2026-11-24T11:00:00Z"}, timeoutSeconds=600)
    plan = plan_for(run, record("suspended"), [pod(1, "Running")])
    assert plan.fail_flow is not None and plan.fail_flow.type == "DeadlineExceeded"
    assert plan.delete_pods == ["order-42-1"] and plan.status.phase == "Failed"
    young = flowrun({"startedAt": "2026-11-24T11:59:00Z"}, timeoutSeconds=600)
    assert plan_for(young, record("running"), [pod(1, "Running")]).wake_at == NOW + timedelta(
        seconds=540
    )
