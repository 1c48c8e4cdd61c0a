"""Watches: kubectl wait, resourceVersion resumption, bookmarks, 410, the Python client."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from tests.cluster.fixtures import TestCluster, scaled

pytestmark = pytest.mark.integration  # drives the test cluster in a subprocess


def api_client(cluster: TestCluster) -> client.ApiClient:
    api: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(cluster.kubeconfig)
    )
    return api


def configmap(name: str, labels: dict[str, str] | None = None) -> client.V1ConfigMap:
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels=labels))


def events(core: client.CoreV1Api, namespace: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    stream = watch.Watch()  # type: ignore[no-untyped-call]
    yield from stream.stream(  # type: ignore[no-untyped-call]
        core.list_namespaced_config_map, namespace, **kwargs
    )


@pytest.fixture
def core(test_cluster: TestCluster) -> Iterator[client.CoreV1Api]:
    api = api_client(test_cluster)
    try:
        yield client.CoreV1Api(api)
    finally:
        api.close()  # type: ignore[no-untyped-call]


def test_kubectl_wait_sees_a_later_change(
    test_cluster: TestCluster,
    cluster_namespace: str,
) -> None:
    ns = cluster_namespace
    test_cluster.kubectl("create", "configmap", "-n", ns, "flag", "--from-literal=state=off")
    waiter = subprocess.Popen(
        [
            str(test_cluster.kubectl_path),
            "wait",
            "-n",
            ns,
            "configmap/flag",
            "--for=jsonpath={.data.state}=on",
            f"--timeout={scaled(20):g}s",
        ],
        env=test_cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.3)  # let the waiter read the initial state and start watching
    test_cluster.kubectl(
        "patch", "-n", ns, "configmap/flag", "--type=merge", "-p", '{"data": {"state": "on"}}'
    )
    out, err = waiter.communicate(timeout=scaled(25))
    assert waiter.returncode == 0, err
    assert "condition met" in out


def test_watch_resumes_from_resource_version(
    test_cluster: TestCluster,
    cluster_namespace: str,
    core: client.CoreV1Api,
) -> None:
    ns = cluster_namespace
    first = core.create_namespaced_config_map(ns, configmap("one"))
    assert first.metadata is not None
    start = first.metadata.resource_version
    core.create_namespaced_config_map(ns, configmap("two", {"x": "y"}))
    core.patch_namespaced_config_map("one", ns, {"data": {"k": "v"}})
    core.delete_namespaced_config_map("two", ns)

    seen = []
    for event in events(core, ns, resource_version=start, timeout_seconds=2):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 3:
            break
    assert seen == [("ADDED", "two"), ("MODIFIED", "one"), ("DELETED", "two")]

    selected = [
        (e["type"], e["object"].metadata.name)
        for e in events(core, ns, resource_version=start, label_selector="x=y", timeout_seconds=1)
    ]
    assert selected == [("ADDED", "two"), ("DELETED", "two")]


def test_bookmarks_and_gone(fresh_cluster: TestCluster) -> None:
    cluster = fresh_cluster
    cluster.kubectl("create", "configmap", "a")
    listed = cluster.request("GET", "/api/v1/namespaces/default/configmaps")
    rv = listed["metadata"]["resourceVersion"]

    url = (
        f"{cluster.server}/api/v1/namespaces/default/configmaps?watch=true"
        f"&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=3"
    )
    with urllib.request.urlopen(url, timeout=scaled(10)) as response:
        first = json.loads(response.readline())
    assert first["type"] == "BOOKMARK"
    assert int(first["object"]["metadata"]["resourceVersion"]) >= int(rv)

    cluster.kubectl("create", "configmap", "b")
    cluster.compact()
    url = f"{cluster.server}/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}"
    with urllib.request.urlopen(url, timeout=scaled(10)) as response:
        error = json.loads(response.readline())
    assert error["type"] == "ERROR"
    assert error["object"]["code"] == 410
    assert error["object"]["reason"] == "Expired"


def test_python_client_sees_conflicts_missing_and_gone(fresh_cluster: TestCluster) -> None:
    api = api_client(fresh_cluster)
    core = client.CoreV1Api(api)
    try:
        created = core.create_namespaced_config_map("default", configmap("c"))
        core.patch_namespaced_config_map("c", "default", {"data": {"a": "1"}})
        created.data = {"a": "2"}
        with pytest.raises(ApiException) as conflict:
            core.replace_namespaced_config_map("c", "default", created)
        assert conflict.value.status == 409
        assert json.loads(str(conflict.value.body))["reason"] == "Conflict"
        with pytest.raises(ApiException) as missing:
            core.read_namespaced_config_map("nope", "default")
        assert missing.value.status == 404

        assert created.metadata is not None
        rv = created.metadata.resource_version
        fresh_cluster.compact()
        with pytest.raises(ApiException) as gone:
            for _ in events(core, "default", resource_version=rv, timeout_seconds=2):
                pass
        assert gone.value.status == 410
    finally:
        api.close()  # type: ignore[no-untyped-call]


def test_many_watchers_get_every_event(test_cluster: TestCluster, cluster_namespace: str) -> None:
    """Fan-out: several concurrent watches each see all creations, in order."""
    ns = cluster_namespace
    url = f"{test_cluster.server}/api/v1/namespaces/{ns}/configmaps?watch=true&timeoutSeconds=5"
    results: list[list[str]] = [[] for _ in range(5)]

    def follow(into: list[str]) -> None:
        with urllib.request.urlopen(url, timeout=scaled(10)) as response:
            for line in response:
                into.append(json.loads(line)["object"]["metadata"]["name"])
                if len(into) == 10:
                    return

    threads = [threading.Thread(target=follow, args=(r,)) for r in results]
    for thread in threads:
        thread.start()
    time.sleep(0.3)  # the watches must be open before the creations
    items = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm{i}"}} for i in range(10)
    ]
    test_cluster.kubectl(
        "create",
        "-n",
        ns,
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
    )
    for thread in threads:
        thread.join(timeout=scaled(10))
    assert all(r == [f"cm{i}" for i in range(10)] for r in results)
