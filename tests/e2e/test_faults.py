"""The operator under faults (issue 14): each numbered case of the issue as a test, plus operator
kills at chosen points, a database that refuses connections for longer than the operator's
timeouts, and leader failover with runs in flight.

Every test ends by checking the documented final state and that no run it created is left in a
non-terminal phase without a condition saying why (`settled`). Backoffs and deadlines are short
so each test takes seconds. The faults are injected with kubectl where a real cluster allows it
(pod deletion, `--cascade=orphan`, a status cleared through the status subresource, a CRD
replaced for a moment); the operator kill, the database outage and /healthz need the test
cluster (`Environment` skips them elsewhere).
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from tests.cluster.fixtures import wait_for
from tests.e2e.environment import Environment, TestClusterEnvironment, flow_state

pytestmark = pytest.mark.integration

TERMINAL = {"Succeeded", "Failed", "Cancelled"}
KEEP_PODS = {"strategy": "Never"}  # podGC: tests that count pods or read their logs at the end
CONDITION_MESSAGE_LIMIT = 32768  # metav1.Condition.message maxLength


def flowrun(name: str, flow: str, input: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "ergon.dev/v1alpha1",
        "kind": "FlowRun",
        "metadata": {"name": name},
        "spec": {"flow": flow, "input": input, **spec},
    }


def batch(name: str, items: list[str], seconds: float, **spec: Any) -> dict[str, Any]:
    input = {"items": items, "seconds_per_item": seconds}
    return flowrun(name, "examples.batch:BatchFlow", input, **spec)


def approval(name: str, request_id: str, **spec: Any) -> dict[str, Any]:
    return flowrun(name, "examples.approval:ApprovalFlow", {"request_id": request_id}, **spec)


def signal(name: str, flowrun_name: str, by: str) -> dict[str, Any]:
    return {
        "apiVersion": "ergon.dev/v1alpha1",
        "kind": "Signal",
        "metadata": {"name": name},
        "spec": {
            "flowRun": flowrun_name,
            "name": "approval",
            "payload": {"approved": True, "by": by},
        },
    }


# -- helpers ----------------------------------------------------------------------------------


def owned_pods(k8s: Environment, name: str) -> list[dict[str, Any]]:
    """The run's worker pods by owner uid (not by label alone), oldest first."""
    uid = k8s.flowrun(name)["metadata"]["uid"]
    out = k8s.kubectl("get", "pods", "-l", f"ergon.dev/flowrun={name}", "-o", "json")
    pods = [
        p
        for p in json.loads(out.stdout)["items"]
        if any(o.get("uid") == uid for o in p["metadata"].get("ownerReferences") or [])
    ]
    return sorted(pods, key=lambda p: (p["metadata"]["creationTimestamp"], p["metadata"]["name"]))


def logs(k8s: Environment, pod: str) -> str:
    result = k8s.kubectl("logs", pod, check=False)
    return result.stdout if result.returncode == 0 else ""


def phase(k8s: Environment, name: str) -> str:
    return str(k8s.status(name).get("phase", ""))


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status.get("conditions") or []}


def reasons(status: dict[str, Any]) -> set[str]:
    return {str(c.get("reason", "")) for c in status.get("conditions") or []}


def settled(k8s: Environment, *names: str) -> None:
    """Each run is terminal, or carries a condition with a reason and a message saying why not."""
    for name in names:
        status = k8s.status(name)
        if status.get("phase") in TERMINAL:
            continue
        explained = [
            c
            for c in status.get("conditions") or []
            if c.get("reason") and c.get("message") and c["type"] != "Succeeded"
        ]
        assert explained, f"{name} is {status.get('phase')!r} with nothing saying why: {status}"


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def healthz(url: str, *, timeout: float) -> int:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def warning(k8s: Environment, name: str, reason: str) -> bool:
    return any(t == "Warning" and r == reason for t, r, _ in k8s.event_details(name))


# -- 1. a deleted worker pod -------------------------------------------------------------------


