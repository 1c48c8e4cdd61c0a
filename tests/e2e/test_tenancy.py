"""Tenant isolation by namespace on the test cluster (issue 17), with real Postgres roles.

A second operator process runs beside the session's, configured the way the chart configures it
for `tenancy.mode=namespace`, `tenancy.secrets=provision` (the environment of the chart's
Deployment rendered with those values), watching two namespaces of its own, with a DSN of a role
that may create roles but is no superuser, and a fresh tenant prefix. It authenticates as a
ServiceAccount of its own, so its API requests are told apart from the session's operator (whose
RBAC tests/e2e/test_zz_security.py checks) and are compared here with the Roles the chart renders
for that mode: every call granted, and the Secret rules (`create`, `get` of the tenant Secret)
exactly those used.

A FlowRun in each namespace succeeds (the operator provisions each namespace's roles, schema and
DSN Secret on first use); then a FlowRun in namespace A runs a flow that, with the DSN of A's
worker pod, tries to read and write B's tables: Postgres answers "permission denied" to each.
The same holds with A's DSN read from A's Secret, which also cannot create a function, view or
trigger in A's own schema (nothing the operator's statements would run). No output shows a
tenant's password or the operator's DSN. The roles and schemas are dropped afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
import yaml

from tests.chart.helm import CHART_DIR
from tests.cluster.fixtures import wait_for
from tests.e2e.environment import ROOT, Environment, TestClusterEnvironment
from tests.support.databases import postgres_database
from tests.support.services import free_port
from tests.support.tenants import OperatorRole, fresh_tenant_prefix

pytestmark = pytest.mark.integration

RELEASE = "ergon"
NAMESPACES = ("ergon-e2e-tenant-a", "ergon-e2e-tenant-b")
ACCOUNT = "ergon-tenancy-operator"
STARTED = "ergon operator started"

Grant = tuple[str, str, str]  # (apiGroup, resource, verb)


@dataclass
class TenancyOperator:
    env: TestClusterEnvironment
    role: OperatorRole
    prefix: str
    user: str
    settings: dict[str, str]
    log: Path
    granted: dict[str, set[Grant]] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def kubectl(self, namespace: str, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.env.cluster.kubectl("-n", namespace, *args, **kw)

    def schema(self, namespace: str) -> str:
        from ergon_operator.tenancy import tenant_name

        return tenant_name(namespace=namespace, prefix=self.prefix)

    def secret_dsn(self, namespace: str) -> str:
        name, _, key = self.settings["ERGON_STORE_SECRET"].partition("/")
        secret = json.loads(self.kubectl(namespace, "get", "secret", name, "-o", "json").stdout)
        return base64.b64decode(secret["data"][key or "dsn"]).decode()

    def run(self, namespace: str, name: str, flow: str, input: dict[str, Any]) -> dict[str, Any]:
        manifest = {
            "apiVersion": "ergon.dev/v1alpha1",
            "kind": "FlowRun",
            "metadata": {"name": name},
            "spec": {"flow": flow, "input": input},
        }
        self.kubectl(namespace, "apply", "-f", "-", input=json.dumps(manifest))
        done = self.kubectl(
            namespace,
            "wait",
            f"flowrun/{name}",
            "--for=jsonpath={.status.phase}=Succeeded",
            "--timeout=90s",
            check=False,
            timeout=120,
        )
        run = json.loads(self.kubectl(namespace, "get", "flowrun", name, "-o", "json").stdout)
        assert done.returncode == 0, (
            f"{namespace}/{name}: {json.dumps(run.get('status'), indent=1)}\n"
            f"{self.log.read_text(errors='replace')[-4000:]}"
        )
        return dict(run["status"])


def _kubeconfig(env: TestClusterEnvironment, path: Path) -> str:
    """A kubeconfig with a token of the ServiceAccount `ACCOUNT`; returns its user name."""
    env.kubectl("create", "serviceaccount", ACCOUNT)
    token = env.kubectl("create", "token", ACCOUNT).stdout.strip()
    config = json.loads(env.cluster.kubeconfig.read_text())
    for user in config["users"]:
        user["user"] = {"token": token}
    path.write_text(json.dumps(config, indent=2))
    return f"system:serviceaccount:{env.namespace}:{ACCOUNT}"


def _chart(env: TestClusterEnvironment, prefix: str) -> list[dict[str, Any]]:
    """The session's chart values with a store per namespace, rendered for `NAMESPACES`."""
    values = json.loads(
        env.cluster.helm("get", "values", RELEASE, "-n", env.namespace, "-o", "json").stdout
    )
    values["operator"]["watchNamespaces"] = list(NAMESPACES)
    values["tenancy"] = {"mode": "namespace", "secrets": "provision", "prefix": prefix}
    values_file = env.home / "tenancy-values.json"
    values_file.write_text(json.dumps(values))
    rendered = env.cluster.helm(
        "template", RELEASE, str(CHART_DIR), "-n", env.namespace, "-f", str(values_file)
    ).stdout
    return [dict(doc) for doc in yaml.safe_load_all(rendered) if doc]


