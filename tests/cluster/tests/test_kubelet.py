"""The process kubelet: phases, exit codes, env, restarts, graceful deletion, logs, kills."""

from __future__ import annotations

import json
import time
from typing import Any, cast

import pytest

from tests.cluster.fixtures import TestCluster, wait_for

from .manifests import pod

pytestmark = pytest.mark.integration  # drives the test cluster in a subprocess


def status(cluster: TestCluster, namespace: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "-n", namespace, f"pod/{name}", "-o", "json").stdout
    return cast(dict[str, Any], json.loads(out).get("status", {}))


def wait_phase(cluster: TestCluster, namespace: str, name: str, phase: str) -> dict[str, Any]:
    cluster.kubectl(
        "wait",
        "-n",
        namespace,
        f"pod/{name}",
        "--timeout=20s",
        f"--for=jsonpath={{.status.phase}}={phase}",
    )
    return status(cluster, namespace, name)


def terminated(pod_status: dict[str, Any]) -> dict[str, Any]:
    return cast(dict[str, Any], pod_status["containerStatuses"][0]["state"]["terminated"])


def test_pods_succeed_and_fail_with_exit_codes(
    test_cluster: TestCluster,
    cluster_namespace: str,
) -> None:
    ns = cluster_namespace
    test_cluster.kubectl("apply", "-n", ns, "-f", "-", input=pod("ok", "echo done"))
    test_cluster.kubectl("apply", "-n", ns, "-f", "-", input=pod("bad", "echo oops >&2; exit 3"))
    ok = wait_phase(test_cluster, ns, "ok", "Succeeded")
    assert terminated(ok)["exitCode"] == 0
    assert terminated(ok)["reason"] == "Completed"
    assert ok["startTime"] and ok["podIP"] == "127.0.0.1"
    bad = wait_phase(test_cluster, ns, "bad", "Failed")
    assert terminated(bad)["exitCode"] == 3
    assert terminated(bad)["reason"] == "Error"
    assert test_cluster.kubectl("logs", "-n", ns, "bad").stdout == "oops\n"
    table = test_cluster.kubectl("get", "-n", ns, "pods").stdout
    assert "Completed" in table and "Error" in table