@pytest.mark.parametrize("how", ["delete", "force-delete"])
def test_deleted_worker_pod_is_retried_after_exactly_its_backoff(
    k8s: Environment, name: str, how: str
) -> None:
    backoff = 4
    k8s.apply(
        batch(
            name,
            ["a", "b", "c", "d"],
            1.0,
            retry={"maxAttempts": 3, "backoffSeconds": backoff, "maxBackoffSeconds": backoff},
            podGC=KEEP_PODS,
        )
    )
    wait_for(
        lambda: any(
            "processed b" in logs(k8s, p["metadata"]["name"]) for p in owned_pods(k8s, name)
        ),
        timeout=60,
        message="two items processed",
    )
    (first,) = owned_pods(k8s, name)
    force = ["--grace-period=0", "--force"] if how == "force-delete" else []
    k8s.kubectl("delete", "pod", first["metadata"]["name"], *force, "--wait=true")
    deleted_at = time.time()
    ready_while_backing_off: set[str] = set()

    def next_pod() -> dict[str, Any] | None:
        status = k8s.status(name)
        if "BackoffRetry" in reasons(status):  # waiting for the retry: not Ready
            ready_while_backing_off.add(conditions(status).get("Ready", {}).get("status", ""))
        return next(iter(owned_pods(k8s, name)), None)

    second = wait_for(next_pod, timeout=backoff + 30, message="the next attempt's pod")
    delay = seconds(second["metadata"]["creationTimestamp"]) - deleted_at
    # The backoff counts from the end of the attempt, which is at or just before the deletion;
    # 1 s of slack for timestamps in whole seconds, 3 s for the operator to notice.
    assert backoff - 2 <= delay <= backoff + 3, f"next attempt after {delay:.1f} s"
    assert ready_while_backing_off == {"False"}, ready_while_backing_off
    status = k8s.wait_phase(name, "Succeeded", timeout=90)
    assert status["result"] == {"processed": 4, "last": "d:ok"}
    assert status["attempts"] == 2
    replayed = logs(k8s, second["metadata"]["name"])
    assert "processing a" not in replayed and "processing b" not in replayed  # not re-run
    assert "processed d" in replayed
    settled(k8s, name)


# -- 2. an error message over 32 KiB -----------------------------------------------------------


def test_error_message_over_32k_fails_the_run_with_a_truncated_message(
    k8s: Environment, name: str
) -> None:
    # 4,000 invalid items: pydantic reports each, so the flow's error is well over 32 KiB.
    k8s.apply(flowrun(name, "examples.batch:BatchFlow", {"items": list(range(4000))}))
    status = k8s.wait_phase(name, "Failed", timeout=60)
    message = status["error"]["message"]
    assert len(message.encode()) <= CONDITION_MESSAGE_LIMIT
    assert "items.3999" not in message  # cut, not whole
    assert any(marker in message.lower() for marker in ("truncated", "…", "...")), message[-200:]
    for condition in status["conditions"]:
        assert len(condition.get("message", "").encode()) <= CONDITION_MESSAGE_LIMIT
    assert not any(p["status"]["phase"] == "Running" for p in owned_pods(k8s, name))
    settled(k8s, name)


# -- 3. a Pending Signal across an operator restart -------------------------------------------


def test_pending_signal_survives_an_operator_restart(k8s: Environment, name: str) -> None:
    early = f"{name}-early"
    k8s.apply(signal(early, name, "early"))

    def signal_status() -> dict[str, Any]:
        body = json.loads(k8s.kubectl("get", "signal", early, "-o", "json").stdout)
        return dict(body.get("status") or {})

    wait_for(lambda: signal_status().get("phase") == "Pending", message="the signal Pending")
    k8s.restart_operator(while_down=lambda: time.sleep(1))
    k8s.apply(approval(name, "p"))  # nothing touches the Signal itself
    status = k8s.wait_phase(name, "Succeeded", timeout=120)
    assert status["result"] == "request p approved by early"
    body = json.loads(k8s.kubectl("get", "signal", early, "-o", "json").stdout)
    assert body["status"]["phase"] == "Delivered"
    assert body["status"].get("observedGeneration") == body["metadata"]["generation"]
    settled(k8s, name)


# -- 4. an empty or invalid signal name --------------------------------------------------------


