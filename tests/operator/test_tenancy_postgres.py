"""Tenant isolation by namespace against a real Postgres (no cluster): the operator's router
provisions a role, a schema and a DSN Secret per namespace with a role that may create roles
(not a superuser); a worker using namespace A's DSN gets "permission denied" on namespace B's
tables and an ergon store on A's DSN cannot see B's flows, while the operator reads both.
Provisioning is idempotent and survives restarts, a deleted Secret and a dropped role; a role or
Secret Ergon did not make is never taken over; `provided` mode uses what an administrator made
with `tenant_sql`.

The test server trusts every connection (no passwords checked): the roles' privileges still
differ, which is what these tests show; that a password is needed to *be* a role is Postgres's
authentication (scram-sha-256 in pg_hba.conf), see docs/security.md.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any, cast

import asyncpg
import pytest

import ergon
from ergon_operator.kube import Kube
from ergon_operator.settings import Settings
from ergon_operator.stores import TenantStores
from ergon_operator.tenancy import TenantError, scram_verifier, tenant_name, tenant_sql
from tests.support.databases import postgres_database
from tests.support.tenants import OperatorRole, drop_tenants, fresh_tenant_prefix

pytestmark = pytest.mark.integration

SECRET = "ergon-tenant-store"


class SecretsKube:
    """The two Secret calls of provisioning, on a dict (namespace, name) -> Secret."""

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get", namespace))
        found = self.secrets.get((namespace, name))
        return copy.deepcopy(found) if found is not None else None

    async def create_secret(
        self, namespace: str, manifest: dict[str, Any]
    ) -> dict[str, Any] | None:
        self.calls.append(("create", namespace))
        key = (namespace, manifest["metadata"]["name"])
        if key in self.secrets:
            return None
        self.secrets[key] = copy.deepcopy(manifest)
        return manifest

    def dsn(self, namespace: str) -> str:
        data = self.secrets[(namespace, SECRET)]["data"]["dsn"]
        return base64.b64decode(data).decode()


@dataclass
class Setup:
    admin: str  # the server's superuser, on the test database
    operator: OperatorRole
    prefix: str
    kube: SecretsKube
    settings: Settings

    def router(self, **changes: Any) -> TenantStores:
        settings = replace(self.settings, **changes)
        return TenantStores(settings, cast(Kube, self.kube))

    def name(self, namespace: str) -> str:
        return tenant_name(namespace=namespace, prefix=self.prefix)


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    admin = postgres_database()
    operator = await OperatorRole.create(admin)
    prefix = fresh_tenant_prefix()
    settings = Settings(
        store=operator.dsn + "?sslmode=disable",
        store_secret=SECRET,
        tenancy="namespace",
        tenant_secrets="provision",
        tenant_prefix=prefix,
    )
    try:
        yield Setup(admin, operator, prefix, SecretsKube(), settings)
    finally:
        await operator.drop(prefix=prefix)


async def _schedule(router: TenantStores, namespace: str, flow_id: str) -> None:
    client = await router.client_for(namespace)
    await client.schedule_by_name(
        "examples.orders:OrderFlow",
        {"order_id": flow_id},
        flow_id=flow_id,
        origin=f"flowrun:{namespace}/run/{flow_id}",
    )


async def _fetchval(dsn: str, sql: str) -> Any:
    conn = await asyncpg.connect(ergon_dsn_to_asyncpg(dsn), timeout=10)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def ergon_dsn_to_asyncpg(dsn: str) -> str:
    """A tenant DSN without Ergon's own `schema` option (asyncpg would send it as a setting)."""
    base, _, query = dsn.partition("?")
    kept = [p for p in query.split("&") if p and not p.startswith("schema=")]
    return base + ("?" + "&".join(kept) if kept else "")


