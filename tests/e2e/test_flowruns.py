"""FlowRuns and Signals end to end: real kubectl, the Helm chart, the operator, worker pods,
Postgres. Runs on the test cluster by default and on a real cluster with ERGON_E2E_KUBECONFIG."""

from __future__ import annotations

import concurrent.futures
import functools
import json
import time
from typing import Any

import pytest

from tests.cluster.fixtures import wait_for
from tests.e2e.environment import Environment, flow_state

pytestmark = pytest.mark.integration


def flowrun(name: str, flow: str, input: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "ergon.dev/v1alpha1",
        "kind": "FlowRun",
        "metadata": {"name": name},
        "spec": {"flow": flow, "input": input, **spec},
    }


def test_apply_runs_the_flow_to_succeeded_with_its_result(k8s: Environment, name: str) -> None:
    k8s.apply(flowrun(name, "examples.orders:OrderFlow", {"order_id": "42", "amount": 99.5}))
    status = k8s.wait_phase(name, "Succeeded")
    assert status["result"] == "order 42: charged 99.50, tracking TRK-42"
    assert status["stepsCompleted"] == 3
    assert status["flowId"] == k8s.flowrun(name)["metadata"]["uid"]
    assert status["attempts"] == 1 and status["podName"] == f"{name}-1"
    assert status["startedAt"] and status["completedAt"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Succeeded"]["status"] == "True"
    # The status reports the flow's end as soon as the store does, possibly a moment before
    # the pod exits.
    wait_for(
        lambda: [p["status"]["phase"] for p in k8s.pods(name)] == ["Succeeded"],
        message="the pod ended",
    )
    (pod,) = k8s.pods(name)
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "FlowRun"
    assert "completed" in k8s.logs(pod["metadata"]["name"])
    assert {"CreatedPod", "Succeeded"} <= set(k8s.events(name))
    table = k8s.kubectl("get", "fr", name).stdout
    assert "Succeeded" in table and "examples.orders:OrderFlow" in table


def test_signal_by_patch_resumes_a_suspended_flow(k8s: Environment, name: str) -> None:
    k8s.apply(flowrun(name, "examples.approval:ApprovalFlow", {"request_id": "7", "amount": 120}))
    status = k8s.wait_phase(name, "Suspended")
    assert status["waitingFor"] == {"signal": "approval"}
    assert status["waiting"] == "signal:approval"
    wait_for(
        lambda: all(p["status"]["phase"] != "Running" for p in k8s.pods(name)),
        message="no worker pod left running",
    )
    patch = {"spec": {"signals": {"approval": {"approved": True, "by": "ops"}}}}
    k8s.kubectl("patch", "flowrun", name, "--type", "merge", "-p", json.dumps(patch))
    status = k8s.wait_phase(name, "Succeeded")
    assert status["result"] == "request 7 approved by ops"
    assert status["deliveredSignals"] == ["approval"]
    assert status["podName"] == f"{name}-2"  # resumed in a second pod
    _wait_pods_collected(k8s, name, [f"{name}-2"])
    assert {"Suspended", "Resumed"} <= set(k8s.events(name))


def test_signal_resource_is_delivered_once(k8s: Environment, name: str) -> None:
    k8s.apply(flowrun(name, "examples.approval:ApprovalFlow", {"request_id": "8"}))
    k8s.wait_phase(name, "Suspended")
    signal = {
        "apiVersion": "ergon.dev/v1alpha1",
        "kind": "Signal",
        "metadata": {"name": f"{name}-approval"},
        "spec": {"flowRun": name, "name": "approval", "payload": {"approved": False, "by": "cfo"}},
    }
    k8s.apply(signal)
    status = k8s.wait_phase(name, "Succeeded")
    assert status["result"] == "request 8 rejected by cfo"
    delivered = json.loads(k8s.kubectl("get", "signal", f"{name}-approval", "-o", "json").stdout)
    assert delivered["status"]["phase"] == "Delivered" and delivered["status"]["deliveredAt"]


def test_signals_for_missing_or_ended_flowruns(k8s: Environment, name: str) -> None:
    orphan = {
        "apiVersion": "ergon.dev/v1alpha1",
        "kind": "Signal",
        "metadata": {"name": f"{name}-early"},
        "spec": {"flowRun": name, "name": "approval", "payload": {"approved": True, "by": "early"}},
    }
    k8s.apply(orphan)

    def phase_of(signal: str) -> tuple[str, str]:
        body = json.loads(k8s.kubectl("get", "signal", signal, "-o", "json").stdout)
        status = body.get("status") or {}
        return status.get("phase", ""), status.get("message", "")

    def in_phase(signal: str, phase: str) -> tuple[str, str] | None:
        current = phase_of(signal)
        return current if current[0] == phase else None

    pending = wait_for(
        lambda: in_phase(f"{name}-early", "Pending"), message="the orphan signal to be Pending"
    )
    assert "does not exist" in pending[1]
    k8s.apply(flowrun(name, "examples.approval:ApprovalFlow", {"request_id": "9"}))
    status = k8s.wait_phase(name, "Succeeded")  # the early signal is delivered once it appears
    assert status["result"] == "request 9 approved by early"
    late = dict(orphan, metadata={"name": f"{name}-late"})
    k8s.apply(late)
    rejected = wait_for(
        lambda: in_phase(f"{name}-late", "Rejected"), message="the late signal to be Rejected"
    )
    assert "has ended (Succeeded)" in rejected[1]


def test_durable_timer_suspends_then_resumes_in_a_new_pod(k8s: Environment, name: str) -> None:
    k8s.apply(
        flowrun(name, "examples.settlement:SettlementFlow", {"batch_id": "1", "delay_seconds": 3})
    )
    status = k8s.wait_phase(name, "Suspended")
    assert set(status["waitingFor"]) == {"timer"} and status["waiting"].startswith("timer:")
    status = k8s.wait_phase(name, "Succeeded", timeout=60)
    assert status["result"] == "batch 1: settled 3 payments"
    assert status["podName"] == f"{name}-2"  # resumed in a second pod
    _wait_pods_collected(k8s, name, [f"{name}-2"])


def test_killed_pod_is_retried_without_rerunning_completed_steps(
    k8s: Environment, name: str
) -> None:
    items = ["a", "b", "c", "d"]
    k8s.apply(
        flowrun(
            name,
            "examples.batch:BatchFlow",
            {"items": items, "seconds_per_item": 1.0},
            retry={"maxAttempts": 3, "backoffSeconds": 1, "maxBackoffSeconds": 5},
        )
    )
    first = f"{name}-1"
    wait_for(
        lambda: "processed b" in k8s.logs(first) if k8s.pods(name) else False,
        timeout=60,
        message="two items processed",
    )
    k8s.kill_pod(first)
    status = k8s.wait_phase(name, "Succeeded", timeout=90)
    assert status["result"] == {"processed": 4, "last": "d:ok"}
    assert status["attempts"] == 2
    pods = k8s.pods(name)
    assert [p["metadata"]["name"] for p in pods] == [first, f"{name}-2"]
    assert pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 137
    second = k8s.logs(f"{name}-2")
    assert "processing a" not in second and "processing b" not in second  # replayed
    assert "processed d" in second
    assert "Retrying" in k8s.events(name)


def test_retries_run_out(k8s: Environment, name: str) -> None:
    k8s.apply(
        flowrun(
            name,
            "examples.batch:BatchFlow",
            {"items": ["x"], "seconds_per_item": 30},
            retry={"maxAttempts": 2, "backoffSeconds": 0, "maxBackoffSeconds": 0},
        )
    )
    for attempt in (1, 2):
        pod = f"{name}-{attempt}"
        wait_for(
            functools.partial(_logs_contain, k8s, pod, "processing x"),
            timeout=60,
            message=f"{pod} running",
        )
        k8s.kill_pod(pod)
    status = k8s.wait_phase(name, "Failed", timeout=60)
    reasons = {c["type"]: c["reason"] for c in status["conditions"]}
    assert reasons["Succeeded"] == "RetriesExhausted"
    assert status["error"]["type"] == "RetriesExhausted"


def test_invalid_flow_and_invalid_input_fail_clearly(k8s: Environment, name: str) -> None:
    k8s.apply(flowrun(f"{name}-flow", "examples.orders:NoSuchFlow", {"order_id": "1"}))
    k8s.apply(flowrun(f"{name}-input", "examples.orders:OrderFlow", {"amount": "lots"}))
    bad_flow = k8s.wait_phase(f"{name}-flow", "Failed")
    bad_input = k8s.wait_phase(f"{name}-input", "Failed")
    assert {c["type"]: c["reason"] for c in bad_flow["conditions"]}["Succeeded"] == "InvalidFlow"
    assert "NoSuchFlow" in bad_flow["error"]["message"]
    assert {c["type"]: c["reason"] for c in bad_input["conditions"]}["Succeeded"] == "InvalidInput"
    assert "order_id: Field required" in bad_input["error"]["message"]
    assert "amount: Input should be a valid number" in bad_input["error"]["message"]
    assert bad_flow["attempts"] == 1 and len(k8s.pods(f"{name}-flow")) == 1  # not retried


def test_schema_and_immutability_are_enforced_by_the_api_server(
    k8s: Environment, name: str
) -> None:
    missing = k8s.kubectl(
        "apply",
        "-f",
        "-",
        check=False,
        input=json.dumps(
            {
                "apiVersion": "ergon.dev/v1alpha1",
                "kind": "FlowRun",
                "metadata": {"name": name},
                "spec": {"input": {}},
            }
        ),
    )
    assert missing.returncode != 0 and "spec.flow" in missing.stderr
    k8s.apply(flowrun(name, "examples.approval:ApprovalFlow", {"request_id": "1"}))
    changed = k8s.kubectl(
        "patch",
        "flowrun",
        name,
        "--type",
        "merge",
        "-p",
        json.dumps({"spec": {"flow": "examples.orders:OrderFlow"}}),
        check=False,
    )
    assert changed.returncode != 0 and "immutable" in changed.stderr
    k8s.kubectl("delete", "flowrun", name, "--wait=true")


def test_cancel_by_patch_stops_the_flow_and_its_pod(k8s: Environment, name: str) -> None:
    k8s.apply(
        flowrun(name, "examples.batch:BatchFlow", {"items": ["a", "b", "c"], "seconds_per_item": 5})
    )
    wait_for(lambda: "processing a" in _logs(k8s, f"{name}-1"), timeout=60, message="pod running")
    k8s.kubectl("patch", "flowrun", name, "--type", "merge", "-p", '{"spec":{"cancel":true}}')
    status = k8s.wait_phase(name, "Cancelled")
    assert {c["type"]: c["status"] for c in status["conditions"]}["Succeeded"] == "False"
    wait_for(
        lambda: (
            all(p["status"]["phase"] != "Running" for p in k8s.pods(name)) or not k8s.pods(name)
        ),
        timeout=60,
        message="the worker pod to stop",
    )


def test_delete_cancels_the_flow_and_is_not_blocked(k8s: Environment, name: str) -> None:
    k8s.apply(flowrun(name, "examples.approval:ApprovalFlow", {"request_id": "d"}))
    k8s.wait_phase(name, "Suspended")
    uid = k8s.flowrun(name)["metadata"]["uid"]
    assert not k8s.flowrun(name)["metadata"].get("finalizers")
    k8s.kubectl("delete", "flowrun", name, "--timeout=30s")
    wait_for(lambda: not k8s.pods(name), timeout=60, message="pods garbage-collected")
    if k8s.store_url:
        wait_for(lambda: flow_state(k8s, uid) == "cancelled", timeout=30, message="flow cancelled")


def test_operator_restart_mid_run_neither_loses_nor_duplicates_work(
    k8s: Environment, name: str
) -> None:
    k8s.apply(
        flowrun(
            name,
            "examples.batch:BatchFlow",
            {"items": ["a", "b", "c", "d"], "seconds_per_item": 1.0},
        )
    )
    k8s.apply(
        flowrun(
            f"{name}-t", "examples.settlement:SettlementFlow", {"batch_id": "r", "delay_seconds": 4}
        )
    )
    wait_for(lambda: "processing a" in _logs(k8s, f"{name}-1"), timeout=60, message="pod running")
    k8s.wait_phase(f"{name}-t", "Suspended")
    k8s.restart_operator(while_down=lambda: time.sleep(2))
    status = k8s.wait_phase(name, "Succeeded", timeout=90)
    assert status["result"] == {"processed": 4, "last": "d:ok"}
    assert [p["metadata"]["name"] for p in k8s.pods(name)] == [f"{name}-1"]  # no duplicate pod
    timer = k8s.wait_phase(f"{name}-t", "Succeeded", timeout=60)  # the timer survived the restart
    assert timer["result"] == "batch r: settled 3 payments"


def test_twenty_flowruns_at_once(k8s: Environment, name: str) -> None:
    names = [f"{name}-{i}" for i in range(20)]
    manifests = "\n---\n".join(
        json.dumps(flowrun(n, "examples.orders:OrderFlow", {"order_id": str(i), "amount": i}))
        for i, n in enumerate(names)
    )
    started = time.monotonic()
    k8s.kubectl("apply", "-f", "-", input=manifests)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda n: k8s.wait_phase(n, "Succeeded", timeout=180), names))
    elapsed = time.monotonic() - started
    assert [s["result"] for s in statuses] == [
        f"order {i}: charged {i:.2f}, tracking TRK-{i}" for i in range(20)
    ]
    assert all(len(k8s.pods(n)) == 1 for n in names)
    print(f"20 FlowRuns applied at once all Succeeded in {elapsed:.1f} s")


def _wait_pods_collected(k8s: Environment, name: str, left: list[str]) -> None:
    """podGC OnFlowRunCompletion (the default): once the run ends, only its last pod (and its
    last failed one) stay."""
    wait_for(
        lambda: sorted(p["metadata"]["name"] for p in k8s.pods(name)) == left,
        timeout=30,
        message=f"finished pods of {name} collected, {left} kept",
    )


def _logs(k8s: Environment, pod: str) -> str:
    result = k8s.kubectl("logs", pod, check=False)
    return result.stdout if result.returncode == 0 else ""


def _logs_contain(k8s: Environment, pod: str, text: str) -> bool:
    return text in _logs(k8s, pod)
