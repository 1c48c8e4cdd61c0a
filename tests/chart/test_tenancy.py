"""Chart values `tenancy`: a store for every namespace (`shared`, the default, as before) or a
Postgres schema and role per namespace (`namespace`), set up by the operator (`provision`: it
may create Secrets and read the one tenant Secret name) or by an administrator (`provided`: no
Secret rights at all). Whether the Secret rules are exactly what the operator uses is checked
on the test cluster by tests/e2e/test_tenancy.py."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.helm import DEPLOY_POSTGRES, EXISTING_SECRET, find, one, render, render_error
from tests.chart.schemas import validate_builtin
from tests.chart.test_chart import CLUSTER_ONLY_RULES, OPERATOR_RULES

PER_NAMESPACE = {"tenancy.mode": "namespace"}
SECRET_RULES = [
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
    {
        "apiGroups": [""],
        "resources": ["secrets"],
        "resourceNames": ["ergon-tenant-store"],
        "verbs": ["get"],
    },
]


def _env(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return {var["name"]: var.get("value", var.get("valueFrom")) for var in container["env"]}


def _secret_namespaces(docs: list[dict[str, Any]], name: str) -> list[str]:
    return sorted(d["metadata"]["namespace"] for d in find(docs, "Secret", name))


def test_shared_is_the_default_and_grants_no_secret_access() -> None:
    docs = render(EXISTING_SECRET)
    env = _env(docs)
    assert (env["ERGON_TENANCY"], env["ERGON_STORE_SECRET"]) == ("shared", "ergon-store/dsn")
    assert one(docs, "ClusterRole")["rules"] == OPERATOR_RULES + CLUSTER_ONLY_RULES


def test_namespace_mode_provisioning_grants_create_and_get_of_the_tenant_secret_only() -> None:
    docs = render({**EXISTING_SECRET, **PER_NAMESPACE})
    env = _env(docs)
    assert env["ERGON_TENANCY"] == "namespace"
    assert env["ERGON_TENANT_SECRETS"] == "provision"
    assert env["ERGON_TENANT_PREFIX"] == "ergon_ns_"
    # Worker pods read their namespace's own DSN; the operator keeps the admin DSN.
    assert env["ERGON_STORE_SECRET"] == "ergon-tenant-store/dsn"
    assert env["ERGON_STORE"] == {"secretKeyRef": {"name": "ergon-store", "key": "dsn"}}
    rules = one(docs, "ClusterRole")["rules"]
    assert rules == OPERATOR_RULES + SECRET_RULES + CLUSTER_ONLY_RULES
    for doc in docs:
        validate_builtin(doc)


def test_namespaced_install_has_the_secret_rules_in_each_role() -> None:
    values = {
        **EXISTING_SECRET,
        **PER_NAMESPACE,
        "operator.watchNamespaces": ["team-a", "team-b"],
        "tenancy.secretName": "team-store",
        "tenancy.prefix": "acme_",
    }
    docs = render(values)
    roles = [r for r in find(docs, "Role", "ergon-operator")]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        secrets = [r for r in role["rules"] if r["resources"] == ["secrets"]]
        assert secrets[1]["resourceNames"] == ["team-store"]
    assert not find(docs, "ClusterRole")
    env = _env(docs)
    assert (env["ERGON_STORE_SECRET"], env["ERGON_TENANT_PREFIX"]) == ("team-store/dsn", "acme_")


def test_provided_mode_grants_no_secret_access() -> None:
    docs = render({**EXISTING_SECRET, **PER_NAMESPACE, "tenancy.secrets": "provided"})
    assert _env(docs)["ERGON_TENANT_SECRETS"] == "provided"
    assert one(docs, "ClusterRole")["rules"] == OPERATOR_RULES + CLUSTER_ONLY_RULES


def test_bundled_postgres_keeps_its_dsn_to_the_operator_and_may_create_roles() -> None:
    workers = {"operator.watchNamespaces": ["team-a", "team-b"]}
    shared = render({**DEPLOY_POSTGRES, **workers})
    assert _secret_namespaces(shared, "ergon-postgres") == ["ergon", "team-a", "team-b"]
    script = one(shared, "ConfigMap", "ergon-postgres-init")["data"]["10-ergon-role.sh"]
    assert "CREATEROLE;" not in script

    tenants = render({**DEPLOY_POSTGRES, **workers, **PER_NAMESPACE})
    assert _secret_namespaces(tenants, "ergon-postgres") == ["ergon"]  # never a worker's
    script = one(tenants, "ConfigMap", "ergon-postgres-init")["data"]["10-ergon-role.sh"]
    assert 'ALTER ROLE :"app_user" CREATEROLE;' in script

    provided = render({**DEPLOY_POSTGRES, **PER_NAMESPACE, "tenancy.secrets": "provided"})
    script = one(provided, "ConfigMap", "ergon-postgres-init")["data"]["10-ergon-role.sh"]
    assert "CREATEROLE;" not in script


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("tenancy.mode", "schema"),
        ("tenancy.secrets", "generate"),
        ("tenancy.prefix", "Ergon-"),
        ("tenancy.prefix", "1x_"),
        ("tenancy.secretName", "Not_A_Name"),
    ],
)
def test_the_schema_refuses_malformed_tenancy_values(key: str, value: str) -> None:
    message = render_error({**EXISTING_SECRET, key: value})
    assert key.split(".")[1] in message
