"""Deletion: finalizers, owner-reference garbage collection, namespace cleanup."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.cluster.fixtures import TestCluster

pytestmark = pytest.mark.integration  # drives the test cluster in a subprocess


def exists(cluster: TestCluster, namespace: str, what: str) -> bool:
    result = cluster.kubectl("get", "-n", namespace, what, "--ignore-not-found", "-o", "name")
    return bool(result.stdout.strip())


def uid(cluster: TestCluster, namespace: str, what: str) -> str:
    return cluster.kubectl("get", "-n", namespace, what, "-o", "jsonpath={.metadata.uid}").stdout


def owned_configmap(name: str, owner_name: str, owner_uid: str, *, block: bool = False) -> str:
    ref: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": owner_name,
        "uid": owner_uid,
    }
    if block:
        ref["blockOwnerDeletion"] = True
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "ownerReferences": [ref]},
        }
    )


def test_finalizer_blocks_deletion_until_removed(
    test_cluster: TestCluster,
    cluster_namespace: str,
) -> None:
    ns = cluster_namespace
    test_cluster.kubectl("create", "configmap", "-n", ns, "held")
    test_cluster.kubectl(
        "patch",
        "-n",
        ns,
        "cm/held",
        "--type=merge",
        "-p",
        '{"metadata": {"finalizers": ["example.com/hold"]}}',
    )
    test_cluster.kubectl("delete", "-n", ns, "cm/held", "--wait=false")
    held = json.loads(test_cluster.kubectl("get", "-n", ns, "cm/held", "-o", "json").stdout)
    assert held["metadata"]["deletionTimestamp"]

    added = test_cluster.kubectl(
        "patch",
        "-n",
        ns,
        "cm/held",
        "--type=json",
        "-p",
        '[{"op": "add", "path": "/metadata/finalizers/-", "value": "example.com/more"}]',
        check=False,
    )
    assert "no new finalizers can be added" in added.stderr

    test_cluster.kubectl(
        "patch", "-n", ns, "cm/held", "--type=merge", "-p", '{"metadata": {"finalizers": null}}'
    )
    test_cluster.kubectl("wait", "-n", ns, "--for=delete", "cm/held", "--timeout=10s")


def test_background_deletion_collects_dependents(
    test_cluster: TestCluster,
    cluster_namespace: str,
) -> None:
    ns = cluster_namespace
    test_cluster.kubectl("create", "configmap", "-n", ns, "owner")
    owner = uid(test_cluster, ns, "cm/owner")
    test_cluster.kubectl(
        "create", "-n", ns, "-f", "-", input=owned_configmap("child", "owner", owner)
    )
    test_cluster.kubectl(
        "create",
        "-n",
        ns,
        "-f",
        "-",
        input=owned_configmap("orphaned-at-birth", "gone", "no-such-uid"),
    )
    test_cluster.kubectl("delete", "-n", ns, "cm/owner")
    test_cluster.kubectl(
        "wait", "-n", ns, "--for=delete", "cm/child", "cm/orphaned-at-birth", "--timeout=10s"
    )


def test_foreground_deletion_waits_for_blocking_dependents(
    test_cluster: TestCluster,
    cluster_namespace: str,
) -> None:
    ns = cluster_namespace
    test_cluster.kubectl("create", "configmap", "-n", ns, "parent")
    parent = uid(test_cluster, ns, "cm/parent")
    test_cluster.kubectl(
        "create", "-n", ns, "-f", "-", input=owned_configmap("kid", "parent", parent, block=True)
    )
    test_cluster.kubectl(
        "patch",
        "-n",
        ns,
        "cm/kid",
        "--type=merge",
        "-p",
        '{"metadata": {"finalizers": ["example.com/slow"]}}',
    )
    test_cluster.kubectl("delete", "-n", ns, "cm/parent", "--cascade=foreground", "--wait=false")
    test_cluster.kubectl(
        "wait", "-n", ns, "cm/kid", "--timeout=10s", "--for=jsonpath={.metadata.deletionTimestamp}"
    )
    parent_now = json.loads(test_cluster.kubectl("get", "-n", ns, "cm/parent", "-o", "json").stdout)
    assert "foregroundDeletion" in parent_now["metadata"]["finalizers"]
    test_cluster.kubectl(
        "patch", "-n", ns, "cm/kid", "--type=merge", "-p", '{"metadata": {"finalizers": []}}'
    )
    test_cluster.kubectl("wait", "-n", ns, "--for=delete", "cm/kid", "cm/parent", "--timeout=10s")


def test_orphan_deletion_keeps_dependents(
    test_cluster: TestCluster,
    cluster_namespace: str,
) -> None:
    ns = cluster_namespace
    test_cluster.kubectl("create", "configmap", "-n", ns, "boss")
    boss = uid(test_cluster, ns, "cm/boss")
    test_cluster.kubectl(
        "create", "-n", ns, "-f", "-", input=owned_configmap("worker", "boss", boss)
    )
    test_cluster.kubectl("delete", "-n", ns, "cm/boss", "--cascade=orphan")
    test_cluster.kubectl("wait", "-n", ns, "--for=delete", "cm/boss", "--timeout=10s")
    worker = json.loads(test_cluster.kubectl("get", "-n", ns, "cm/worker", "-o", "json").stdout)
    assert "ownerReferences" not in worker["metadata"]


def test_namespace_deletion_removes_contents(test_cluster: TestCluster) -> None:
    test_cluster.kubectl("create", "namespace", "doomed")
    test_cluster.kubectl("create", "configmap", "-n", "doomed", "a")
    test_cluster.kubectl("create", "secret", "generic", "-n", "doomed", "b", "--from-literal=k=v")
    test_cluster.kubectl("delete", "namespace", "doomed", "--timeout=20s")
    assert not exists(test_cluster, "default", "namespace/doomed")
    refused = test_cluster.kubectl("delete", "namespace", "default", check=False)
    assert "forbidden" in refused.stderr.lower()