async def test_a_namespace_cannot_reach_another_namespaces_flows(setup: Setup) -> None:
    router = setup.router()
    try:
        await _schedule(router, "team-a", "flow-a")
        await _schedule(router, "team-b", "flow-b")
        a, b = setup.name("team-a"), setup.name("team-b")
        a_dsn, b_dsn = setup.kube.dsn("team-a"), setup.kube.dsn("team-b")
        assert a_dsn.startswith(f"postgresql://{a}:") and a_dsn.endswith(
            f"?sslmode=disable&schema={a}"
        )
        assert setup.operator.name not in a_dsn  # the operator's role and password are its own

        # The worker's view, with A's DSN: B's tables are out of reach, whatever the statement.
        statements = {
            "SELECT": f'SELECT count(*) FROM "{b}".flows',
            "INSERT": f'INSERT INTO "{b}".signals (flow_id, name, payload, sent_at) '
            "VALUES ('flow-b', 'x', '{}', now())",
            "UPDATE": f"UPDATE \"{b}\".flows SET state = 'cancelled'",
            "DELETE": f'DELETE FROM "{b}".steps',
            "CREATE": f'CREATE TABLE "{b}".mine (x int)',
        }
        for what, sql in statements.items():
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                await _fetchval(a_dsn, sql)
            print(f"{what} on {b} with {a}'s DSN: permission denied")
        assert await _fetchval(a_dsn, f'SELECT count(*) FROM "{a}".flows') == 1
        with pytest.raises(asyncpg.InsufficientPrivilegeError):  # and the other way round
            await _fetchval(b_dsn, f'SELECT count(*) FROM "{a}".flows')

        # An ergon store on A's DSN sees A's flows, not B's; pointed at B's schema it is refused.
        own = ergon.open_store(a_dsn)
        try:
            assert (await own.get_flow("flow-a")) is not None
            assert (await own.get_flow("flow-b")) is None
        finally:
            await own.close()
        other = ergon.open_store(a_dsn.replace(f"schema={a}", f"schema={b}"))
        try:
            with pytest.raises(ergon.StoreError, match="permission denied"):
                await other.get_flow("flow-b")
        finally:
            await other.close()

        # The operator reads both, through one router.
        for namespace, flow_id in (("team-a", "flow-a"), ("team-b", "flow-b")):
            store = await router.store_for(namespace)
            flow = await store.get_flow(flow_id)
            assert flow is not None and flow.origin == f"flowrun:{namespace}/run/{flow_id}"

        # Everything in a tenant's schema belongs to its role (migrated as that role), and
        # PUBLIC has no rights on the schema.
        owners = await _fetchval(
            setup.admin,
            "SELECT array_agg(DISTINCT tableowner) FROM pg_tables "
            f"WHERE schemaname IN ('{a}', '{b}')",
        )
        assert sorted(owners) == sorted([a, b])
        acl = await _fetchval(
            setup.admin, f"SELECT nspacl::text FROM pg_namespace WHERE nspname = '{a}'"
        )
        entries = (acl or "").strip("{}").split(",")
        assert entries == [f"{a}=UC/{a}"], acl  # the owner alone; no entry for PUBLIC ("=...")
        attributes = await _fetchval(
            setup.admin,
            "SELECT bool_or(rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls) "
            f"FROM pg_roles WHERE rolname IN ('{a}', '{b}')",
        )
        assert attributes is False
        # The sweep sees both tenants (every schema with the prefix, watching all namespaces).
        targets = await router.sweep_targets(())
        assert len(targets) == 2
    finally:
        await router.close()