def test_empty_signal_name_is_rejected_by_the_api_server(k8s: Environment, name: str) -> None:
    manifest = approval(name, "e")
    manifest["spec"]["signals"] = {"": {"approved": True}}
    result = k8s.kubectl("apply", "-f", "-", input=json.dumps(manifest), check=False)
    if result.returncode == 0:
        k8s.kubectl("delete", "flowrun", name, "--wait=false")  # don't leave it to the others
    assert result.returncode != 0, result.stdout
    assert "spec.signals" in result.stderr, result.stderr


@contextlib.contextmanager
def signal_names_unchecked(k8s: Environment) -> Iterator[None]:
    """The FlowRun CRD without its rules on signal names, for as long as the block runs: how an
    invalid name gets into a spec "somehow" (a CRD from an older release, ratcheting)."""
    crd = json.loads(k8s.kubectl("get", "crd", "flowruns.ergon.dev", "-o", "json").stdout)
    original = copy.deepcopy(crd)
    for version in crd["spec"]["versions"]:
        spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
        signals = spec["properties"]["signals"]
        for key in ("x-kubernetes-validations", "propertyNames", "maxProperties"):
            signals.pop(key, None)
        spec["x-kubernetes-validations"] = [
            rule
            for rule in spec.get("x-kubernetes-validations") or []
            if "signals" not in rule.get("rule", "")
        ] or None
        if spec["x-kubernetes-validations"] is None:
            del spec["x-kubernetes-validations"]
    k8s.kubectl("replace", "-f", "-", input=json.dumps(crd))
    try:
        yield
    finally:
        current = json.loads(k8s.kubectl("get", "crd", "flowruns.ergon.dev", "-o", "json").stdout)
        original["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        k8s.kubectl("replace", "-f", "-", input=json.dumps(original))


def test_invalid_signal_name_in_a_spec_does_not_block_cancel(k8s: Environment, name: str) -> None:
    manifest = batch(name, ["a", "b", "c", "d", "e", "f"], 3.0)
    manifest["spec"]["signals"] = {"": {"approved": True}}
    with signal_names_unchecked(k8s):
        k8s.apply(manifest)
        time.sleep(3)  # a few reconciles with the bad name in the spec
        k8s.kubectl("patch", "flowrun", name, "--type", "merge", "-p", '{"spec":{"cancel":true}}')
    try:
        status = k8s.wait_phase(name, "Cancelled", timeout=60)
        assert conditions(status)["Succeeded"]["status"] == "False"
        wait_for(
            lambda: all(p["status"]["phase"] != "Running" for p in owned_pods(k8s, name)),
            timeout=60,
            message="the worker pod to stop",
        )
        settled(k8s, name)
    finally:
        k8s.kubectl("delete", "flowrun", name, "--wait=false")


# -- 5. a pod that cannot be created or cannot start -------------------------------------------


def test_rejected_pod_creation_is_reported_on_the_flowrun(k8s: Environment, name: str) -> None:
    manifest = flowrun(name, "examples.orders:OrderFlow", {"order_id": "1", "amount": 1})
    manifest["spec"]["podTemplate"] = {"serviceAccountName": "no-such-account"}
    k8s.apply(manifest)
    wait_for(
        lambda: "PodRejected" in reasons(k8s.status(name)),
        timeout=30,
        message="a PodRejected condition",
    )
    status = k8s.status(name)
    rejected = [c for c in status["conditions"] if c.get("reason") == "PodRejected"]
    assert "no-such-account" in rejected[0]["message"]
    assert status.get("phase") != "Running"
    wait_for(lambda: warning(k8s, name, "PodRejected"), message="a PodRejected Warning Event")
    assert not owned_pods(k8s, name)
    settled(k8s, name)
    k8s.kubectl("delete", "flowrun", name, "--wait=false")


def test_missing_store_secret_is_reported_then_recovers(k8s: Environment, name: str) -> None:
    secret_name, _ = k8s.store_secret()
    saved = json.loads(k8s.kubectl("get", "secret", secret_name, "-o", "json").stdout)
    restore = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": secret_name, "labels": saved["metadata"].get("labels") or {}},
        "type": saved.get("type", "Opaque"),
        "data": saved["data"],
    }
    k8s.kubectl("delete", "secret", secret_name)
    try:
        k8s.apply(flowrun(name, "examples.orders:OrderFlow", {"order_id": "5", "amount": 5}))
        wait_for(
            lambda: "CreateContainerConfigError" in reasons(k8s.status(name)),
            timeout=30,
            message="a CreateContainerConfigError condition",
        )
        status = k8s.status(name)
        assert "executing" not in json.dumps(status.get("conditions"))
        wait_for(
            lambda: warning(k8s, name, "CreateContainerConfigError"),
            message="a CreateContainerConfigError Warning Event",
        )
        settled(k8s, name)
    finally:
        k8s.apply(restore)
    status = k8s.wait_phase(name, "Succeeded", timeout=60)
    assert status["result"] == "order 5: charged 5.00, tracking TRK-5"


