"""The opt-in NetworkPolicy of the bundled Postgres (postgres.networkPolicy.enabled, issue 17): only
the operator's pods and the worker pods the operator creates, in the release namespace and every
worker namespace, may open connections to it; off by default, nothing with an external Postgres."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from ergon_operator.pods import worker_pod
from ergon_operator.policy import WorkerPolicy
from ergon_operator.pools import WorkerPool, pool_deployment
from ergon_operator.resources import FlowRun
from ergon_operator.settings import Settings
from tests.chart.helm import (
    CHART_DIR,
    DEPLOY_POSTGRES,
    EXISTING_SECRET,
    find,
    one,
    render,
    render_error,
    run_helm,
    value_args,
)
from tests.chart.schemas import validate_builtin

ENABLED = {**DEPLOY_POSTGRES, "postgres.networkPolicy.enabled": True}
# A pod template may set any label it likes; the operator's own come after them.
HIJACK = {
    "app.kubernetes.io/component": "postgres",
    "app.kubernetes.io/managed-by": "Helm",
    "team": "shop",
}
OPEN = WorkerPolicy(images=("*",), label_keys=("*",))
SETTINGS = Settings(store="postgresql://x/y", store_secret="ergon-postgres", policy=OPEN)


def _matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a Kubernetes label selector selects `labels`."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def _admitted(policy: dict[str, Any], namespace: str, labels: Mapping[str, str]) -> bool:
    """Whether `policy` lets a pod with `labels` in `namespace` in (ipBlock peers aside)."""
    home = policy["metadata"]["namespace"]
    for rule in policy["spec"]["ingress"]:
        for peer in rule["from"]:
            if "namespaceSelector" in peer:
                in_namespace = _matches(
                    peer["namespaceSelector"], {"kubernetes.io/metadata.name": namespace}
                )
            else:
                in_namespace = namespace == home
            if in_namespace and _matches(peer.get("podSelector", {}), labels):
                return True
    return False


def _policy(values: dict[str, Any], namespace: str = "ergon") -> dict[str, Any]:
    docs = render(values, namespace=namespace)
    policy = one(docs, "NetworkPolicy")
    validate_builtin(policy)
    return policy


def _flowrun_pod_labels(namespace: str) -> dict[str, str]:
    run = FlowRun.parse(
        {
            "apiVersion": "ergon.dev/v1alpha1",
            "kind": "FlowRun",
            "metadata": {"name": "order-42", "namespace": namespace, "uid": "u-1"},
            "spec": {"flow": "examples.orders:OrderFlow", "podTemplate": {"labels": HIJACK}},
        }
    )
    return dict(worker_pod(run, SETTINGS, sequence=1, attempt=1)["metadata"]["labels"])


def _pool_pod_labels(namespace: str) -> dict[str, str]:
    pool = WorkerPool.parse(
        {
            "apiVersion": "ergon.dev/v1alpha1",
            "kind": "WorkerPool",
            "metadata": {"name": "orders", "namespace": namespace, "uid": "p-1"},
            "spec": {"image": "ghcr.io/acme/orders:1.4.0", "podTemplate": {"labels": HIJACK}},
        }
    )
    deployment = pool_deployment(pool, SETTINGS, version="1.4.0", image=pool.image, replicas=1)
    return dict(deployment["spec"]["template"]["metadata"]["labels"])


@pytest.mark.parametrize(
    "values",
    [DEPLOY_POSTGRES, EXISTING_SECRET, {**EXISTING_SECRET, "postgres.networkPolicy.enabled": True}],
    ids=["default", "existing-secret", "existing-secret-enabled"],
)
def test_no_network_policy_unless_enabled_for_the_bundled_postgres(values: dict[str, Any]) -> None:
    assert not find(render(values), "NetworkPolicy")


def test_it_guards_the_postgres_pods_on_5432_only() -> None:
    docs = render(ENABLED)
    policy = one(docs, "NetworkPolicy", "ergon-postgres")
    assert policy["metadata"]["namespace"] == "ergon"
    assert policy["metadata"]["labels"]["app.kubernetes.io/component"] == "postgres"
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    (rule,) = spec["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 5432}]
    postgres = one(docs, "StatefulSet", "ergon-postgres")["spec"]["template"]["metadata"]
    operator = one(docs, "Deployment", "ergon-operator")["spec"]["template"]["metadata"]
    assert _matches(spec["podSelector"], postgres["labels"])
    assert not _matches(spec["podSelector"], operator["labels"])
    for doc in docs:
        validate_builtin(doc)


def test_the_operator_pods_of_this_release_are_let_in() -> None:
    docs = render(ENABLED)
    policy = one(docs, "NetworkPolicy")
    operator = one(docs, "Deployment", "ergon-operator")
    labels = operator["spec"]["template"]["metadata"]["labels"]
    assert _admitted(policy, "ergon", labels)
    assert not _admitted(policy, "elsewhere", labels)
    other_release = {**labels, "app.kubernetes.io/instance": "other"}
    assert not _admitted(policy, "ergon", other_release)


@pytest.mark.parametrize(
    ("values", "namespaces"),
    [
        ({}, ["ergon"]),
        ({"worker.extraNamespaces": ["team-a", "ergon"]}, ["ergon", "team-a"]),
        (
            {"operator.watchNamespaces": ["flows", "shop"], "worker.extraNamespaces": ["team-a"]},
            ["ergon", "flows", "shop", "team-a"],
        ),
        ({"operator.watchNamespace": "flows"}, ["ergon", "flows"]),
    ],
    ids=["release-namespace", "extra-namespaces", "watch-namespaces", "watch-namespace"],
)
def test_worker_pods_are_let_in_from_the_worker_namespaces(
    values: dict[str, Any], namespaces: list[str]
) -> None:
    policy = _policy({**ENABLED, **values})
    workers = [peer for peer in policy["spec"]["ingress"][0]["from"] if "namespaceSelector" in peer]
    (peer,) = workers
    (expression,) = peer["namespaceSelector"]["matchExpressions"]
    assert expression == {
        "key": "kubernetes.io/metadata.name",
        "operator": "In",
        "values": namespaces,
    }
    for namespace in namespaces:
        # The labels the operator really puts on its pods, whatever the template asked for.
        assert _admitted(policy, namespace, _flowrun_pod_labels(namespace))
        assert _admitted(policy, namespace, _pool_pod_labels(namespace))
    assert not _admitted(policy, "other", _flowrun_pod_labels("other"))
    assert not _admitted(policy, "other", _pool_pod_labels("other"))


@pytest.mark.parametrize(
    "labels",
    [
        {},
        HIJACK,
        {"app.kubernetes.io/component": "worker"},
        {"app.kubernetes.io/managed-by": "ergon-operator", "app.kubernetes.io/component": "debug"},
        {"app.kubernetes.io/name": "ergon", "app.kubernetes.io/component": "operator"},
    ],
    ids=["unlabelled", "template-labels", "no-managed-by", "other-component", "fake-operator"],
)
def test_other_pods_are_refused(labels: dict[str, str]) -> None:
    policy = _policy({**ENABLED, "worker.extraNamespaces": ["team-a"]})
    for namespace in ("ergon", "team-a", "kube-system"):
        assert not _admitted(policy, namespace, labels)


def test_extra_peers_are_appended() -> None:
    backup = {"podSelector": {"matchLabels": {"app": "pg-backup"}}}
    policy = _policy({**ENABLED, "postgres.networkPolicy.extraFrom": [backup]})
    peers = policy["spec"]["ingress"][0]["from"]
    assert peers[-1] == backup and len(peers) == 3
    assert _admitted(policy, "ergon", {"app": "pg-backup"})


def test_the_release_namespace_follows_the_install() -> None:
    policy = _policy({**ENABLED, "worker.extraNamespaces": ["team-a"]}, namespace="ops")
    assert policy["metadata"]["namespace"] == "ops"
    peer = policy["spec"]["ingress"][0]["from"][1]
    assert peer["namespaceSelector"]["matchExpressions"][0]["values"] == ["ops", "team-a"]


def test_helm_lint_is_clean_with_the_policy_on() -> None:
    out = run_helm("lint", CHART_DIR, "--strict", *value_args(ENABLED))
    assert "1 chart(s) linted, 0 chart(s) failed" in out
    assert "[WARNING]" not in out and "[ERROR]" not in out, out


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"postgres.networkPolicy.enabled": "yes"}, "/postgres/networkPolicy/enabled"),
        ({"postgres.networkPolicy.externalCIDR": "10.0.0.0/8"}, "externalCIDR"),
        ({"postgres.networkPolicy.extraFrom": [{"pods": {}}]}, "/postgres/networkPolicy/extraFrom"),
    ],
    ids=["enabled-type", "unknown-key", "bad-peer"],
)
def test_values_schema_checks_the_new_keys(values: dict[str, Any], complaint: str) -> None:
    assert complaint in render_error({**DEPLOY_POSTGRES, **values})