def _settings(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The operator container's plain values, as the chart renders them."""
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {v["name"]: str(v["value"]) for v in container["env"] if "value" in v}


def _granted(docs: list[dict[str, Any]]) -> dict[str, set[Grant]]:
    """(group, resource, verb) of the operator's Role in each watched namespace."""
    granted: dict[str, set[Grant]] = {}
    for role in docs:
        if role["kind"] != "Role" or role["metadata"]["namespace"] not in NAMESPACES:
            continue
        granted[role["metadata"]["namespace"]] = {
            (group, resource, verb)
            for rule in role["rules"]
            for group in rule.get("apiGroups") or []
            for resource in rule.get("resources") or []
            for verb in rule.get("verbs") or []
        }
    return granted


@pytest.fixture
def tenancy(k8s: Environment) -> Iterator[TenancyOperator]:
    if not isinstance(k8s, TestClusterEnvironment):
        pytest.skip("a second operator process needs the test cluster")
    env = k8s
    admin = postgres_database()
    role = asyncio.run(OperatorRole.create(admin))
    prefix = fresh_tenant_prefix()
    account = env.operator_env["ERGON_WORKER_SERVICE_ACCOUNT"]
    for namespace in NAMESPACES:
        env.cluster.kubectl("create", "namespace", namespace)
        env.cluster.kubectl("-n", namespace, "create", "serviceaccount", account)
    docs = _chart(env, prefix)
    user = _kubeconfig(env, env.home / "tenancy-kubeconfig")
    settings = {
        **env.operator_env,
        **_settings(docs),
        "ERGON_STORE": role.dsn,
        "KUBECONFIG": str(env.home / "tenancy-kubeconfig"),
        "ERGON_HEALTH_PORT": str(free_port()),
        "ERGON_LEADER_ELECTION": "false",  # the session's operator holds the Lease
        "POD_NAME": "ergon-tenancy-operator-local",
    }
    operator = TenancyOperator(
        env, role, prefix, user, settings, env.home / "tenancy-operator.log", _granted(docs)
    )
    try:
        with operator.log.open("ab") as log:
            operator.process = subprocess.Popen(
                [sys.executable, "-m", "ergon_operator"],
                cwd=ROOT,
                env=settings,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(
            lambda: STARTED in operator.log.read_text(errors="replace"),
            timeout=60,
            message="the tenancy operator runs kopf",
        )
        yield operator
    finally:
        if operator.process is not None:
            operator.process.send_signal(signal.SIGTERM)
            try:
                operator.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                operator.process.kill()
                operator.process.wait()
        for namespace in NAMESPACES:
            env.cluster.kubectl("delete", "namespace", namespace, check=False, timeout=120)
        asyncio.run(role.drop(prefix=prefix))


def test_a_worker_of_one_namespace_cannot_reach_another_namespaces_flows(
    tenancy: TenancyOperator,
) -> None:
    a, b = NAMESPACES
    a_schema, b_schema = tenancy.schema(a), tenancy.schema(b)
    # The operator works across both namespaces, each in a store of its own.
    for namespace in (b, a):
        status = tenancy.run(
            namespace, "order", "examples.orders:OrderFlow", {"order_id": "17", "amount": 1}
        )
        assert status["result"].startswith("order 17: charged")
    a_dsn, b_dsn = tenancy.secret_dsn(a), tenancy.secret_dsn(b)
    assert urlsplit(a_dsn).username == a_schema and a_dsn.endswith(f"schema={a_schema}")
    assert urlsplit(b_dsn).username == b_schema

    # Inside a worker pod of A, with the DSN the pod was given: B's tables are out of reach.
    status = tenancy.run(
        a, "probe", "tests.e2e.tenancy_flows:TenantProbeFlow", {"other_schema": b_schema}
    )
    answers = status["result"]
    print(json.dumps(answers, indent=1))
    assert answers["user"] == a_schema and answers["own flows"] == "2"
    for what in ("select", "insert", "update", "delete"):
        assert answers[what].startswith("InsufficientPrivilegeError: permission denied"), answers

    # The same with A's DSN from A's Secret, from outside the cluster.
    async def read_b_with_a() -> None:
        conn = await asyncpg.connect(a_dsn.rpartition("?")[0])
        try:
            await conn.fetchval(f'SELECT count(*) FROM "{b_schema}".flows')
        finally:
            await conn.close()

    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
        asyncio.run(read_b_with_a())

    # Nor can A's DSN make anything the operator's statements would run: no function, view or
    # trigger in A's own schema (the review's escalation: a trigger on A's signals, run by the
    # operator's next signal with the operator's rights, granting A the role of B).
    plants = {
        "function": f'CREATE FUNCTION "{a_schema}".escalate() RETURNS trigger LANGUAGE plpgsql '
        f'AS $$ BEGIN EXECUTE \'GRANT "{b_schema}" TO "{a_schema}"\'; RETURN NEW; END $$',
        "view": f'CREATE VIEW "{a_schema}".v AS SELECT 1 AS x',
        "trigger": "CREATE FUNCTION pg_temp.escalate() RETURNS trigger LANGUAGE plpgsql AS "
        f'$$ BEGIN EXECUTE \'GRANT "{b_schema}" TO "{a_schema}"\'; RETURN NEW; END $$; '
        f'CREATE TRIGGER escalate BEFORE INSERT ON "{a_schema}".signals '
        "FOR EACH ROW EXECUTE FUNCTION pg_temp.escalate()",
    }

    async def plant_with_a() -> dict[str, str]:
        conn = await asyncpg.connect(a_dsn.rpartition("?")[0])
        answers: dict[str, str] = {}
        try:
            for what, sql in plants.items():
                try:
                    await conn.execute(sql)
                except asyncpg.PostgresError as exc:
                    answers[what] = f"{type(exc).__name__}: {exc}"
                else:
                    answers[what] = "allowed"
            return answers
        finally:
            await conn.close()

    planted = asyncio.run(plant_with_a())
    print(json.dumps(planted, indent=1))
    for what in plants:
        assert planted[what].startswith("InsufficientPrivilegeError: permission denied"), planted

    _no_secret_in_any_output(tenancy, [a_dsn, b_dsn])
    _rbac_is_what_it_used(tenancy)


def _no_secret_in_any_output(tenancy: TenancyOperator, dsns: list[str]) -> None:
    """Neither tenant's password nor the operator's DSN in the tenancy operator's log, the
    namespaces' worker pod logs, Events, FlowRun statuses or pods."""
    env = tenancy.env
    assert env.recorder is not None
    time.sleep(1)  # the recorder's watches catch up
    secrets = {f"{urlsplit(d).username}'s password": urlsplit(d).password or "" for d in dsns}
    secrets["the operator's DSN"] = tenancy.role.dsn
    secrets["the operator's password"] = urlsplit(tenancy.role.dsn).password or ""
    assert all(secrets.values())
    outputs = [("tenancy operator log", tenancy.log.read_text(errors="replace"))]
    for path in sorted(env.pod_log_dir.rglob("*.log")):
        if path.relative_to(env.pod_log_dir).parts[0].startswith(NAMESPACES):
            outputs.append((f"pod log {path.relative_to(env.pod_log_dir)}", path.read_text()))
    looked = len(outputs)
    for resource in ("events", "flowruns", "pods"):
        for obj in env.recorder.objects(resource):
            if (obj.get("metadata") or {}).get("namespace") in NAMESPACES:
                shown = obj if resource != "flowruns" else obj.get("status")
                outputs.append((f"{resource} {obj['metadata']['name']}", json.dumps(shown)))
    assert looked >= 4 and len(outputs) > looked, [where for where, _ in outputs]
    leaks = [
        f"{what} in {where}"
        for where, text in outputs
        for what, secret in secrets.items()
        if secret in text
    ]
    assert not leaks, leaks


def _rbac_is_what_it_used(tenancy: TenancyOperator) -> None:
    rows = [
        r
        for r in tenancy.env.api_requests()["requests"]
        if r["user"] == tenancy.user and r["verb"] is not None
    ]
    used: dict[str, set[Grant]] = {}
    for row in rows:
        used.setdefault(row["namespace"], set()).add((row["group"], row["resource"], row["verb"]))
    print(f"the tenancy operator's calls: {json.dumps({k: sorted(v) for k, v in used.items()})}")
    assert set(used) <= set(NAMESPACES), f"calls outside its namespaces: {sorted(used)}"
    for namespace, grants in used.items():
        missing = grants - tenancy.granted[namespace]
        assert not missing, f"used but not granted in {namespace}: {sorted(missing)}"
    secret_verbs = {("", "secrets", "create"), ("", "secrets", "get")}
    for namespace in NAMESPACES:
        assert {g for g in tenancy.granted[namespace] if g[1] == "secrets"} == secret_verbs
        assert {g for g in used.get(namespace, set()) if g[1] == "secrets"} == secret_verbs