# -- 6. operator killed between pod creation and the status patch ----------------------------


def test_deadline_holds_when_the_operator_dies_before_the_status_patch(
    k8s: Environment, name: str
) -> None:
    k8s.apply(batch(name, [f"i{i}" for i in range(12)], 5.0, timeoutSeconds=8, podGC=KEEP_PODS))

    def lose_the_status_patch() -> None:
        # Down right after the pod was created: the status write it would have made is lost.
        k8s.kubectl(
            "patch", "flowrun", name, "--subresource=status", "--type=merge", "-p",
            '{"status":null}',
        )  # fmt: skip

    wait_for(lambda: owned_pods(k8s, name), timeout=30, interval=0.02, message="the first pod")
    k8s.restart_operator(while_down=lose_the_status_patch)
    status = k8s.wait_phase(name, "Failed", timeout=90)
    assert "DeadlineExceeded" in reasons(status)
    assert warning(k8s, name, "DeadlineExceeded")
    assert "processed i11" not in "".join(
        logs(k8s, p["metadata"]["name"]) for p in owned_pods(k8s, name)
    )
    settled(k8s, name)


# -- operator kill -9 mid-signal delivery -----------------------------------------------------


def test_operator_killed_mid_signal_delivery_delivers_once(k8s: Environment, name: str) -> None:
    k8s.apply(approval(name, "k", podGC=KEEP_PODS))
    k8s.wait_phase(name, "Suspended")
    wait_for(
        lambda: all(p["status"]["phase"] != "Running" for p in owned_pods(k8s, name)),
        message="the first pod finished",
    )
    k8s.apply(signal(f"{name}-go", name, "kill"))
    # Kill as soon as the operator has started on it: the Signal's status or the FlowRun's
    # deliveredSignals may or may not have been written.
    k8s.restart_operator(while_down=lambda: time.sleep(1))
    status = k8s.wait_phase(name, "Succeeded", timeout=120)
    assert status["result"] == "request k approved by kill"
    assert len(owned_pods(k8s, name)) == 2  # one resume, not two
    body = json.loads(k8s.kubectl("get", "signal", f"{name}-go", "-o", "json").stdout)
    assert body["status"]["phase"] == "Delivered"
    settled(k8s, name)


# -- 7. ownership by uid -----------------------------------------------------------------------


def test_flowrun_recreated_after_orphan_delete_runs_cleanly(k8s: Environment, name: str) -> None:
    # The first FlowRun's only attempt is killed, so its orphaned pod is a failed worker pod
    # with the same name label (and, with name-derived pod names, the same pod name).
    k8s.apply(batch(name, ["x"], 30.0, retry={"maxAttempts": 1, "backoffSeconds": 0}))
    wait_for(
        lambda: any(
            "processing x" in logs(k8s, p["metadata"]["name"]) for p in owned_pods(k8s, name)
        ),
        timeout=60,
        message="the first pod running",
    )
    k8s.kill_pod(owned_pods(k8s, name)[0]["metadata"]["name"])
    k8s.wait_phase(name, "Failed", timeout=60)
    old_uid = k8s.flowrun(name)["metadata"]["uid"]
    k8s.kubectl("delete", "flowrun", name, "--cascade=orphan", "--wait=true")
    k8s.apply(
        batch(name, ["y"], 0.5, retry={"maxAttempts": 1, "backoffSeconds": 0}, podGC=KEEP_PODS)
    )
    status = k8s.wait_phase(name, "Succeeded", timeout=60)
    assert status["result"] == {"processed": 1, "last": "y:ok"}
    assert status["flowId"] != old_uid and status["attempts"] == 1
    assert len(owned_pods(k8s, name)) == 1
    settled(k8s, name)


