"""The Deployment and ReplicaSet controllers: pods from templates, scaling, rollouts, replacement
of ended pods, garbage collection, and the status kubectl reads."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, cast

import pytest

from tests.cluster.deployments import fenceposts, template_hash
from tests.cluster.fixtures import TestCluster, start_cluster, wait_for

pytestmark = pytest.mark.integration  # drives the test cluster in a subprocess

# Writes MARKS/<pod>.started once its SIGTERM handler is in place, MARKS/<pod> on SIGTERM, then
# (after $LINGER seconds) MARKS/<pod>.exited with the time it exits.
WORKER = """
import os, pathlib, signal, sys, time
marks, pod = pathlib.Path(os.environ["MARKS"]), os.environ["POD"]
def term(*_):
    (marks / pod).write_text("SIGTERM")
    time.sleep(float(os.environ.get("LINGER", "0")))
    (marks / f"{pod}.exited").write_text(repr(time.time()))
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
(marks / f"{pod}.started").write_text(repr(time.time()))
time.sleep(3600)
"""


def deployment(
    name: str, marks: Path, *, replicas: int = 2, env: dict[str, str] | None = None, **spec: Any
) -> str:
    variables = [
        {"name": "MARKS", "value": str(marks)},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        *({"name": k, "value": v} for k, v in (env or {}).items()),
    ]
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "containers": [
                            {
                                "name": "worker",
                                "image": "ergon:dev",
                                "command": ["python", "-c", WORKER],
                                "env": variables,
                            }
                        ]
                    },
                },
                **spec,
            },
        }
    )


def get(cluster: TestCluster, ns: str, what: str, *selector: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "-n", ns, what, *selector, "-o", "json").stdout
    return cast(dict[str, Any], json.loads(out))


def pods(cluster: TestCluster, ns: str, app: str) -> list[dict[str, Any]]:
    return cast(list[dict[str, Any]], get(cluster, ns, "pods", "-l", f"app={app}")["items"])


def names(items: list[dict[str, Any]]) -> set[str]:
    return {item["metadata"]["name"] for item in items}


def rollout(cluster: TestCluster, ns: str, name: str) -> str:
    return cluster.kubectl("rollout", "status", "-n", ns, f"deploy/{name}", "--timeout=30s").stdout


def started(marks: Path, items: list[dict[str, Any]]) -> bool:
    return all((marks / f"{name}.started").exists() for name in names(items))


def test_a_deployment_runs_scales_and_rolls_out(
    test_cluster: TestCluster, cluster_namespace: str, tmp_path: Path
) -> None:
    cluster, ns = test_cluster, cluster_namespace
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=deployment("w", tmp_path))
    assert 'deployment "w" successfully rolled out' in rollout(cluster, ns, "w")

    (rs,) = get(cluster, ns, "rs")["items"]
    d = get(cluster, ns, "deploy/w")
    template_hash_label = rs["metadata"]["labels"]["pod-template-hash"]
    assert rs["metadata"]["name"] == f"w-{template_hash_label}"
    assert rs["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "w",
            "uid": d["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert rs["spec"]["selector"]["matchLabels"] == {
        "app": "w",
        "pod-template-hash": template_hash_label,
    }
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    running = pods(cluster, ns, "w")
    assert len(running) == 2
    for pod in running:
        assert pod["status"]["phase"] == "Running"
        assert pod["metadata"]["name"].startswith(f"{rs['metadata']['name']}-")
        assert pod["metadata"]["labels"]["pod-template-hash"] == template_hash_label
        (ref,) = pod["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["uid"]) == (
            "ReplicaSet",
            rs["metadata"]["name"],
            rs["metadata"]["uid"],
        )
        assert ref["controller"] is True and ref["blockOwnerDeletion"] is True
    status = d["status"]
    assert status["observedGeneration"] == d["metadata"]["generation"]
    assert (status["replicas"], status["updatedReplicas"], status["readyReplicas"]) == (2, 2, 2)
    assert status["availableReplicas"] == 2 and "unavailableReplicas" not in status
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions == {
        "Available": ("True", "MinimumReplicasAvailable"),
        "Progressing": ("True", "NewReplicaSetAvailable"),
    }

    # Scale to zero: the pods get SIGTERM and go; the ReplicaSet stays, empty.
    wait_for(lambda: started(tmp_path, running), message="the workers' SIGTERM handlers")
    cluster.kubectl("scale", "-n", ns, "deploy/w", "--replicas=0")
    wait_for(lambda: not pods(cluster, ns, "w"), message="the pods to go")
    for name in names(running):
        assert (tmp_path / name).read_text() == "SIGTERM"
    rs = get(cluster, ns, f"rs/{rs['metadata']['name']}")
    assert rs["spec"]["replicas"] == 0 and rs["status"]["replicas"] == 0
    rollout(cluster, ns, "w")

    cluster.kubectl("scale", "-n", ns, "deploy/w", "--replicas=3")
    rollout(cluster, ns, "w")
    assert len(pods(cluster, ns, "w")) == 3

    # A new template: a second ReplicaSet takes over, the first stays at 0 as history.
    cluster.kubectl("set", "env", "-n", ns, "deploy/w", "COLOUR=blue")
    assert 'deployment "w" successfully rolled out' in rollout(cluster, ns, "w")
    replica_sets = {r["metadata"]["name"]: r for r in get(cluster, ns, "rs")["items"]}
    assert len(replica_sets) == 2
    old = replica_sets.pop(rs["metadata"]["name"])
    (new,) = replica_sets.values()
    assert old["spec"]["replicas"] == 0 and new["spec"]["replicas"] == 3
    assert new["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    d = get(cluster, ns, "deploy/w")
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    new_hash = new["metadata"]["labels"]["pod-template-hash"]
    wait_for(
        lambda: (
            {p["metadata"]["labels"]["pod-template-hash"] for p in pods(cluster, ns, "w")}
            == {new_hash}
        ),
        message="only pods of the new template",
    )
    current = pods(cluster, ns, "w")
    assert len(current) == 3
    for pod in current:
        env = pod["spec"]["containers"][0]["env"]
        assert {"name": "COLOUR", "value": "blue"} in env
    history = cluster.kubectl("rollout", "history", "-n", ns, "deploy/w").stdout
    assert history.split()[-4:] == ["1", "<none>", "2", "<none>"]
    table = cluster.kubectl("get", "-n", ns, "deploy/w").stdout
    assert table.split()[5:9] == ["w", "3/3", "3", "3"]


def test_the_replicaset_replaces_pods_that_end(
    test_cluster: TestCluster, cluster_namespace: str, tmp_path: Path
) -> None:
    cluster, ns = test_cluster, cluster_namespace
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=deployment("r", tmp_path))
    rollout(cluster, ns, "r")
    first, second = sorted(names(pods(cluster, ns, "r")))

    # A crash restarts the container in the same pod (restartPolicy Always): no replacement.
    cluster.kill_pod(ns, first, "kill")
    wait_for(
        lambda: any(
            p["metadata"]["name"] == first
            and p["status"]["containerStatuses"][0]["restartCount"] == 1
            and "running" in p["status"]["containerStatuses"][0]["state"]
            for p in pods(cluster, ns, "r")
        ),
        message="the container's restart",
    )
    assert names(pods(cluster, ns, "r")) == {first, second}

    # A pod that fails for good (node lost) is replaced; the failed one stays until deleted.
    cluster.kill_pod(ns, first, "node-lost")
    wait_for(lambda: len(pods(cluster, ns, "r")) == 3, message="a replacement for the lost pod")
    by_name = {p["metadata"]["name"]: p for p in pods(cluster, ns, "r")}
    assert by_name[first]["status"]["phase"] == "Failed"
    # A pod that disappears is replaced too.
    cluster.kill_pod(ns, second, "delete")
    wait_for(
        lambda: (
            len([p for p in pods(cluster, ns, "r") if p["status"]["phase"] != "Failed"]) == 2
            and second not in names(pods(cluster, ns, "r"))
        ),
        message="a replacement for the deleted pod",
    )
    rollout(cluster, ns, "r")
    # So is one deleted by a client, after its graceful shutdown.
    victim = min(names([p for p in pods(cluster, ns, "r") if p["status"]["phase"] == "Running"]))
    wait_for(lambda: (tmp_path / f"{victim}.started").exists(), message="the worker to start")
    cluster.kubectl("delete", "pod", "-n", ns, victim)
    assert (tmp_path / victim).read_text() == "SIGTERM"
    wait_for(
        lambda: len([p for p in pods(cluster, ns, "r") if p["status"]["phase"] == "Running"]) == 2,
        message="a replacement for the deleted pod",
    )
    rs = get(cluster, ns, "rs")["items"][0]["status"]
    assert (rs["replicas"], rs["readyReplicas"], rs["availableReplicas"]) == (2, 2, 2)
    assert rs["fullyLabeledReplicas"] == 2


def test_scaling_down_prefers_a_lower_pod_deletion_cost(
    test_cluster: TestCluster, cluster_namespace: str, tmp_path: Path
) -> None:
    cluster, ns = test_cluster, cluster_namespace
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=deployment("p", tmp_path, replicas=3))
    rollout(cluster, ns, "p")
    first, _, third = sorted(names(pods(cluster, ns, "p")))  # (names are random)
    for pod, cost in ((first, "-5"), (third, "5")):
        cluster.kubectl(
            "annotate", "-n", ns, f"pod/{pod}", f"controller.kubernetes.io/pod-deletion-cost={cost}"
        )
    cluster.kubectl("scale", "-n", ns, "deploy/p", "--replicas=1")
    wait_for(lambda: names(pods(cluster, ns, "p")) == {third}, message="the dearest pod alone")


@pytest.mark.parametrize("cascade", ["background", "foreground"])
def test_deleting_a_deployment_collects_its_replicasets_and_pods(
    test_cluster: TestCluster, cluster_namespace: str, tmp_path: Path, cascade: str
) -> None:
    cluster, ns = test_cluster, cluster_namespace
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=deployment("g", tmp_path))
    rollout(cluster, ns, "g")
    cluster.kubectl("set", "env", "-n", ns, "deploy/g", "AGAIN=1")
    rollout(cluster, ns, "g")
    running = pods(cluster, ns, "g")
    wait_for(lambda: started(tmp_path, running), message="the workers' SIGTERM handlers")
    cluster.kubectl("delete", "-n", ns, "deploy/g", f"--cascade={cascade}")
    if cascade == "foreground":  # kubectl waited for the dependents to go
        assert get(cluster, ns, "rs")["items"] == []
    wait_for(
        lambda: not get(cluster, ns, "rs")["items"] and not pods(cluster, ns, "g"),
        message="the ReplicaSets and pods to be collected",
    )
    for name in names(running):
        assert (tmp_path / name).read_text() == "SIGTERM"


def test_orphaned_replicasets_are_adopted_again(
    test_cluster: TestCluster, cluster_namespace: str, tmp_path: Path
) -> None:
    cluster, ns = test_cluster, cluster_namespace
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=deployment("o", tmp_path, replicas=1))
    rollout(cluster, ns, "o")
    (pod,) = names(pods(cluster, ns, "o"))
    cluster.kubectl("delete", "-n", ns, "deploy/o", "--cascade=orphan")
    (rs,) = get(cluster, ns, "rs")["items"]
    assert "ownerReferences" not in rs["metadata"]
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=deployment("o", tmp_path, replicas=1))
    rollout(cluster, ns, "o")
    (adopted,) = get(cluster, ns, "rs")["items"]
    assert adopted["metadata"]["uid"] == rs["metadata"]["uid"]
    assert adopted["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    assert names(pods(cluster, ns, "o")) == {pod}  # the same pod: nothing restarted


def test_rolling_update_steps_within_max_surge_and_max_unavailable(
    test_cluster: TestCluster, cluster_namespace: str, tmp_path: Path
) -> None:
    cluster, ns = test_cluster, cluster_namespace
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    manifest = deployment("u", tmp_path, replicas=3, strategy=strategy)
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=manifest)
    rollout(cluster, ns, "u")
    (old,) = names(get(cluster, ns, "rs")["items"])
    cluster.kubectl("set", "env", "-n", ns, "deploy/u", "V=2")
    rollout(cluster, ns, "u")
    (new,) = names(get(cluster, ns, "rs")["items"]) - {old}
    events = get(
        cluster,
        ns,
        "events",
        "--field-selector",
        "involvedObject.kind=Deployment,involvedObject.name=u,reason=ScalingReplicaSet",
    )["items"]
    messages = [
        e["message"] for e in sorted(events, key=lambda e: int(e["metadata"]["resourceVersion"]))
    ]
    assert messages == [
        f"Scaled up replica set {old} from 0 to 3",
        f"Scaled up replica set {new} from 0 to 1",
        f"Scaled down replica set {old} from 3 to 2",
        f"Scaled up replica set {new} from 1 to 2",
        f"Scaled down replica set {old} from 2 to 1",
        f"Scaled up replica set {new} from 2 to 3",
        f"Scaled down replica set {old} from 1 to 0",
    ]


def test_recreate_starts_new_pods_after_the_old_ones_are_gone(
    test_cluster: TestCluster, cluster_namespace: str, tmp_path: Path
) -> None:
    cluster, ns = test_cluster, cluster_namespace
    manifest = deployment("c", tmp_path, env={"LINGER": "1"}, strategy={"type": "Recreate"})
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=manifest)
    rollout(cluster, ns, "c")
    old = pods(cluster, ns, "c")
    wait_for(lambda: started(tmp_path, old), message="the workers' SIGTERM handlers")
    cluster.kubectl("set", "env", "-n", ns, "deploy/c", "V=2")
    rollout(cluster, ns, "c")
    new = pods(cluster, ns, "c")
    assert len(new) == 2 and not names(new) & names(old)
    wait_for(lambda: started(tmp_path, new), message="the new workers")
    last_exit = max(float((tmp_path / f"{n}.exited").read_text()) for n in names(old))
    first_start = min(float((tmp_path / f"{n}.started").read_text()) for n in names(new))
    assert first_start > last_exit


def test_progress_deadline_and_replica_failure(
    test_cluster: TestCluster, cluster_namespace: str, tmp_path: Path
) -> None:
    cluster, ns = test_cluster, cluster_namespace
    manifest = json.loads(deployment("f", tmp_path, progressDeadlineSeconds=1))
    manifest["spec"]["template"]["spec"]["serviceAccountName"] = "later"
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(manifest))
    result = cluster.kubectl(
        "rollout", "status", "-n", ns, "deploy/f", "--timeout=20s", check=False
    )
    assert result.returncode != 0
    assert 'deployment "f" exceeded its progress deadline' in result.stderr
    conditions = {c["type"]: c for c in get(cluster, ns, "deploy/f")["status"]["conditions"]}
    assert conditions["Progressing"]["reason"] == "ProgressDeadlineExceeded"
    assert conditions["Available"]["reason"] == "MinimumReplicasUnavailable"
    assert conditions["ReplicaFailure"]["reason"] == "FailedCreate"
    assert 'serviceaccount "later" not found' in conditions["ReplicaFailure"]["message"]

    # The ReplicaSet keeps trying; once the account exists its pods start.
    cluster.kubectl("create", "serviceaccount", "-n", ns, "later")
    wait_for(lambda: len(pods(cluster, ns, "f")) == 2, message="the pods", timeout=30)
    cluster.kubectl(
        "wait",
        "-n",
        ns,
        "deploy/f",
        "--for=jsonpath={.status.availableReplicas}=2",
        "--timeout=20s",
    )
    conditions = {c["type"]: c for c in get(cluster, ns, "deploy/f")["status"]["conditions"]}
    assert "ReplicaFailure" not in conditions


def test_min_ready_seconds_delays_availability(
    test_cluster: TestCluster, cluster_namespace: str, tmp_path: Path
) -> None:
    cluster, ns = test_cluster, cluster_namespace
    manifest = deployment("m", tmp_path, replicas=1, minReadySeconds=3)
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=manifest)

    def ready_not_available() -> bool:
        status = get(cluster, ns, "deploy/m").get("status") or {}
        return status.get("readyReplicas") == 1 and "availableReplicas" not in status

    # Ready at once, available 3 s later (2 s at least: timestamps have whole seconds).
    wait_for(ready_not_available, message="a ready, not yet available replica")
    seen = time.monotonic()
    rollout(cluster, ns, "m")
    assert time.monotonic() - seen > 0.5
    status = get(cluster, ns, "deploy/m")["status"]
    assert status["availableReplicas"] == 1 and status["readyReplicas"] == 1


def test_workload_validation(test_cluster: TestCluster, cluster_namespace: str) -> None:
    cluster, ns = test_cluster, cluster_namespace
    manifest = json.loads(deployment("v", Path("/tmp")))
    manifest["spec"]["selector"] = {"matchLabels": {"app": "other"}}
    result = cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(manifest), check=False)
    assert "`selector` does not match template `labels`" in result.stderr
    manifest = json.loads(deployment("v", Path("/tmp")))
    manifest["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    result = cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(manifest), check=False)
    assert 'Unsupported value: "Never": supported values: "Always"' in result.stderr


def test_without_the_controller_deployments_only_report_availability(tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path / "cluster", extra_args=["--no-deployment-controller"])
    try:
        cluster.kubectl("create", "namespace", "plain")
        cluster.kubectl("apply", "-n", "plain", "-f", "-", input=deployment("s", tmp_path))
        assert 'deployment "s" successfully rolled out' in rollout(cluster, "plain", "s")
        assert get(cluster, "plain", "rs")["items"] == [] and pods(cluster, "plain", "s") == []
    finally:
        cluster.stop()


def test_template_hash_and_fenceposts() -> None:
    template = {"metadata": {"labels": {"app": "w"}}, "spec": {"containers": [{"name": "w"}]}}
    first = template_hash(template, None)
    assert first == template_hash(json.loads(json.dumps(template)), None)
    assert first != template_hash(template, 1)
    assert set(first) <= set("bcdfghjklmnpqrstvwxz2456789") and 1 <= len(first) <= 10

    def d(replicas: int, surge: Any = "25%", unavailable: Any = "25%") -> dict[str, Any]:
        rolling = {"maxSurge": surge, "maxUnavailable": unavailable}
        return {"spec": {"replicas": replicas, "strategy": {"rollingUpdate": rolling}}}

    assert fenceposts(d(4)) == (1, 1)
    assert fenceposts(d(3)) == (1, 0)  # surge rounds up, unavailability down
    assert fenceposts(d(10, 0, 0)) == (0, 1)
    assert fenceposts(d(10, "50%", 2)) == (5, 2)
