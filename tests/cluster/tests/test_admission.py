"""The test cluster's ServiceAccount admission and its request counter."""

from __future__ import annotations

import json

import pytest

from tests.cluster.fixtures import TestCluster
from tests.cluster.requestlog import RequestCounter, resource_of

pytestmark = pytest.mark.integration  # drives the test cluster in a subprocess


def pod(name: str, account: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "serviceAccountName": account,
                "restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox", "command": ["true"]}],
            },
        }
    )


def test_pod_with_a_missing_service_account_is_forbidden(
    test_cluster: TestCluster, cluster_namespace: str
) -> None:
    ns = cluster_namespace
    refused = test_cluster.kubectl(
        "apply", "-n", ns, "-f", "-", input=pod("p1", "nobody"), check=False
    )
    assert refused.returncode != 0
    assert (
        f'error looking up service account {ns}/nobody: serviceaccount "nobody" not found'
        in refused.stderr
    )
    test_cluster.kubectl("create", "-n", ns, "serviceaccount", "nobody")
    test_cluster.kubectl("apply", "-n", ns, "-f", "-", input=pod("p1", "nobody"))
    test_cluster.kubectl("apply", "-n", ns, "-f", "-", input=pod("p2", "default"))


def test_requests_are_counted_by_agent(test_cluster: TestCluster, cluster_namespace: str) -> None:
    test_cluster.request("GET", "/testing/requests", query={"reset": "true"})
    test_cluster.kubectl("get", "-n", cluster_namespace, "pods")
    counts = test_cluster.request("GET", "/testing/requests")
    rows = [r for r in counts["requests"] if r["agent"] == "kubectl" and r["resource"] == "pods"]
    assert rows and rows[0]["method"] == "GET" and counts["total"] >= 1


def test_resource_of_paths() -> None:
    assert resource_of("/api/v1/namespaces/ns/pods/p/log") == "pods/log"
    assert resource_of("/api/v1/pods") == "pods"
    assert resource_of("/apis/ergon.dev/v1alpha1/namespaces/ns/flowruns/x/status") == (
        "flowruns/status"
    )
    assert resource_of("/apis/ergon.dev/v1alpha1/namespaces/ns/flowruns") == "flowruns"
    assert resource_of("/api/v1/namespaces/ns") == "namespaces"
    counter = RequestCounter()
    counter.record(method="GET", path="/api/v1/pods", agent="kopf/1.37", watch=True)
    assert counter.snapshot(reset=True)["total"] == 1 and counter.snapshot()["total"] == 0