def test_foreign_pod_with_the_worker_label_is_ignored(k8s: Environment, name: str) -> None:
    foreign = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{name}-impostor",
            "labels": {"ergon.dev/flowrun": name, "ergon.dev/pod-sequence": "1"},
        },
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "x", "image": "busybox", "command": ["sh", "-c", "exit 3"]}],
        },
    }
    k8s.apply(foreign)
    wait_for(
        lambda: (
            json.loads(k8s.kubectl("get", "pod", f"{name}-impostor", "-o", "json").stdout)[
                "status"
            ]["phase"]
            == "Failed"
        ),
        timeout=30,
        message="the impostor pod failed",
    )
    try:
        k8s.apply(batch(name, ["a", "b"], 1.0, retry={"maxAttempts": 1}))
        status = k8s.wait_phase(name, "Succeeded", timeout=60)
        assert status["attempts"] == 1
        settled(k8s, name)
    finally:
        k8s.kubectl("delete", "pod", f"{name}-impostor", "--wait=false")


def test_long_names_sharing_a_prefix_do_not_collide(k8s: Environment, name: str) -> None:
    prefix = (name + "-" + "x" * 63)[:61]
    names = [f"{prefix}-a", f"{prefix}-b"]
    assert all(len(n) == 63 for n in names)
    for index, run in enumerate(names):
        input = {"order_id": str(index), "amount": 1}
        k8s.apply(flowrun(run, "examples.orders:OrderFlow", input, podGC=KEEP_PODS))
    for index, run in enumerate(names):
        status = k8s.wait_phase(run, "Succeeded", timeout=60)
        assert status["result"] == f"order {index}: charged 1.00, tracking TRK-{index}"
    pods = [p["metadata"]["name"] for run in names for p in owned_pods(k8s, run)]
    assert len(pods) == len(set(pods)) == 2
    settled(k8s, *names)


# -- 8. a FlowRun deleted while the operator or the database is down --------------------------


def test_flowrun_deleted_while_the_operator_is_down_is_cancelled(
    k8s: Environment, name: str
) -> None:
    if not k8s.store_url:
        pytest.skip("reading the flow record needs the store's DSN")
    k8s.apply(approval(name, "gone"))
    k8s.wait_phase(name, "Suspended")
    uid = k8s.flowrun(name)["metadata"]["uid"]

    def delete() -> None:
        k8s.kubectl("delete", "flowrun", name, "--wait=true")

    k8s.restart_operator(while_down=delete)
    wait_for(lambda: flow_state(k8s, uid) == "cancelled", timeout=120, message="flow cancelled")


def test_flowrun_deleted_while_the_database_is_down_is_cancelled(
    k8s: Environment, name: str
) -> None:
    if not k8s.store_url:
        pytest.skip("reading the flow record needs the store's DSN")
    k8s.apply(approval(name, "dark"))
    k8s.wait_phase(name, "Suspended")
    uid = k8s.flowrun(name)["metadata"]["uid"]
    with k8s.store_outage():
        k8s.kubectl("delete", "flowrun", name, "--wait=true")
        time.sleep(5)  # the operator's DELETED handling fails meanwhile
    wait_for(lambda: flow_state(k8s, uid) == "cancelled", timeout=90, message="flow cancelled")


# -- 9. /healthz without Postgres, and an outage longer than the operator's timeouts ----------


def test_healthz_answers_while_postgres_is_unreachable(k8s: Environment) -> None:
    url = k8s.health_url
    if url is None:
        pytest.skip("the operator's health port is not reachable from here")
    with k8s.store_outage():
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            started = time.monotonic()
            assert healthz(url, timeout=5) == 200
            assert time.monotonic() - started < 2
            time.sleep(1)
    assert healthz(url, timeout=5) == 200


