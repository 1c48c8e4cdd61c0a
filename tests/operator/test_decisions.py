"""The operator's decisions, as pure functions: FlowRun + flow record + pods -> plan."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import ergon
from ergon.storage import FlowState, FlowStatus
from ergon_operator.decisions import Observed, Plan, decide
from ergon_operator.pods import flowrun_label, pod_name
from ergon_operator.policy import WorkerPolicy
from ergon_operator.resources import FlowRun, Pod, Signal, format_time
from ergon_operator.settings import Settings, SettingsError
from ergon_operator.signals import decide_signal, spec_deliveries
from ergon_operator.status import MAX_MESSAGE, StepSummary, truncate
from tests.chart.schemas import restricted_violations, validate_builtin

NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
# An open worker policy: these tests are about other decisions (tests/operator/test_policy.py
# covers the policy).
OPEN_POLICY = WorkerPolicy(
    images=("*",),
    service_accounts=("*",),
    secrets=("*",),
    config_maps=("*",),
    label_keys=("*",),
    annotation_keys=("*",),
)
SETTINGS = Settings(
    store="postgresql://x/y",
    store_secret="ergon-postgres",
    worker_image="ergon:dev-worker",
    policy=OPEN_POLICY,
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
        finished: datetime | None = None, reason: str | None = None, owner: str = UID,
        created: datetime | None = None, problem: str | None = None) -> Pod:  # fmt: skip
    return Pod(
        name=f"order-42-{sequence}",
        sequence=sequence,
        attempt=attempt,
        phase=phase,
        exit_code=exit_code,
        reason=reason,
        finished_at=finished,
        owner_uid=owner,
        created_at=created,
        problem=problem,
        problem_message=f"{problem} explained" if problem else "",
    )


NO_STEPS = StepSummary(0, None)


def plan_for(run: FlowRun, flow: FlowStatus | None, pods: list[Pod], *, now: datetime = NOW,
             steps: StepSummary = NO_STEPS, settings: Settings = SETTINGS, slot_free: bool = True,
             pod_rejected: str | None = None) -> Plan:  # fmt: skip
    seen = Observed(run, flow, steps, pods, now, slot_free=slot_free, pod_rejected=pod_rejected)
    return decide(seen, settings)


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
    assert manifest["spec"]["containers"][0]["env"][-2:] == [
        {"name": "X", "value": "1"},
        {"name": "TMPDIR", "value": "/tmp"},
    ]


def test_long_names_make_valid_pod_names() -> None:
    body = flowrun().status_body
    run = FlowRun.parse({"metadata": {"name": "x" * 63, "namespace": "n", "uid": UID},
                         "spec": {"flow": "a:B", "input": {}}, "status": body})  # fmt: skip
    manifest = plan_for(run, record("pending"), [pod(9, "Succeeded", exit_code=0)]).create_pod
    assert manifest is not None
    assert manifest["metadata"]["name"] == "x" * 63 + "-10"
    assert manifest["metadata"]["labels"]["ergon.dev/flowrun"] == "x" * 63


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


# --- durable timing ------------------------------------------------------------------------


def test_a_vanished_pod_delays_the_next_attempt_by_exactly_its_backoff() -> None:
    run = flowrun({"phase": "Running", "attempts": 1, "podName": "order-42-1"})
    first = plan_for(run, record("running"), [])
    assert first.status.last_pod_ended_at == "2026-11-24T12:00:00Z"
    assert first.status.next_attempt_at == "2026-11-24T12:00:10Z"
    assert first.wake_at == NOW + timedelta(seconds=10) and first.create_pod is None
    for later in (NOW + timedelta(seconds=3), NOW + timedelta(seconds=9)):
        again = plan_for(flowrun(first.status.to_body()), record("running"), [], now=later)
        assert again.wake_at == NOW + timedelta(seconds=10) and again.create_pod is None
    due = plan_for(flowrun(first.status.to_body()), record("running"), [],
                   now=NOW + timedelta(seconds=10))  # fmt: skip
    assert due.create_pod is not None and due.status.attempts == 2
    assert due.status.last_pod_ended_at is None and due.status.next_attempt_at is None


def test_a_force_deleted_pod_counts_from_its_recorded_end() -> None:
    died = NOW - timedelta(seconds=4)
    run = flowrun({"phase": "Running", "attempts": 1, "podName": "order-42-1"})
    seen = plan_for(run, record("running"), [pod(1, "Failed", exit_code=137, finished=died)])
    assert seen.status.last_pod_ended_at == format_time(died)
    soon = NOW + timedelta(seconds=5)
    gone = plan_for(flowrun(seen.status.to_body()), record("running"), [], now=soon)
    assert gone.create_pod is None and gone.wake_at == died + timedelta(seconds=10)
    due = plan_for(
        flowrun(seen.status.to_body()), record("running"), [], now=soon + timedelta(seconds=1)
    )
    assert due.create_pod is not None


def test_started_at_is_recovered_from_the_pod_when_its_status_write_was_lost() -> None:
    created = NOW - timedelta(seconds=700)
    run = flowrun(timeoutSeconds=600)  # status never written: the operator crashed
    plan = plan_for(run, record("running"), [pod(1, "Running", created=created)])
    assert plan.status.started_at == format_time(created)
    assert plan.fail_flow is not None and plan.fail_flow.type == "DeadlineExceeded"
    assert plan.status.completed_at == format_time(created + timedelta(seconds=600))
    assert reasons(plan) == ["DeadlineExceeded"]


def test_started_at_falls_back_to_the_flowrun_creation_when_its_pods_are_gone() -> None:
    body = {
        "metadata": {"name": "order-42", "namespace": "shop", "uid": UID,
                     "creationTimestamp": "2026-11-24T11:00:00Z"},
        "spec": {"flow": "a:B", "input": {}, "timeoutSeconds": 60},
        "status": {"attempts": 1, "podName": "order-42-1"},
    }  # fmt: skip
    plan = plan_for(FlowRun.parse(body), record("running"), [])
    assert plan.status.started_at == "2026-11-24T11:00:00Z"
    assert plan.fail_flow is not None and plan.fail_flow.type == "DeadlineExceeded"


# --- truncation ----------------------------------------------------------------------------


def test_huge_error_messages_are_cut_to_the_schema_limits() -> None:
    error = ergon.ErrorInfo("ValueError", "é" * 50_000, False)
    plan = plan_for(flowrun(), record("failed", error=error), [])
    body = plan.status.to_body()
    assert len(body["error"]["message"].encode()) <= MAX_MESSAGE
    assert body["error"]["message"].endswith("bytes]") and "truncated" in body["error"]["message"]
    for item in body["conditions"]:
        assert len(item["message"].encode()) <= MAX_MESSAGE
    assert all(len(e.message.encode()) <= 1024 for e in plan.events)


def test_truncate_keeps_short_text_and_never_splits_a_character() -> None:
    assert truncate("short") == "short"
    cut = truncate("€" * 100, 50)
    assert len(cut.encode()) <= 50 and cut.startswith("€") and "[truncated" in cut
    cut.encode("utf-8")  # valid UTF-8


# --- signals -------------------------------------------------------------------------------


def test_an_invalid_signal_name_is_reported_and_blocks_nothing() -> None:
    run = flowrun(cancel=True, signals={"": 1, "x" * 201: 2, "ok": 3})
    assert [d.name for d in spec_deliveries(run)] == ["ok"]
    plan = plan_for(run, record("running"), [pod(1, "Running")])
    assert plan.cancel_flow and plan.status.phase == "Cancelled"
    assert reasons(plan).count("InvalidSignal") == 2
    assert plan.status.invalid_signals == sorted(["", "x" * 201])
    again = plan_for(flowrun(plan.status.to_body(), signals={"": 1, "x" * 201: 2}),
                     record("running"), [pod(1, "Running")])  # fmt: skip
    assert "InvalidSignal" not in reasons(again)


def test_the_deadline_still_applies_with_an_invalid_signal() -> None:
    run = flowrun({"startedAt": "2026-11-24T11:00:00Z"}, timeoutSeconds=60, signals={"": 1})
    plan = plan_for(run, record("running"), [pod(1, "Running")])
    assert plan.fail_flow is not None and plan.fail_flow.type == "DeadlineExceeded"


def test_signal_statuses_carry_the_observed_generation() -> None:
    body = {"metadata": {"name": "s", "namespace": "shop", "uid": "u", "generation": 3},
            "spec": {"flowRun": "order-42", "name": "approval"}}  # fmt: skip
    decision = decide_signal(Signal.parse(body), flowrun({"phase": "Running"}), NOW)
    assert decision is not None and decision.status["observedGeneration"] == 3
    missing = decide_signal(Signal.parse(body), None, NOW)
    assert missing is not None and missing.status["observedGeneration"] == 3


# --- pods that cannot start ----------------------------------------------------------------


def test_a_pending_pod_is_starting_not_executing() -> None:
    plan = plan_for(flowrun({"attempts": 1, "podName": "order-42-1"}), record("pending"),
                    [pod(1, "Pending")])  # fmt: skip
    assert plan.status.phase == "Pending"
    assert condition(plan, "Ready")["reason"] == "PodStarting"
    assert "executing" not in condition(plan, "Ready")["message"]


def test_a_pod_that_cannot_start_is_reported_then_fails_the_run_after_the_grace() -> None:
    for problem in ("CreateContainerConfigError", "ImagePullBackOff", "Unschedulable"):
        created = NOW - timedelta(seconds=10)
        stuck = [pod(1, "Pending", created=created, problem=problem)]
        run = flowrun({"attempts": 1, "podName": "order-42-1"})
        plan = plan_for(run, record("pending"), stuck)
        assert plan.status.phase == "Pending" and plan.fail_flow is None
        assert condition(plan, "Ready") | {"lastTransitionTime": None} == condition(
            plan, "Ready"
        ) | {"lastTransitionTime": None}
        assert condition(plan, "Ready")["status"] == "False"
        assert condition(plan, "Ready")["reason"] == problem
        assert f"{problem} explained" in condition(plan, "Ready")["message"]
        assert reasons(plan) == [problem]
        assert plan.wake_at == created + timedelta(seconds=300)
        again = plan_for(flowrun(plan.status.to_body()), record("pending"), stuck)
        assert again.events == []
        late = plan_for(flowrun(plan.status.to_body()), record("pending"), stuck,
                        now=created + timedelta(seconds=300))  # fmt: skip
        assert late.fail_flow is not None and late.fail_flow.type == problem
        assert late.status.phase == "Failed" and late.delete_pods == ["order-42-1"]
        assert condition(late, "Succeeded")["reason"] == problem
        assert late.fail_flow is not None
        ended = record("failed", error=late.fail_flow)
        after = plan_for(flowrun(late.status.to_body()), ended, stuck)
        assert condition(after, "Succeeded")["reason"] == problem and after.events == []
        assert after.delete_pods == ["order-42-1"]


def test_image_pull_errors_alternating_are_one_problem() -> None:
    run = flowrun({"attempts": 1, "podName": "order-42-1"})
    first = plan_for(
        run, record("pending"), [pod(1, "Pending", created=NOW, problem="ErrImagePull")]
    )
    backoff = [pod(1, "Pending", created=NOW, problem="ImagePullBackOff")]
    assert plan_for(flowrun(first.status.to_body()), record("pending"), backoff).events == []


def test_the_pod_start_grace_is_a_setting() -> None:
    settings = Settings.from_env({"ERGON_STORE": "x", "ERGON_STORE_SECRET": "s",
                                  "ERGON_POD_START_GRACE_SECONDS": "5"})  # fmt: skip
    assert settings.pod_start_grace_seconds == 5
    stuck = [pod(1, "Pending", created=NOW - timedelta(seconds=5), problem="ImagePullBackOff")]
    plan = plan_for(flowrun({"attempts": 1}), record("pending"), stuck, settings=settings)
    assert plan.fail_flow is not None


def test_a_rejected_pod_is_reported_retried_and_fails_after_the_grace() -> None:
    message = 'pods "order-42-1" is forbidden: exceeded quota: pods'
    plan = plan_for(flowrun(), record("pending"), [], pod_rejected=message)
    assert plan.create_pod is not None  # try again: the quota may have room now
    assert plan.status.phase == "Pending" and plan.status.pod_name is None
    assert condition(plan, "Ready")["reason"] == "PodRejected"
    assert condition(plan, "Ready")["status"] == "False"
    assert message in condition(plan, "Ready")["message"]
    assert reasons(plan) == ["PodRejected"]
    assert plan.status.pod_problem_since == "2026-11-24T12:00:00Z"
    later = plan_for(flowrun(plan.status.to_body()), record("pending"), [],
                     pod_rejected=message, now=NOW + timedelta(seconds=300))  # fmt: skip
    assert later.fail_flow is not None and later.fail_flow.type == "PodRejected"
    assert later.create_pod is None and later.status.phase == "Failed"
    created = plan_for(flowrun(plan.status.to_body()), record("pending"), [])
    assert created.status.pod_problem_since is None and created.status.pod_name == "order-42-1"


def test_pod_parse_reads_owner_and_start_problems() -> None:
    body = {
        "metadata": {"name": "order-42-1", "creationTimestamp": "2026-11-24T11:59:00Z",
                     "labels": {"ergon.dev/pod-sequence": "1", "ergon.dev/attempt": "1"},
                     "ownerReferences": [{"uid": UID, "controller": True, "kind": "FlowRun"}]},
        "status": {"phase": "Pending",
                   "containerStatuses": [{"state": {"waiting": {
                       "reason": "CreateContainerConfigError",
                       "message": 'secret "ergon-postgres" not found'}}}]},
    }  # fmt: skip
    parsed = Pod.parse(body)
    assert parsed.owner_uid == UID and parsed.created_at == NOW - timedelta(minutes=1)
    assert parsed.problem == "CreateContainerConfigError"
    assert "not found" in parsed.problem_message
    body["status"] = {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "message": "0/3 nodes are available"}]}  # fmt: skip
    assert Pod.parse(body).problem == "Unschedulable"
    body["status"] = {"phase": "Pending", "containerStatuses": [
        {"state": {"waiting": {"reason": "ContainerCreating"}}}]}  # fmt: skip
    assert Pod.parse(body).problem is None


# --- ownership -----------------------------------------------------------------------------


def test_foreign_pods_are_ignored_whatever_their_labels() -> None:
    foreign = pod(1, "Failed", exit_code=1, finished=NOW, owner="someone-else")
    plan = plan_for(flowrun(), record("pending"), [foreign])
    assert plan.create_pod is not None and plan.status.attempts == 1
    assert plan.create_pod["metadata"]["name"] == "order-42-2"  # the name order-42-1 is taken
    assert plan.delete_pods == []


def test_a_recreated_flowrun_starts_clean() -> None:
    old = [pod(n, "Failed", attempt=n, exit_code=137, finished=NOW, owner="old-uid")
           for n in (1, 2, 3)]  # fmt: skip
    plan = plan_for(flowrun(), record("pending"), old)
    assert plan.fail_flow is None and plan.status.attempts == 1
    assert plan.create_pod is not None
    assert plan.create_pod["metadata"]["labels"]["ergon.dev/attempt"] == "1"


def test_long_flowrun_names_keep_full_pod_names_and_never_collide() -> None:
    def run_named(name: str, uid: str) -> FlowRun:
        return FlowRun.parse({"metadata": {"name": name, "namespace": "n", "uid": uid},
                              "spec": {"flow": "a:B", "input": {}}})  # fmt: skip

    first = run_named("a" * 250 + "x", "uid-1")
    second = run_named("a" * 250 + "y", "uid-2")
    names = {pod_name(r, 12) for r in (first, second)}
    assert len(names) == 2 and all(len(n) <= 253 and n.endswith("-12") for n in names)
    labels = {flowrun_label(r) for r in (first, second)}
    assert len(labels) == 2 and all(len(v) <= 63 and v[-1].isalnum() for v in labels)
    mid = run_named("b" * 100, "uid-3")
    assert pod_name(mid, 3) == "b" * 100 + "-3"
    manifest = plan_for(first, record("pending"), []).create_pod
    assert manifest is not None
    validate_builtin(manifest)


# --- Ready, queueing -----------------------------------------------------------------------


def test_ready_is_false_while_waiting_for_a_retry() -> None:
    died = NOW - timedelta(seconds=1)
    plan = plan_for(flowrun({"attempts": 1, "podName": "order-42-1"}), record("running"),
                    [pod(1, "Failed", exit_code=1, finished=died)])  # fmt: skip
    assert condition(plan, "Ready")["status"] == "False"
    assert condition(plan, "Ready")["reason"] == "BackoffRetry"
    running = plan_for(flowrun(), record("running"), [pod(1, "Running")])
    assert condition(running, "Ready")["status"] == "True"
    reason = ergon.SuspendReason("signal", "approval")
    waiting = plan_for(flowrun(), record("suspended", waiting_for=reason), [])
    assert condition(waiting, "Ready")["status"] == "True"


def test_without_a_free_slot_the_run_is_queued() -> None:
    plan = plan_for(flowrun(priority=5), record("pending"), [], slot_free=False)
    assert plan.queued and plan.create_pod is None
    assert plan.status.phase == "Pending" and plan.status.attempts == 0
    assert condition(plan, "Ready")["reason"] == "Queued"
    assert condition(plan, "Ready")["status"] == "False"
    assert "priority 5" in condition(plan, "Ready")["message"]
    assert reasons(plan) == ["Queued"]
    again = plan_for(flowrun(plan.status.to_body()), record("pending"), [], slot_free=False)
    assert again.events == [] and again.queued
    freed = plan_for(flowrun(plan.status.to_body()), record("pending"), [])
    assert not freed.queued and freed.create_pod is not None
    assert flowrun(priority=5).priority == 5 and flowrun().priority == 0


def test_a_due_retry_waits_for_a_slot_without_losing_its_attempt() -> None:
    pods = [pod(1, "Failed", exit_code=1, finished=NOW - timedelta(minutes=1))]
    plan = plan_for(flowrun({"attempts": 1, "podName": "order-42-1"}), record("running"), pods,
                    slot_free=False)  # fmt: skip
    assert plan.queued and plan.create_pod is None and "Retrying" not in reasons(plan)
    assert plan.status.attempts == 1


# --- podGC and TTL -------------------------------------------------------------------------


def _finished_pods() -> list[Pod]:
    return [
        pod(1, "Failed", exit_code=137, finished=NOW),
        pod(2, "Succeeded", exit_code=0, attempt=2, finished=NOW),
        pod(3, "Succeeded", exit_code=0, attempt=2, finished=NOW),
    ]


def test_pod_gc_strategies_when_the_run_succeeds() -> None:
    done = record("completed", result="1")
    expected = {
        None: ["order-42-2"],  # OnFlowRunCompletion: the last pod and the last failed pod stay
        "OnFlowRunCompletion": ["order-42-2"],
        "OnPodCompletion": ["order-42-2", "order-42-3"],
        "OnFlowRunSuccess": ["order-42-1", "order-42-2", "order-42-3"],
        "Never": [],
    }
    for strategy, deleted in expected.items():
        spec = {"podGC": {"strategy": strategy}} if strategy else {}
        plan = plan_for(flowrun({"phase": "Running"}, **spec), done, _finished_pods())
        assert sorted(plan.delete_pods) == deleted, strategy


def test_pod_gc_strategies_when_the_run_fails() -> None:
    failed = record("failed", error=ergon.ErrorInfo("ValueError", "no", False))
    for strategy, deleted in {
        "OnFlowRunCompletion": ["order-42-2"],
        "OnPodCompletion": ["order-42-2", "order-42-3"],
        "OnFlowRunSuccess": [],
        "Never": [],
    }.items():
        plan = plan_for(flowrun(podGC={"strategy": strategy}), failed, _finished_pods())
        assert sorted(plan.delete_pods) == deleted, strategy


def test_on_pod_completion_deletes_finished_pods_while_the_run_goes_on() -> None:
    reason = ergon.SuspendReason("signal", "approval")
    run = flowrun({"attempts": 2, "podName": "order-42-3"}, podGC={"strategy": "OnPodCompletion"})
    plan = plan_for(run, record("suspended", waiting_for=reason), _finished_pods())
    assert sorted(plan.delete_pods) == ["order-42-2", "order-42-3"]
    default = plan_for(flowrun({"attempts": 2, "podName": "order-42-3"}),
                       record("suspended", waiting_for=reason), _finished_pods())  # fmt: skip
    assert default.delete_pods == []
    crashed = [pod(1, "Succeeded", exit_code=0), pod(2, "Failed", exit_code=1, finished=NOW)]
    retrying = plan_for(flowrun({"attempts": 1, "podName": "order-42-2"},
                                podGC={"strategy": "OnPodCompletion"}),
                        record("running"), crashed)  # fmt: skip
    assert retrying.delete_pods == ["order-42-1"]


def test_the_pod_gc_default_is_a_setting() -> None:
    env = {"ERGON_STORE": "x", "ERGON_STORE_SECRET": "s", "ERGON_POD_GC_STRATEGY": "Never",
           "ERGON_TTL_SECONDS_AFTER_FINISHED": "60"}  # fmt: skip
    settings = Settings.from_env(env)
    assert (settings.pod_gc_strategy, settings.ttl_seconds_after_finished) == ("Never", 60)
    plan = plan_for(flowrun(), record("completed", result="1"), _finished_pods(),
                    settings=settings)  # fmt: skip
    assert plan.delete_pods == []
    for bad in ({"ERGON_POD_GC_STRATEGY": "Sometimes"}, {"ERGON_TTL_SECONDS_AFTER_FINISHED": "-1"},
                {"ERGON_POD_START_GRACE_SECONDS": "soon"}):  # fmt: skip
        with pytest.raises(SettingsError):
            Settings.from_env({"ERGON_STORE": "x", "ERGON_STORE_SECRET": "s", **bad})


def test_the_flowrun_is_deleted_once_its_ttl_after_finishing_has_passed() -> None:
    done = record("completed", result="1")  # updated_at = NOW - 1 min: completedAt
    plan = plan_for(flowrun(ttlSecondsAfterFinished=120), done, [])
    assert not plan.delete_flowrun and plan.wake_at == NOW + timedelta(seconds=60)
    late = plan_for(flowrun(ttlSecondsAfterFinished=60), done, [])
    assert late.delete_flowrun
    assert not plan_for(flowrun(), done, []).delete_flowrun  # no TTL: kept
    running = plan_for(flowrun(ttlSecondsAfterFinished=0), record("running"), [pod(1, "Running")])
    assert not running.delete_flowrun
    settings = Settings(store="x", store_secret="s", ttl_seconds_after_finished=0)
    assert plan_for(flowrun(), done, [], settings=settings).delete_flowrun
