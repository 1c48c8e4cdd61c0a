"""Worker pools end to end: WorkerPool resources as `ergon worker` Deployments (scaled on the
queue, from and to zero), FlowRuns on a pool (status, signals, timers, cancel, a worker killed
mid-step), a versioned rollout that drains, and the image pinning of pod-per-run FlowRuns.

On the test cluster the image is not pulled (every version runs this checkout), so what pins a
run to its version is checked where it is decided: the version recorded with the flow, which
workers of another version never claim, and which version's pods logged the run's steps."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ergon_operator.pools import deployment_name
from tests.cluster.fixtures import wait_for
from tests.e2e.environment import Environment, flow_state

pytestmark = pytest.mark.integration

IMPORTS = ["examples.batch", "examples.approval", "examples.settlement"]


def short(name: str) -> str:
    """A pool name from a test's unique name: `wp-<its sequence number>`."""
    return f"wp-{name.rsplit('-', 1)[-1]}"


def pool(
    name: str,
    *,
    version: str = "1",
    min_replicas: int = 0,
    max_replicas: int = 2,
    concurrency: int = 4,
    delay: int = 2,
    lease: int = 3,
) -> dict[str, Any]:
    return {
        "apiVersion": "ergon.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": name},
        "spec": {
            "image": f"ghcr.io/acme/ergon-e2e:{version}",
            "version": version,
            "imports": IMPORTS,
            "concurrency": concurrency,
            "replicas": {"min": min_replicas, "max": max_replicas},
            "scaleDownDelaySeconds": delay,
            "leaseSeconds": lease,
            "podTemplate": {"terminationGracePeriodSeconds": 10},
        },
    }


def on_pool(name: str, pool_name: str, flow: str, input: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "ergon.dev/v1alpha1",
        "kind": "FlowRun",
        "metadata": {"name": name},
        "spec": {"flow": flow, "input": input, "workerPool": pool_name},
    }


def workerpool(k8s: Environment, name: str) -> dict[str, Any]:
    return dict(json.loads(k8s.kubectl("get", "workerpool", name, "-o", "json").stdout))


def deployments(k8s: Environment, pool_name: str) -> dict[str, dict[str, Any]]:
    out = k8s.kubectl("get", "deployments", "-l", f"ergon.dev/workerpool={pool_name}", "-o", "json")
    return {d["metadata"]["name"]: d for d in json.loads(out.stdout)["items"]}


def pool_pods(k8s: Environment, pool_name: str) -> list[dict[str, Any]]:
    out = k8s.kubectl("get", "pods", "-l", f"ergon.dev/workerpool={pool_name}", "-o", "json")
    return list(json.loads(out.stdout)["items"])


def running_pods(k8s: Environment, pool_name: str) -> list[str]:
    return [
        p["metadata"]["name"]
        for p in pool_pods(k8s, pool_name)
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]


def replicas(k8s: Environment, pool_name: str, deployment: str) -> int | None:
    found = deployments(k8s, pool_name).get(deployment)
    return None if found is None else int(found["spec"].get("replicas", 1))


def test_a_pool_scales_from_zero_runs_a_flowrun_with_live_status_and_back_to_zero(
    k8s: Environment, name: str
) -> None:
    name = short(name)  # a WorkerPool's name is at most 40 characters
    k8s.apply(pool(name))
    wait_for(
        lambda: replicas(k8s, name, deployment_name(name, "1")) == 0, message="an idle pool at 0"
    )
    assert workerpool(k8s, name)["status"]["phase"] == "Idle"
    items = [f"{name}-item-{i}" for i in range(6)]
    run = f"{name}-run"
    k8s.apply(
        on_pool(run, name, "examples.batch:BatchFlow", {"items": items, "seconds_per_item": 0.6})
    )
    status = k8s.wait_phase(run, "Running", timeout=60)
    assert status["workerPool"] == name and status["version"] == "1"
    seen: set[int] = set()

    def progressed() -> bool:
        seen.add(int(k8s.status(run).get("stepsCompleted") or 0))
        return any(0 < n < len(items) for n in seen)

    wait_for(progressed, timeout=30, interval=0.2, message="STEPS advancing while it runs")
    status = k8s.wait_phase(run, "Succeeded", timeout=60)
    assert status["result"] == {"processed": 6, "last": f"{items[-1]}:ok"}
    assert status["stepsCompleted"] == 6
    assert k8s.pods(run) == []  # no pod of its own
    assert {"Scheduled", "Succeeded"} <= set(k8s.events(run))
    table = k8s.kubectl("get", "fr", run, "-o", "wide").stdout
    assert name in table  # the POOL column
    # Idle again: back to zero after scaleDownDelaySeconds.
    wait_for(
        lambda: replicas(k8s, name, deployment_name(name, "1")) == 0,
        timeout=60,
        message="back to zero",
    )
    wait_for(lambda: running_pods(k8s, name) == [], timeout=60, message="no worker left")
    assert "ScaledUp" in k8s.events(name) and "ScaledDown" in k8s.events(name)
    assert "1" in k8s.kubectl("get", "wp", name).stdout