def test_runs_complete_after_a_database_outage_longer_than_the_timeouts(
    k8s: Environment, name: str
) -> None:
    runs = [f"{name}-{i}" for i in range(3)]
    for run in runs:
        k8s.apply(batch(run, ["a", "b", "c"], 2.0))
    k8s.apply(approval(f"{name}-s", "out"))
    wait_for(lambda: all(owned_pods(k8s, r) for r in runs), timeout=30, message="pods started")
    with k8s.store_outage():
        time.sleep(40)  # longer than the operator's store timeouts (30 s)
        k8s.apply(signal(f"{name}-go", f"{name}-s", "outage"))
    for run in runs:
        status = k8s.wait_phase(run, "Succeeded", timeout=90)
        assert status["result"] == {"processed": 3, "last": "c:ok"}
        assert status["attempts"] == 1
    status = k8s.wait_phase(f"{name}-s", "Succeeded", timeout=60)
    assert status["result"] == "request out approved by outage"
    if isinstance(k8s, TestClusterEnvironment):
        assert k8s.operator is not None and k8s.operator.poll() is None  # not crashed
    settled(k8s, *runs, f"{name}-s")


# -- 10. observedGeneration and specific Event reasons ----------------------------------------


def test_signal_status_has_observed_generation(k8s: Environment, name: str) -> None:
    k8s.apply(approval(name, "g"))
    k8s.wait_phase(name, "Suspended")
    k8s.apply(signal(f"{name}-g", name, "gen"))
    k8s.wait_phase(name, "Succeeded")
    body = json.loads(k8s.kubectl("get", "signal", f"{name}-g", "-o", "json").stdout)
    assert body["status"]["phase"] == "Delivered"
    assert body["status"].get("observedGeneration") == body["metadata"]["generation"]


def test_event_reasons_are_specific(k8s: Environment, name: str) -> None:
    late = f"{name}-late"
    retried = f"{name}-retried"
    k8s.apply(batch(late, ["a", "b", "c", "d"], 3.0, timeoutSeconds=3))
    k8s.apply(batch(retried, ["x"], 30.0, retry={"maxAttempts": 1, "backoffSeconds": 0}))
    wait_for(
        lambda: any(
            "processing x" in logs(k8s, p["metadata"]["name"]) for p in owned_pods(k8s, retried)
        ),
        timeout=60,
        message="the pod running",
    )
    k8s.kill_pod(owned_pods(k8s, retried)[0]["metadata"]["name"])
    assert "DeadlineExceeded" in reasons(k8s.wait_phase(late, "Failed", timeout=40))
    assert "RetriesExhausted" in reasons(k8s.wait_phase(retried, "Failed", timeout=40))
    wait_for(lambda: warning(k8s, late, "DeadlineExceeded"), message="DeadlineExceeded Event")
    wait_for(lambda: warning(k8s, retried, "RetriesExhausted"), message="RetriesExhausted Event")
    assert "Failed" not in k8s.events(late) and "Failed" not in k8s.events(retried)


# -- 11. leader failover with runs in flight --------------------------------------------------


def test_runs_in_flight_complete_across_a_leader_failover(k8s: Environment, name: str) -> None:
    runs = [f"{name}-{i}" for i in range(4)]
    for run in runs:
        k8s.apply(batch(run, ["a", "b", "c", "d"], 1.5, podGC=KEEP_PODS))
    k8s.apply(
        flowrun(
            f"{name}-t", "examples.settlement:SettlementFlow", {"batch_id": "f", "delay_seconds": 6}
        )
    )
    wait_for(lambda: all(owned_pods(k8s, r) for r in runs), timeout=30, message="pods started")
    k8s.wait_phase(f"{name}-t", "Suspended")
    k8s.failover()
    for run in runs:
        status = k8s.wait_phase(run, "Succeeded", timeout=90)
        assert status["result"] == {"processed": 4, "last": "d:ok"}
        assert len(owned_pods(k8s, run)) == 1  # neither replica started a second pod
    timer = k8s.wait_phase(f"{name}-t", "Succeeded", timeout=60)
    assert timer["result"] == "batch f: settled 3 payments"
    settled(k8s, *runs, f"{name}-t")
