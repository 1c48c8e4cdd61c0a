"""Helm 4 against the test cluster: install, list, upgrade, uninstall of a small chart."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.cluster.fixtures import TestCluster

pytestmark = pytest.mark.integration  # drives the test cluster in a subprocess

CHART = Path(__file__).parent / "charts" / "demo"


def test_install_list_upgrade_uninstall(test_cluster: TestCluster, cluster_namespace: str) -> None:
    ns = cluster_namespace
    test_cluster.helm(
        "install",
        "demo",
        str(CHART),
        "-n",
        ns,
        "--wait",
        "--timeout=30s",
        "--set",
        "extraConfig.colour=blue",
    )
    releases = json.loads(test_cluster.helm("list", "-n", ns, "-o", "json").stdout)
    assert [(r["name"], r["status"], r["revision"]) for r in releases] == [
        ("demo", "deployed", "1")
    ]
    pods = json.loads(
        test_cluster.kubectl(
            "get", "pods", "-n", ns, "-l", "app.kubernetes.io/instance=demo", "-o", "json"
        ).stdout
    )["items"]
    assert [p["status"]["phase"] for p in pods] == ["Running"]  # --wait waited for it

    kinds = test_cluster.kubectl(
        "get",
        "-n",
        ns,
        "deploy,sa,role,rolebinding,secret",
        "-l",
        "app.kubernetes.io/instance=demo",
        "-o",
        "name",
    ).stdout.split()
    assert sorted(kinds) == sorted(
        [
            "deployment.apps/demo-demo",
            "serviceaccount/demo-demo",
            "role.rbac.authorization.k8s.io/demo-demo",
            "rolebinding.rbac.authorization.k8s.io/demo-demo",
            "secret/demo-demo",
        ]
    )
    test_cluster.kubectl("get", f"clusterrole/demo-{ns}-demo-widgets")
    test_cluster.kubectl("wait", "--for=condition=Established", "crd/widgets.demo.example.com")
    test_cluster.kubectl(
        "apply",
        "-n",
        ns,
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "demo.example.com/v1",
                "kind": "Widget",
                "metadata": {"name": "w"},
                "spec": {"size": 2},
            }
        ),
    )

    test_cluster.helm(
        "upgrade", "demo", str(CHART), "-n", ns, "--set", "greeting=hi", "--set", "replicas=2"
    )
    secret = json.loads(
        test_cluster.kubectl("get", "-n", ns, "secret/demo-demo", "-o", "json").stdout
    )
    assert base64.b64decode(secret["data"]["greeting"]) == b"hi"
    assert base64.b64decode(secret["data"]["colour"]) == b"blue"  # stringData keys stay, as in k8s
    replicas = test_cluster.kubectl(
        "get", "-n", ns, "deploy/demo-demo", "-o", "jsonpath={.spec.replicas}"
    ).stdout
    assert replicas == "2"
    history = json.loads(test_cluster.helm("history", "demo", "-n", ns, "-o", "json").stdout)
    assert [h["status"] for h in history] == ["superseded", "deployed"]

    test_cluster.helm("uninstall", "demo", "-n", ns, "--wait")
    assert json.loads(test_cluster.helm("list", "-n", ns, "-o", "json").stdout) == []
    left = test_cluster.kubectl(
        "get", "-n", ns, "deploy,secret,sa", "-l", "app.kubernetes.io/instance=demo", "-o", "name"
    ).stdout
    assert left.strip() == ""
    # CRDs from crds/ stay after uninstall, as Helm documents
    test_cluster.kubectl("get", "crd/widgets.demo.example.com")
