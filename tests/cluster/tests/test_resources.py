"""Custom resources and the API semantics clients rely on, driven through kubectl."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest

from tests.cluster.fixtures import TestCluster

from .manifests import FLOWRUN_CRD, flowrun

pytestmark = pytest.mark.integration  # drives the test cluster in a subprocess


@pytest.fixture(scope="module")
def crd(test_cluster: TestCluster) -> None:
    test_cluster.kubectl("apply", "-f", "-", input=FLOWRUN_CRD)
    test_cluster.kubectl(
        "wait", "--for=condition=Established", "crd/flowruns.ergon.dev", "--timeout=10s"
    )


def get(cluster: TestCluster, namespace: str, *what: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "-n", namespace, *what, "-o", "json").stdout
    return cast(dict[str, Any], json.loads(out))


@pytest.mark.usefixtures("crd")
def test_custom_resource_is_defaulted_and_listed_with_printer_columns(
    test_cluster: TestCluster,
    cluster_namespace: str,
) -> None:
    ns = cluster_namespace
    test_cluster.kubectl("apply", "-n", ns, "-f", "-", input=flowrun("order-42"))
    test_cluster.kubectl(
        "patch",
        "-n",
        ns,
        "fr",
        "order-42",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"phase": "Running", "attempts": 2}}',
    )

    table = test_cluster.kubectl("get", "-n", ns, "flowruns").stdout.splitlines()
    assert table[0].split() == ["NAME", "FLOW", "PHASE", "ATTEMPTS", "AGE"]
    assert table[1].split()[:4] == ["order-42", "examples.orders:OrderFlow", "Running", "2"]
    by_category = test_cluster.kubectl("get", "-n", ns, "ergon", "-o", "name").stdout
    assert by_category.strip() == "flowrun.ergon.dev/order-42"

    obj = get(test_cluster, ns, "fr", "order-42")
    assert obj["spec"]["retry"] == {"maxAttempts": 3, "backoffSeconds": 10}
    assert obj["metadata"]["uid"] and obj["metadata"]["creationTimestamp"]


@pytest.mark.usefixtures("crd")
def test_schema_violations_are_rejected_with_field_paths(
    test_cluster: TestCluster,
    cluster_namespace: str,
) -> None:
    bad = flowrun("bad", flow="", retry={"maxAttempts": 0}, phaseHint="Medium")
    result = test_cluster.kubectl(
        "apply", "-n", cluster_namespace, "-f", "-", input=bad, check=False
    )
    assert result.returncode != 0
    assert "spec.flow: Invalid value" in result.stderr
    assert "spec.retry.maxAttempts: Invalid value: 0" in result.stderr
    assert 'spec.phaseHint: Unsupported value: "Medium"' in result.stderr

    missing = (
        '{"apiVersion":"ergon.dev/v1alpha1","kind":"FlowRun","metadata":{"name":"m"},'
        '"spec":{"flow":"a:B"}}'
    )
    result = test_cluster.kubectl(
        "create", "-n", cluster_namespace, "-f", "-", input=missing, check=False
    )
    assert "spec.input: Required value" in result.stderr

    unknown = flowrun("unknown", bogus=1)
    result = test_cluster.kubectl(
        "apply", "-n", cluster_namespace, "-f", "-", input=unknown, check=False
    )
    assert 'unknown field "spec.bogus"' in result.stderr


@pytest.mark.usefixtures("crd")
def test_cel_rules_make_flow_and_input_immutable(
    test_cluster: TestCluster,
    cluster_namespace: str,
) -> None:
    ns = cluster_namespace
    test_cluster.kubectl("apply", "-n", ns, "-f", "-", input=flowrun("imm"))
    result = test_cluster.kubectl(
        "patch",
        "-n",
        ns,
        "fr",
        "imm",
        "--type=merge",
        "-p",
        '{"spec": {"flow": "other:Flow"}}',
        check=False,
    )
    assert result.returncode != 0
    assert 'spec.flow: Invalid value: "string": flow is immutable' in result.stderr
    result = test_cluster.kubectl(
        "patch",
        "-n",
        ns,
        "fr",
        "imm",
        "--type=merge",
        "-p",
        '{"spec": {"input": {"order_id": "43"}}}',
        check=False,
    )
    assert "input is immutable" in result.stderr
    test_cluster.kubectl(
        "patch", "-n", ns, "fr", "imm", "--type=merge", "-p", '{"spec": {"cancel": true}}'
    )


@pytest.mark.usefixtures("crd")
def test_generation_status_and_resource_version(
    test_cluster: TestCluster,
    cluster_namespace: str,
) -> None:
    ns = cluster_namespace
    test_cluster.kubectl("apply", "-n", ns, "-f", "-", input=flowrun("gen"))
    first = get(test_cluster, ns, "fr", "gen")
    assert first["metadata"]["generation"] == 1

    # status through the main endpoint is ignored; through /status it lands, generation stays
    test_cluster.kubectl(
        "patch", "-n", ns, "fr", "gen", "--type=merge", "-p", '{"status": {"phase": "Sneaky"}}'
    )
    assert "status" not in get(test_cluster, ns, "fr", "gen")
    test_cluster.kubectl(
        "patch",
        "-n",
        ns,
        "fr",
        "gen",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"phase": "Running"}, "spec": {"cancel": true}}',
    )
    after_status = get(test_cluster, ns, "fr", "gen")
    assert after_status["status"] == {"phase": "Running"}
    assert "cancel" not in after_status["spec"]
    assert after_status["metadata"]["generation"] == 1
    assert int(after_status["metadata"]["resourceVersion"]) > int(
        first["metadata"]["resourceVersion"]
    )

    test_cluster.kubectl(
        "patch", "-n", ns, "fr", "gen", "--type=merge", "-p", '{"spec": {"cancel": true}}'
    )
    assert get(test_cluster, ns, "fr", "gen")["metadata"]["generation"] == 2
    test_cluster.kubectl("label", "-n", ns, "fr", "gen", "team=a")
    assert get(test_cluster, ns, "fr", "gen")["metadata"]["generation"] == 2

    stale = dict(first, spec={**first["spec"], "cancel": False})
    result = test_cluster.kubectl(
        "replace", "-n", ns, "-f", "-", input=json.dumps(stale), check=False
    )
    assert result.returncode != 0
    assert "the object has been modified" in result.stderr


@pytest.mark.usefixtures("crd")
def test_scale_subresource(test_cluster: TestCluster, cluster_namespace: str) -> None:
    ns = cluster_namespace
    test_cluster.kubectl("apply", "-n", ns, "-f", "-", input=flowrun("sc", parallelism=1))
    test_cluster.kubectl("scale", "-n", ns, "fr/sc", "--replicas=3")
    assert get(test_cluster, ns, "fr", "sc")["spec"]["parallelism"] == 3


def test_label_and_field_selectors(test_cluster: TestCluster, cluster_namespace: str) -> None:
    ns = cluster_namespace
    for name, labels in (("a", "tier=web,env=prod"), ("b", "tier=db,env=prod"), ("c", "tier=web")):
        test_cluster.kubectl("create", "configmap", "-n", ns, name)
        test_cluster.kubectl("label", "-n", ns, "configmap", name, *labels.split(","))

    def names(*selector: str) -> list[str]:
        out = test_cluster.kubectl(
            "get", "-n", ns, "configmaps", *selector, "-o", "jsonpath={.items[*].metadata.name}"
        ).stdout
        return out.split()

    assert names("-l", "tier=web") == ["a", "c"]
    assert names("-l", "tier!=web") == ["b"]
    assert names("-l", "tier in (db,cache)") == ["b"]
    assert names("-l", "env notin (prod),tier") == ["c"]
    assert names("-l", "env") == ["a", "b"]
    assert names("-l", "!env,tier") == ["c"]
    assert names("--field-selector", "metadata.name=b") == ["b"]
    assert names("--field-selector", "metadata.name!=b", "-l", "tier") == ["a", "c"]
    result = test_cluster.kubectl(
        "get", "-n", ns, "configmaps", "--field-selector", "data.x=1", check=False
    )
    assert "field label not supported" in result.stderr


def test_patch_flavours_on_a_deployment(test_cluster: TestCluster, cluster_namespace: str) -> None:
    ns = cluster_namespace
    test_cluster.kubectl("create", "deployment", "-n", ns, "web", "--image=nginx:1", "--port=80")
    strategic = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "nginx", "env": [{"name": "A", "value": "1"}]},
                        {"name": "sidecar", "image": "busybox:1"},
                    ]
                }
            }
        }
    }
    test_cluster.kubectl("patch", "-n", ns, "deploy/web", "-p", json.dumps(strategic))
    containers = get(test_cluster, ns, "deploy", "web")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["nginx", "sidecar"]
    assert containers[0]["image"] == "nginx:1"
    assert containers[0]["env"] == [{"name": "A", "value": "1"}]
    assert containers[0]["ports"][0]["containerPort"] == 80

    test_cluster.kubectl(
        "patch",
        "-n",
        ns,
        "deploy/web",
        "--type=json",
        "-p",
        '[{"op": "remove", "path": "/spec/template/spec/containers/1"}]',
    )
    test_cluster.kubectl("set", "image", "-n", ns, "deploy/web", "nginx=nginx:2")
    deployment = get(test_cluster, ns, "deploy", "web")
    assert [c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]] == ["nginx:2"]
    assert deployment["metadata"]["generation"] == 4


def test_server_side_apply_removes_dropped_fields_and_reports_conflicts(
    test_cluster: TestCluster,
    cluster_namespace: str,
) -> None:
    ns = cluster_namespace
    first = (
        '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"ssa","labels":{"a":"b"}},'
        '"data":{"x":"1","y":"2"}}'
    )
    second = '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"ssa"},"data":{"x":"1"}}'
    test_cluster.kubectl("apply", "--server-side", "-n", ns, "-f", "-", input=first)
    test_cluster.kubectl("apply", "--server-side", "-n", ns, "-f", "-", input=second)
    obj = get(test_cluster, ns, "cm", "ssa", "--show-managed-fields")
    assert obj["data"] == {"x": "1"}
    assert "labels" not in obj["metadata"]
    assert obj["metadata"]["managedFields"][0]["manager"] == "kubectl"

    other = second.replace('"x":"1"', '"x":"2"')
    result = test_cluster.kubectl(
        "apply",
        "--server-side",
        "--field-manager=other",
        "-n",
        ns,
        "-f",
        "-",
        input=other,
        check=False,
    )
    assert 'conflict with "kubectl"' in result.stderr
    test_cluster.kubectl(
        "apply",
        "--server-side",
        "--field-manager=other",
        "--force-conflicts",
        "-n",
        ns,
        "-f",
        "-",
        input=other,
    )
    assert get(test_cluster, ns, "cm", "ssa")["data"] == {"x": "2"}
