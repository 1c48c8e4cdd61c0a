"""The chart's ValidatingAdmissionPolicy applies the operator's worker policy: on the test
cluster (which enforces ValidatingAdmissionPolicies), `kubectl apply` refuses each FlowRun the
operator would refuse, naming the same field, and accepts what the operator accepts.

The cases are the e2e suite's (tests/e2e/test_policy.py), under the e2e install's policy."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest

from ergon_operator.policy import WorkerPolicy, violations
from tests.chart.helm import CRDS_DIR, render
from tests.chart.schemas import validate_builtin
from tests.cluster.fixtures import (  # noqa: F401 (fixtures)
    TestCluster,
    cluster_namespace,
    test_cluster,
)
from tests.e2e.environment import E2E_WORKER_POLICY
from tests.e2e.test_policy import VIOLATIONS

pytestmark = pytest.mark.integration  # drives the test cluster in a subprocess

WORKER_IMAGE = "ghcr.io/ergon-dev/ergon:0.1.0-worker"
ALLOWED: dict[str, dict[str, Any]] = {
    "plain": {},
    "default-image": {"image": WORKER_IMAGE},
    "allowed-image": {"image": "ghcr.io/acme/ergon-e2e:3"},
    "allowed-template": {
        "podTemplate": {
            "labels": {"team": "payments"},
            "annotations": {"example.com/owner": "payments"},
            "env": [
                {"name": "T", "valueFrom": {"secretKeyRef": {"name": "e2e-allowed", "key": "t"}}},
                {"name": "LOG_LEVEL", "value": "debug"},
            ],
            "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}},
            "volumes": [{"name": "cache", "emptyDir": {}}],
            "volumeMounts": [{"name": "cache", "mountPath": "/data/cache"}],
        }
    },
}


@pytest.fixture
def policy_namespace(test_cluster: TestCluster, cluster_namespace: str) -> Iterator[str]:  # noqa: F811
    """The chart's CRDs, and its admission policy bound to `cluster_namespace` only."""
    for crd in sorted(CRDS_DIR.glob("*.yaml")):
        test_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    values = {
        "postgres.existingSecret": "store",
        "workerPolicy": E2E_WORKER_POLICY | {"admissionPolicy": {"enabled": True}},
        "operator.watchNamespaces": [cluster_namespace],
    }
    docs = [
        d
        for d in render(values, namespace=cluster_namespace)
        if d["kind"].startswith("ValidatingAdmissionPolicy")
    ]
    assert [d["kind"] for d in docs] == [
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    name = docs[0]["metadata"]["name"]
    for doc in docs:
        doc["metadata"]["name"] = f"{name}-{cluster_namespace}"[:253]
    docs[1]["spec"]["policyName"] = docs[0]["metadata"]["name"]
    manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
    test_cluster.kubectl("apply", "-f", "-", input=manifest)
    try:
        yield cluster_namespace
    finally:
        test_cluster.kubectl("delete", "-f", "-", input=manifest, check=False)


def flowrun(name: str, spec: dict[str, Any]) -> str:
    return json.dumps(
        {
            "apiVersion": "ergon.dev/v1alpha1",
            "kind": "FlowRun",
            "metadata": {"name": name},
            "spec": {"flow": "examples.orders:OrderFlow", "input": {}, **copy.deepcopy(spec)},
        }
    )


def operator_verdict(spec: dict[str, Any]) -> list[str]:
    policy = WorkerPolicy.model_validate(
        {k: v for k, v in E2E_WORKER_POLICY.items() if k != "admissionPolicy"}
        | {"maxResources": {"cpu": "2", "memory": "1Gi", "ephemeral-storage": "10Gi"}}
    )
    return violations(
        policy=policy,
        default_image=WORKER_IMAGE,
        image=spec.get("image"),
        template=spec.get("podTemplate") or {},
    )


def test_kubectl_apply_refuses_what_the_operator_refuses(
    test_cluster: TestCluster,  # noqa: F811
    policy_namespace: str,
) -> None:
    for rule, (spec, field) in VIOLATIONS.items():
        assert operator_verdict(spec), f"{rule}: the operator lets it through"
        result = test_cluster.kubectl(
            "-n", policy_namespace, "apply", "-f", "-", input=flowrun(rule, spec), check=False
        )
        assert result.returncode != 0, f"{rule}: kubectl apply accepted it"
        # The admission policy names the pod template's field (spec.podTemplate.env), the
        # operator the exact item (spec.podTemplate.env[0].name).
        parts = field.split("[")[0].split(".")
        prefix = ".".join(parts[:3]) if parts[1] == "podTemplate" else ".".join(parts[:2])
        assert "ValidatingAdmissionPolicy" in result.stderr, (rule, result.stderr)
        assert f"{prefix}:" in result.stderr or f"{prefix}." in result.stderr, (rule, result.stderr)


def test_kubectl_apply_accepts_what_the_operator_accepts(
    test_cluster: TestCluster,  # noqa: F811
    policy_namespace: str,
) -> None:
    for case, spec in ALLOWED.items():
        assert operator_verdict(spec) == [], case
        result = test_cluster.kubectl(
            "-n", policy_namespace, "apply", "-f", "-", input=flowrun(case, spec), check=False
        )
        assert result.returncode == 0, (case, result.stderr)
    # the operator's own writes to a FlowRun made before the policy are not re-checked
    result = test_cluster.kubectl(
        "-n", policy_namespace, "annotate", "flowrun", "plain", "ergon.dev/x=1", check=False
    )
    assert result.returncode == 0, result.stderr


def test_provisioning_tenants_narrows_the_operators_secret_writes() -> None:
    """RBAC cannot limit `create` to a name: with tenants provisioned by the operator, a second
    admission policy lets the operator's ServiceAccount write only Opaque Secrets of the
    tenant Secret's name."""
    values = {"postgres.deploy": True, "tenancy.mode": "namespace"}
    names = {
        d["metadata"]["name"]
        for d in render(values)
        if d["kind"].startswith("ValidatingAdmissionPolicy")
    }
    assert names == {"ergon-worker-policy", "ergon-operator-secrets"}
    (policy,) = [
        d
        for d in render(values)
        if d["kind"] == "ValidatingAdmissionPolicy" and d["metadata"]["name"].endswith("secrets")
    ]
    validate_builtin(policy)
    [condition] = policy["spec"]["matchConditions"]
    assert "'system:serviceaccount:ergon:ergon-operator'" in condition["expression"]
    [rule] = policy["spec"]["validations"]
    assert "object.metadata.name == 'ergon-tenant-store'" in rule["expression"]
    assert "object.type == 'Opaque'" in rule["expression"]
    for shared in ({"postgres.deploy": True}, {**values, "tenancy.secrets": "provided"}):
        assert not [d for d in render(shared) if d["metadata"]["name"].endswith("secrets")]