def test_signals_timers_and_cancel_on_a_pool(k8s: Environment, name: str) -> None:
    name = short(name)  # a WorkerPool's name is at most 40 characters
    k8s.apply(pool(name))
    approval, timer, cancel = f"{name}-approval", f"{name}-timer", f"{name}-cancel"
    k8s.apply(on_pool(approval, name, "examples.approval:ApprovalFlow", {"request_id": "9"}))
    k8s.apply(
        on_pool(
            timer, name, "examples.settlement:SettlementFlow", {"batch_id": "3", "delay_seconds": 4}
        )
    )
    k8s.apply(
        on_pool(
            cancel,
            name,
            "examples.batch:BatchFlow",
            {"items": [str(i) for i in range(60)], "seconds_per_item": 0.5},
        )
    )
    status = k8s.wait_phase(approval, "Suspended", timeout=60)
    assert status["waitingFor"] == {"signal": "approval"}
    assert k8s.wait_phase(timer, "Suspended", timeout=60)["waitingFor"].get("timer")
    k8s.wait_phase(cancel, "Running", timeout=60)
    k8s.apply(
        {
            "apiVersion": "ergon.dev/v1alpha1",
            "kind": "Signal",
            "metadata": {"name": f"{approval}-yes"},
            "spec": {
                "flowRun": approval,
                "name": "approval",
                "payload": {"approved": True, "by": "ops"},
            },
        }
    )
    assert k8s.wait_phase(approval, "Succeeded", timeout=60)["result"] == (
        "request 9 approved by ops"
    )
    assert k8s.wait_phase(timer, "Succeeded", timeout=60)["result"].startswith("batch 3")
    k8s.kubectl("patch", "flowrun", cancel, "--type", "merge", "-p", '{"spec":{"cancel":true}}')
    k8s.wait_phase(cancel, "Cancelled", timeout=30)
    uid = k8s.flowrun(cancel)["metadata"]["uid"]
    assert flow_state(k8s, uid) == "cancelled"
    steps = int(k8s.status(cancel).get("stepsCompleted") or 0)
    assert steps < 60


def test_a_pool_worker_killed_mid_step_is_replaced_and_the_flow_resumes(
    k8s: Environment, name: str
) -> None:
    name = short(name)  # a WorkerPool's name is at most 40 characters
    k8s.apply(pool(name, max_replicas=1))
    run = f"{name}-run"
    k8s.apply(
        on_pool(
            run,
            name,
            "examples.batch:BatchFlow",
            {"items": [f"k{i}" for i in range(8)], "seconds_per_item": 0.5},
        )
    )
    k8s.wait_phase(run, "Running", timeout=60)
    wait_for(
        lambda: int(k8s.status(run).get("stepsCompleted") or 0) >= 2,
        timeout=30,
        interval=0.1,
        message="two steps done",
    )
    (victim,) = running_pods(k8s, name)
    k8s.kill_pod(victim)  # SIGKILL mid-step: its lease (3 s) runs out, another worker resumes
    status = k8s.wait_phase(run, "Succeeded", timeout=90)
    assert status["result"] == {"processed": 8, "last": "k7:ok"}
    # The killed worker came back (restartPolicy Always) or was replaced: the flow finished in
    # another process than the one that began it.
    pods = {p["metadata"]["name"]: p for p in pool_pods(k8s, name)}
    restarts = [
        c.get("restartCount", 0)
        for c in (pods[victim]["status"].get("containerStatuses") or [])
        if victim in pods
    ]
    assert victim not in pods or sum(restarts) >= 1


