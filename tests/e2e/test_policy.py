"""The worker pod policy end to end: every rule refuses its violating FlowRun with reason
PolicyViolation before any pod exists; what the policy allows runs; worker pods have a
writable /tmp under a read-only root and meet the `restricted` profile.

The install's policy is `environment.E2E_WORKER_POLICY`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.chart.schemas import restricted_violations
from tests.cluster.fixtures import wait_for
from tests.e2e.environment import Environment
from tests.e2e.test_flowruns import flowrun

pytestmark = pytest.mark.integration

ORDER = {"order_id": "1", "amount": 1}

# rule -> (podTemplate or spec fields that break it, the field the refusal must name)
VIOLATIONS: dict[str, tuple[dict[str, Any], str]] = {
    "image": ({"image": "docker.io/evil/miner:1"}, "spec.image"),
    "service-account": (
        {"podTemplate": {"serviceAccountName": "default"}},
        "spec.podTemplate.serviceAccountName",
    ),
    "env-secret": (
        {
            "podTemplate": {
                "env": [
                    {"name": "P", "valueFrom": {"secretKeyRef": {"name": "db-admin", "key": "p"}}}
                ]
            }
        },
        "spec.podTemplate.env[0].valueFrom.secretKeyRef.name",
    ),
    "env-config-map": (
        {
            "podTemplate": {
                "env": [
                    {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "other", "key": "c"}}}
                ]
            }
        },
        "spec.podTemplate.env[0].valueFrom.configMapKeyRef.name",
    ),
    "loader-variable": (
        {"podTemplate": {"env": [{"name": "LD_PRELOAD", "value": "/tmp/x.so"}]}},
        "spec.podTemplate.env[0].name",
    ),
    "label": ({"podTemplate": {"labels": {"app": "payments"}}}, "spec.podTemplate.labels.app"),
    "reserved-label": (
        {"podTemplate": {"labels": {"node.kubernetes.io/x": "y"}}},
        "spec.podTemplate.labels.node.kubernetes.io/x",
    ),
    "annotation": (
        {"podTemplate": {"annotations": {"vault.hashicorp.com/agent-inject": "true"}}},
        "spec.podTemplate.annotations.vault.hashicorp.com/agent-inject",
    ),
    "toleration": (
        {"podTemplate": {"tolerations": [{"operator": "Exists"}]}},
        "spec.podTemplate.tolerations[0]",
    ),
    "node-selector": (
        {"podTemplate": {"nodeSelector": {"node-role.kubernetes.io/control-plane": ""}}},
        "spec.podTemplate.nodeSelector.node-role.kubernetes.io/control-plane",
    ),
    "resources": (
        {"podTemplate": {"resources": {"limits": {"memory": "64Gi"}}}},
        "spec.podTemplate.resources.limits.memory",
    ),
    "secret-volume": (
        {
            "podTemplate": {
                "volumes": [{"name": "creds", "secret": {"secretName": "db-admin"}}],
                "volumeMounts": [{"name": "creds", "mountPath": "/mnt/creds"}],
            }
        },
        "spec.podTemplate.volumes[0].secret.secretName",
    ),
    "mount-path": (
        {
            "podTemplate": {
                "volumes": [{"name": "site", "emptyDir": {}}],
                "volumeMounts": [{"name": "site", "mountPath": "/usr/lib/python3/dist-packages"}],
            }
        },
        "spec.podTemplate.volumeMounts[0].mountPath",
    ),
}


def test_each_rule_refuses_its_flowrun_before_any_pod(k8s: Environment, name: str) -> None:
    names = {rule: f"{name}-{rule}" for rule in VIOLATIONS}
    for rule, (spec, _) in VIOLATIONS.items():
        k8s.apply(flowrun(names[rule], "examples.orders:OrderFlow", ORDER, **spec))
    for rule, (_, field) in VIOLATIONS.items():
        status = k8s.wait_phase(names[rule], "Failed")
        ready = {c["type"]: c for c in status["conditions"]}["Ready"]
        assert ready["reason"] == "PolicyViolation", (rule, ready)
        assert f"{field}:" in ready["message"], (rule, ready["message"])
        assert status["error"]["type"] == "PolicyViolation", rule
        assert k8s.pods(names[rule]) == [], f"{rule}: a pod was created"
        warnings = [m for t, r, m in k8s.event_details(names[rule]) if r == "PolicyViolation"]
        assert len(warnings) == 1 and f"{field}:" in warnings[0], (rule, warnings)
        assert not status.get("podName"), rule


def test_what_the_policy_allows_runs_with_it(k8s: Environment, name: str) -> None:
    allowed = {"name": "e2e-allowed", "key": "token"}
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "e2e-allowed"},
        "stringData": {"token": "t0ken"},
    }
    k8s.apply(secret)
    template = {
        "labels": {"team": "payments"},
        "annotations": {"example.com/owner": "payments"},
        "env": [{"name": "API_TOKEN", "valueFrom": {"secretKeyRef": allowed}}],
        "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "512Mi"}},
        "volumes": [{"name": "token", "secret": {"secretName": "e2e-allowed"}}],
        "volumeMounts": [{"name": "token", "mountPath": "/mnt/token", "readOnly": True}],
    }
    k8s.apply(flowrun(name, "examples.orders:OrderFlow", ORDER, podTemplate=template))
    k8s.wait_phase(name, "Succeeded")
    (pod,) = k8s.pods(name)
    assert pod["metadata"]["labels"]["team"] == "payments"
    assert pod["metadata"]["annotations"]["example.com/owner"] == "payments"
    container = pod["spec"]["containers"][0]
    # limits not given default to the policy's maximum (helm merges the install's maxResources
    # into the chart's, so ephemeral-storage keeps the chart's default)
    limits = {"cpu": "2", "memory": "512Mi", "ephemeral-storage": "10Gi"}
    assert container["resources"]["limits"] == limits


def test_worker_pods_write_to_tmp_under_a_read_only_root(k8s: Environment, name: str) -> None:
    k8s.apply(flowrun(name, "examples.reports:ReportFlow", {"rows": 4}))
    status = k8s.wait_phase(name, "Succeeded")
    assert status["result"].startswith("report of 4 rows, sha256 ")
    (pod,) = k8s.pods(name)
    spec = pod["spec"]
    assert restricted_violations(spec) == []
    container = spec["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}} in spec["volumes"]
    wait_for(lambda: "wrote " in k8s.logs(pod["metadata"]["name"]), message="the step's log line")
    assert "to /tmp" in k8s.logs(pod["metadata"]["name"])


def test_a_pool_that_breaks_the_policy_gets_no_deployment(k8s: Environment, name: str) -> None:
    name = f"evil-{name[-8:].strip('-')}"  # a pool's name is at most 40 characters
    pool = {
        "apiVersion": "ergon.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": name},
        "spec": {
            "image": "docker.io/evil/miner:1",
            "version": "1",
            "imports": ["examples.orders"],
            "replicas": {"min": 1, "max": 2},
        },
    }
    k8s.apply(pool)

    def condition() -> dict[str, Any] | None:
        body = json.loads(k8s.kubectl("get", "workerpool", name, "-o", "json").stdout)
        ready = [
            c for c in (body.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"
        ]
        return ready[0] if ready and ready[0]["reason"] == "PolicyViolation" else None

    wait_for(lambda: condition() is not None, message="a PolicyViolation condition")
    ready = condition()
    assert ready is not None and ready["status"] == "False"
    assert "spec.image:" in ready["message"]
    deployments = json.loads(
        k8s.kubectl("get", "deployments", "-l", f"ergon.dev/workerpool={name}", "-o", "json").stdout
    )["items"]
    assert deployments == []
    assert "PolicyViolation" in k8s.events(name)