def test_env_from_secrets_config_maps_and_fields(
    test_cluster: TestCluster,
    cluster_namespace: str,
) -> None:
    ns = cluster_namespace
    env: list[dict[str, Any]] = [
        {"name": "LITERAL", "value": "plain"},
        {"name": "EXPANDED", "value": "$(LITERAL)-more"},
        {"name": "DSN", "valueFrom": {"secretKeyRef": {"name": "db", "key": "dsn"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
    ]
    script = 'echo "$LITERAL $EXPANDED $DSN $MODE $POD $NS $UID"'
    test_cluster.kubectl("create", "configmap", "-n", ns, "settings", "--from-literal=mode=fast")
    test_cluster.kubectl("apply", "-n", ns, "-f", "-", input=pod("env", script, env=env))

    test_cluster.kubectl(
        "wait",
        "-n",
        ns,
        "pod/env",
        "--timeout=20s",
        "--for=jsonpath={.status.containerStatuses[0].state.waiting.reason}"
        "=CreateContainerConfigError",
    )
    waiting = status(test_cluster, ns, "env")
    assert waiting["phase"] == "Pending"
    assert 'secret "db" not found' in waiting["containerStatuses"][0]["state"]["waiting"]["message"]

    test_cluster.kubectl(
        "create", "secret", "generic", "-n", ns, "db", "--from-literal=dsn=postgres://x"
    )
    done = wait_phase(test_cluster, ns, "env", "Succeeded")
    uid = json.loads(test_cluster.kubectl("get", "-n", ns, "pod/env", "-o", "json").stdout)[
        "metadata"
    ]["uid"]
    assert done["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    logs = test_cluster.kubectl("logs", "-n", ns, "env").stdout
    assert logs == f"plain plain-more postgres://x fast env {ns} {uid}\n"


def test_deletion_sends_sigterm_then_sigkill_after_grace(
    test_cluster: TestCluster,
    cluster_namespace: str,
) -> None:
    ns = cluster_namespace
    stubborn = "trap 'echo got TERM' TERM; echo up; while true; do sleep 0.1; done"
    polite = "trap 'echo bye; exit 0' TERM; echo up; while true; do sleep 0.1; done"
    test_cluster.kubectl("apply", "-n", ns, "-f", "-", input=pod("stubborn", stubborn, grace=2))
    test_cluster.kubectl("apply", "-n", ns, "-f", "-", input=pod("polite", polite, grace=30))
    wait_phase(test_cluster, ns, "stubborn", "Running")
    wait_phase(test_cluster, ns, "polite", "Running")
    wait_for(
        lambda: test_cluster.kubectl("logs", "-n", ns, "stubborn").stdout == "up\n",
        message="stubborn pod output",
    )

    started = time.monotonic()
    test_cluster.kubectl("delete", "-n", ns, "pod/stubborn", "--wait=false")
    terminating = json.loads(
        test_cluster.kubectl("get", "-n", ns, "pod/stubborn", "-o", "json").stdout
    )
    assert terminating["metadata"]["deletionTimestamp"]
    assert terminating["metadata"]["deletionGracePeriodSeconds"] == 2
    wait_for(
        lambda: "got TERM" in test_cluster.kubectl("logs", "-n", ns, "stubborn").stdout,
        message="SIGTERM reaching the process",
    )
    test_cluster.kubectl("wait", "-n", ns, "--for=delete", "pod/stubborn", "--timeout=20s")
    assert time.monotonic() - started >= 1.9  # it ignored SIGTERM: SIGKILL came at the deadline

    started = time.monotonic()
    test_cluster.kubectl("delete", "-n", ns, "pod/polite", "--timeout=20s")
    assert time.monotonic() - started < 10  # it exited on SIGTERM, long before its 30s grace


def test_kill_helper_reports_oom_and_restart_policy_applies(
    test_cluster: TestCluster,
    cluster_namespace: str,
) -> None:
    ns = cluster_namespace
    loop = "echo start; while true; do sleep 0.1; done"
    test_cluster.kubectl("apply", "-n", ns, "-f", "-", input=pod("victim", loop))
    test_cluster.kubectl(
        "apply", "-n", ns, "-f", "-", input=pod("phoenix", loop, restart="OnFailure")
    )
    wait_phase(test_cluster, ns, "victim", "Running")
    wait_phase(test_cluster, ns, "phoenix", "Running")

    test_cluster.kill_pod(ns, "victim", mode="oom")
    killed = wait_phase(test_cluster, ns, "victim", "Failed")
    assert terminated(killed)["exitCode"] == 137
    assert terminated(killed)["reason"] == "OOMKilled"

    test_cluster.kill_pod(ns, "phoenix")
    test_cluster.kubectl(
        "wait",
        "-n",
        ns,
        "pod/phoenix",
        "--timeout=20s",
        "--for=jsonpath={.status.containerStatuses[0].restartCount}=1",
    )
    test_cluster.kubectl(
        "wait",
        "-n",
        ns,
        "pod/phoenix",
        "--timeout=20s",
        "--for=jsonpath={.status.containerStatuses[0].state.running.startedAt}",
    )
    restarted = status(test_cluster, ns, "phoenix")
    last = restarted["containerStatuses"][0]["lastState"]["terminated"]
    assert last["exitCode"] == 137 and restarted["phase"] == "Running"


def test_node_loss_fails_the_pod_for_good(
    test_cluster: TestCluster,
    cluster_namespace: str,
) -> None:
    ns = cluster_namespace
    loop = "while true; do sleep 0.1; done"
    test_cluster.kubectl("apply", "-n", ns, "-f", "-", input=pod("lost", loop, restart="Always"))
    wait_phase(test_cluster, ns, "lost", "Running")
    test_cluster.kill_pod(ns, "lost", mode="node-lost")
    lost = wait_phase(test_cluster, ns, "lost", "Failed")
    assert lost["reason"] == "NodeLost"

    test_cluster.kubectl("apply", "-n", ns, "-f", "-", input=pod("vanish", loop))
    wait_phase(test_cluster, ns, "vanish", "Running")
    test_cluster.kill_pod(ns, "vanish", mode="delete")
    test_cluster.kubectl("wait", "-n", ns, "--for=delete", "pod/vanish", "--timeout=20s")


def test_logs_follow_tail_and_timestamps(
    test_cluster: TestCluster,
    cluster_namespace: str,
) -> None:
    ns = cluster_namespace
    script = "for i in 1 2 3 4 5; do echo line $i; done; sleep 0.5; echo last"
    test_cluster.kubectl("apply", "-n", ns, "-f", "-", input=pod("talker", script))
    wait_phase(test_cluster, ns, "talker", "Running")
    followed = test_cluster.kubectl("logs", "-n", ns, "-f", "pod/talker", timeout=20).stdout
    assert followed.splitlines() == ["line 1", "line 2", "line 3", "line 4", "line 5", "last"]
    tail = test_cluster.kubectl("logs", "-n", ns, "pod/talker", "--tail=2").stdout
    assert tail.splitlines() == ["line 5", "last"]
    stamped = test_cluster.kubectl("logs", "-n", ns, "pod/talker", "--timestamps").stdout
    assert stamped.splitlines()[0].endswith("Z line 1")