def test_a_rollout_drains_the_old_version_and_never_moves_a_run(
    k8s: Environment, name: str
) -> None:
    name = short(name)  # a WorkerPool's name is at most 40 characters
    k8s.apply(pool(name, version="1", min_replicas=1))
    wait_for(lambda: len(running_pods(k8s, name)) == 1, timeout=60, message="v1 worker up")
    v1_waiting = [f"{name}-v1-wait-{i}" for i in range(2)]
    for run in v1_waiting:
        k8s.apply(on_pool(run, name, "examples.approval:ApprovalFlow", {"request_id": run}))
    v1_busy = f"{name}-v1-busy"
    k8s.apply(
        on_pool(
            v1_busy,
            name,
            "examples.batch:BatchFlow",
            {"items": [f"v1item{i}" for i in range(16)], "seconds_per_item": 0.5},
        )
    )
    for run in v1_waiting:
        k8s.wait_phase(run, "Suspended", timeout=60)
    k8s.wait_phase(v1_busy, "Running", timeout=60)
    # Roll out version 2.
    k8s.apply(pool(name, version="2", min_replicas=1))
    wait_for(
        lambda: deployment_name(name, "2") in deployments(k8s, name),
        timeout=30,
        message="v2 Deployment",
    )
    v2_run = f"{name}-v2-run"
    k8s.apply(
        on_pool(
            v2_run, name, "examples.batch:BatchFlow", {"items": ["v2item"], "seconds_per_item": 0}
        )
    )
    assert k8s.wait_phase(v2_run, "Succeeded", timeout=60)["version"] == "2"
    versions = {v["version"]: v["state"] for v in workerpool(k8s, name)["status"]["versions"]}
    assert versions == {"2": "Active", "1": "Draining"}
    assert deployment_name(name, "1") in deployments(k8s, name)  # still serving its runs
    # v1's suspended runs wake up and finish on v1.
    for run in v1_waiting:
        k8s.kubectl(
            "patch",
            "flowrun",
            run,
            "--type",
            "merge",
            "-p",
            '{"spec":{"signals":{"approval":{"approved":true,"by":"ops"}}}}',
        )
    for run in [*v1_waiting, v1_busy]:
        status = k8s.wait_phase(run, "Succeeded", timeout=90)
        assert status["version"] == "1", run
    v2_pods = [p for p in running_pods(k8s, name) if p.startswith(deployment_name(name, "2") + "-")]
    assert v2_pods, "v2 has its own worker"
    for pod in v2_pods:
        assert "v1item" not in k8s.logs(pod)  # no v1 step ran on v2's code
    # Drained: v1's Deployment is removed, v2 keeps serving.
    wait_for(
        lambda: deployment_name(name, "1") not in deployments(k8s, name),
        timeout=90,
        message="v1 removed",
    )
    versions = {v["version"]: v["state"] for v in workerpool(k8s, name)["status"]["versions"]}
    assert versions == {"2": "Active", "1": "Drained"}
    assert "VersionDrained" in k8s.events(name)


def test_a_pod_per_run_flowrun_keeps_its_image_when_the_default_changes(
    k8s: Environment, name: str
) -> None:
    k8s.apply(
        {
            "apiVersion": "ergon.dev/v1alpha1",
            "kind": "FlowRun",
            "metadata": {"name": name},
            "spec": {"flow": "examples.approval:ApprovalFlow", "input": {"request_id": "5"}},
        }
    )
    first = k8s.wait_phase(name, "Suspended")["image"]
    assert k8s.pods(name)[0]["spec"]["containers"][0]["image"] == first
    changed = f"{first}-next"
    k8s.set_operator_env("ERGON_WORKER_IMAGE", changed)
    try:
        k8s.kubectl(
            "patch",
            "flowrun",
            name,
            "--type",
            "merge",
            "-p",
            '{"spec":{"signals":{"approval":{"approved":true,"by":"ops"}}}}',
        )
        status = k8s.wait_phase(name, "Succeeded", timeout=90)
        assert status["image"] == first
        images = {p["spec"]["containers"][0]["image"] for p in k8s.pods(name)}
        assert images == {first}, images
        fresh = f"{name}-new"
        k8s.apply(
            {
                "apiVersion": "ergon.dev/v1alpha1",
                "kind": "FlowRun",
                "metadata": {"name": fresh},
                "spec": {"flow": "examples.batch:BatchFlow", "input": {"items": ["x"]}},
            }
        )
        assert k8s.wait_phase(fresh, "Succeeded", timeout=60)["image"] == changed
    finally:
        k8s.set_operator_env("ERGON_WORKER_IMAGE", first)
