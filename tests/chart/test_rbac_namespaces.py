"""The namespaced install mode: operator.watchNamespaces (a list; watchNamespace is its
one-namespace alias) gives a Role and RoleBinding in exactly the listed namespaces and nothing
cluster-wide, the worker ServiceAccount (and the bundled DSN Secret) in each, and the operator
the same list. Which verbs the rules hold is checked against the operator's real API calls by
tests/e2e/test_zz_security.py."""

from __future__ import annotations

from typing import Any

import pytest

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
from tests.chart.test_chart import CLUSTER_ONLY_RULES, LEASE_RULES, OPERATOR_RULES

LISTED = {**EXISTING_SECRET, "operator.watchNamespaces": ["team-a", "team-b"]}
RBAC_KINDS = ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")


def _rbac(docs: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return sorted(
        (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"])
        for d in docs
        if d["kind"] in RBAC_KINDS
    )


def _env(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return {var["name"]: var.get("value", var.get("valueFrom")) for var in container["env"]}


def test_a_list_of_namespaces_gives_roles_there_and_nothing_cluster_wide() -> None:
    docs = render(LISTED)
    assert _rbac(docs) == [
        ("Role", "ergon", "ergon-operator-leader-election"),  # the Lease, where it runs
        ("Role", "team-a", "ergon-operator"),
        ("Role", "team-b", "ergon-operator"),
        ("RoleBinding", "ergon", "ergon-operator-leader-election"),
        ("RoleBinding", "team-a", "ergon-operator"),
        ("RoleBinding", "team-b", "ergon-operator"),
    ]
    for namespace in ("team-a", "team-b"):
        role = [
            r
            for r in find(docs, "Role", "ergon-operator")
            if r["metadata"]["namespace"] == namespace
        ]
        assert role[0]["rules"] == OPERATOR_RULES  # no CRD or namespace access
        (binding,) = [
            b
            for b in find(docs, "RoleBinding", "ergon-operator")
            if b["metadata"]["namespace"] == namespace
        ]
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "ergon-operator",
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "ergon-operator", "namespace": "ergon"}
        ]
    assert one(docs, "Role", "ergon-operator-leader-election")["rules"] == LEASE_RULES
    assert _env(docs)["ERGON_WATCH_NAMESPACES"] == "team-a,team-b"
    workers = [
        sa for sa in find(docs, "ServiceAccount") if sa["metadata"]["name"] == "ergon-worker"
    ]
    assert [sa["metadata"]["namespace"] for sa in workers] == ["team-a", "team-b"]
    for doc in docs:
        validate_builtin(doc)


def test_cluster_wide_by_default() -> None:
    docs = render(EXISTING_SECRET)
    assert _rbac(docs) == [
        ("ClusterRole", "", "ergon-operator"),
        ("ClusterRoleBinding", "", "ergon-operator"),
        ("Role", "ergon", "ergon-operator-leader-election"),
        ("RoleBinding", "ergon", "ergon-operator-leader-election"),
    ]
    assert one(docs, "ClusterRole")["rules"] == OPERATOR_RULES + CLUSTER_ONLY_RULES
    assert _env(docs)["ERGON_WATCH_NAMESPACES"] == ""


def test_watch_namespace_is_a_one_item_list() -> None:
    alias = render({**EXISTING_SECRET, "operator.watchNamespace": "flows"})
    listed = render({**EXISTING_SECRET, "operator.watchNamespaces": ["flows"]})
    assert alias == listed
    assert _env(alias)["ERGON_WATCH_NAMESPACES"] == "flows"
    assert ("Role", "flows", "ergon-operator") in _rbac(alias)


def test_both_forms_at_once_are_refused() -> None:
    error = render_error(
        {**EXISTING_SECRET, "operator.watchNamespace": "a", "operator.watchNamespaces": ["b"]}
    )
    assert "Set operator.watchNamespaces (a list) or its one-namespace alias" in error


def test_the_bundled_dsn_secret_and_worker_accounts_go_to_every_watched_namespace() -> None:
    docs = render(
        {
            **DEPLOY_POSTGRES,
            "operator.watchNamespaces": ["team-a", "team-b"],
            "worker.extraNamespaces": ["batch"],
        }
    )
    secrets = {s["metadata"]["namespace"] for s in find(docs, "Secret", "ergon-postgres")}
    assert {"ergon", "team-a", "team-b", "batch"} <= secrets  # the operator reads it in ergon
    workers = {
        sa["metadata"]["namespace"]
        for sa in find(docs, "ServiceAccount")
        if sa["metadata"]["name"] == "ergon-worker"
    }
    assert workers == {"team-a", "team-b", "batch"}


@pytest.mark.parametrize(
    ("namespaces", "path"),
    [
        (["Team_A"], "/operator/watchNamespaces/0"),
        (["a", "a"], "/operator/watchNamespaces"),
        ("team-a", "/operator/watchNamespaces"),
    ],
)
def test_the_schema_rejects_malformed_lists(namespaces: Any, path: str) -> None:
    error = render_error({**EXISTING_SECRET, "operator.watchNamespaces": namespaces})
    assert path in error


def test_helm_lint_is_clean_in_the_namespaced_mode() -> None:
    out = run_helm("lint", CHART_DIR, "--strict", *value_args(LISTED))
    assert "1 chart(s) linted, 0 chart(s) failed" in out
    assert "[WARNING]" not in out and "[ERROR]" not in out, out