async def test_provisioning_is_idempotent_and_survives_restarts(setup: Setup) -> None:
    name = setup.name("team-a")
    first = setup.router()
    try:
        await _schedule(first, "team-a", "flow-1")
        await first.store_for("team-a")  # opened already: no second provisioning
    finally:
        await first.close()
    assert setup.kube.calls == [("get", "team-a"), ("create", "team-a")]
    dsn = setup.kube.dsn("team-a")

    async def verifier() -> str:
        value = await _fetchval(
            setup.admin, f"SELECT rolpassword FROM pg_authid WHERE rolname = '{name}'"
        )
        return str(value)

    # A restart: the Secret is kept and its password set on the role again.
    before = await verifier()
    restarted = setup.router()
    try:
        assert (await (await restarted.store_for("team-a")).get_flow("flow-1")) is not None
    finally:
        await restarted.close()
    assert setup.kube.dsn("team-a") == dsn and setup.kube.calls[-1] == ("get", "team-a")
    assert await verifier() != before  # a new salt, the same password

    # The Secret is gone: a new password, on the role and in a new Secret.
    del setup.kube.secrets[("team-a", SECRET)]
    rewritten = setup.router()
    try:
        await rewritten.store_for("team-a")
    finally:
        await rewritten.close()
    new_dsn = setup.kube.dsn("team-a")
    assert new_dsn != dsn and new_dsn.split("@")[1] == dsn.split("@")[1]
    assert setup.kube.calls[-2:] == [("get", "team-a"), ("create", "team-a")]

    # The role and its schema are gone (dropped by hand), the Secret is not: both come back,
    # with the Secret's password, and the worker's DSN works again.
    await drop_tenants(setup.admin, setup.prefix)
    recreated = setup.router()
    try:
        store = await recreated.store_for("team-a")
        assert (await store.get_flow("flow-1")) is None  # a new, empty schema
    finally:
        await recreated.close()
    assert setup.kube.dsn("team-a") == new_dsn
    assert await _fetchval(new_dsn, "SELECT current_user") == name
    assert await _fetchval(new_dsn, f'SELECT count(*) FROM "{name}".flows') == 0


async def test_a_role_or_secret_ergon_did_not_make_is_not_taken_over(setup: Setup) -> None:
    name = setup.name("team-x")
    conn = await asyncpg.connect(setup.admin, timeout=10)
    try:
        await conn.execute(f'CREATE ROLE "{name}" LOGIN')
    finally:
        await conn.close()
    router = setup.router()
    try:
        with pytest.raises(TenantError, match="Ergon did not make"):
            await router.store_for("team-x")
        setup.kube.secrets[("team-y", SECRET)] = {
            "metadata": {"name": SECRET, "namespace": "team-y"},
            "data": {"dsn": base64.b64encode(b"postgresql://someone:pw@db/x").decode()},
        }
        with pytest.raises(TenantError, match="not written by the operator") as refused:
            await router.store_for("team-y")
        assert "pw@" not in str(refused.value)
    finally:
        await router.close()


async def test_provided_mode_uses_what_the_administrator_made(setup: Setup) -> None:
    router = setup.router(tenant_secrets="provided")
    name = setup.name("team-p")
    try:
        with pytest.raises(TenantError, match=f"the role {name} does not exist"):
            await router.store_for("team-p")
        sql = tenant_sql(namespace="team-p", prefix=setup.prefix)
        sql = sql.replace(":'password'", "'secret'").replace(
            ':"operator"', f'"{setup.operator.name}"'
        )
        conn = await asyncpg.connect(setup.admin, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()
        await _schedule(router, "team-p", "flow-p")  # migrated as the tenant's role
        owners = await _fetchval(
            setup.admin,
            f"SELECT array_agg(DISTINCT tableowner) FROM pg_tables WHERE schemaname = '{name}'",
        )
        assert owners == [name]
        assert setup.kube.calls == []  # nothing provisioned, no Secret read
    finally:
        await router.close()


async def test_the_scram_verifier_is_the_one_postgres_computes(setup: Setup) -> None:
    conn = await asyncpg.connect(setup.admin, timeout=10)
    role = f"{setup.prefix}scram"
    try:
        await conn.execute("SET password_encryption = 'scram-sha-256'")
        await conn.execute(f"CREATE ROLE \"{role}\" PASSWORD 'correct-horse_42'")
        stored = str(
            await conn.fetchval("SELECT rolpassword FROM pg_authid WHERE rolname = $1", role)
        )
    finally:
        await conn.close()
    iterations, salt = stored.split("$")[1].split(":")
    mine = scram_verifier(
        "correct-horse_42", salt=base64.b64decode(salt), iterations=int(iterations)
    )
    assert mine == stored
