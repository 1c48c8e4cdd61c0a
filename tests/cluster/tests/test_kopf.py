"""A kopf operator (in a subprocess) handles create, update and delete through the cluster."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.fixtures import TestCluster, scaled, wait_for

pytestmark = pytest.mark.integration  # drives the test cluster in a subprocess

OPERATOR = Path(__file__).parent / "kopf_operator.py"
CRD = Path(__file__).parent / "charts" / "demo" / "crds" / "widgets.yaml"


@pytest.fixture
def operator(test_cluster: TestCluster, tmp_path: Path) -> Iterator[Path]:
    test_cluster.kubectl("apply", "-f", str(CRD))
    test_cluster.kubectl("wait", "--for=condition=Established", "crd/widgets.demo.example.com")
    records = tmp_path / "records"
    records.mkdir()
    log = (tmp_path / "kopf.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "kopf", "run", "--standalone", "--all-namespaces", str(OPERATOR)],
        env={**test_cluster.env, "WIDGET_RECORD_DIR": str(records)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield records
    finally:
        process.terminate()
        try:
            process.wait(timeout=scaled(10))
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        if process.returncode not in (0, -15):
            print((tmp_path / "kopf.log").read_text())


def test_operator_handles_create_update_delete(
    test_cluster: TestCluster,
    cluster_namespace: str,
    operator: Path,
) -> None:
    ns = cluster_namespace
    widget = {
        "apiVersion": "demo.example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w1"},
        "spec": {"size": 2},
    }
    test_cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(widget))
    test_cluster.kubectl(
        "wait", "-n", ns, "widget/w1", "--timeout=30s", "--for=jsonpath={.status.phase}=Ready"
    )
    obj = json.loads(test_cluster.kubectl("get", "-n", ns, "widget/w1", "-o", "json").stdout)
    assert obj["status"]["size"] == 2
    assert "demo.example.com/cleanup" in obj["metadata"]["finalizers"]

    test_cluster.kubectl(
        "patch", "-n", ns, "widget/w1", "--type=merge", "-p", '{"spec": {"size": 5}}'
    )
    test_cluster.kubectl(
        "wait", "-n", ns, "widget/w1", "--timeout=30s", "--for=jsonpath={.status.size}=5"
    )

    test_cluster.kubectl("delete", "-n", ns, "widget/w1", "--timeout=30s")
    assert (operator / f"{ns}.w1.deleted").read_text() == "bye\n"

    def kopf_events() -> str:
        return test_cluster.kubectl(
            "get",
            "events",
            "-n",
            ns,
            "--field-selector",
            "involvedObject.name=w1",
            "-o",
            "jsonpath={.items[*].message}",
        ).stdout

    assert "widget of size 2 is ready" in wait_for(kopf_events, message="kopf's event")
    # the same Event, seen through events.k8s.io/v1
    notes = test_cluster.kubectl(
        "get", "events.v1.events.k8s.io", "-n", ns, "-o", "jsonpath={.items[*].note}"
    ).stdout
    assert "widget of size 2 is ready" in notes
