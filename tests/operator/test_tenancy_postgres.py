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
from ergon_operator.tenancy import (
    TenantError,
    owner_name,
    scram_verifier,
    tenant_dsn,
    tenant_name,
    tenant_sql,
)
from tests.support.databases import postgres_database
from tests.support.tenants import OperatorRole, drop_tenants, fresh_tenant_prefix, with_user

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

        # Everything in a tenant's schema belongs to its owner role (migrated as that role, which
        # cannot log in); the login role may use the schema and the rows, nothing more, and
        # PUBLIC has no rights on the schema.
        owners = await _fetchval(
            setup.admin,
            "SELECT array_agg(DISTINCT relowner::regrole::text) FROM pg_class "
            f"WHERE relnamespace IN ('\"{a}\"'::regnamespace, '\"{b}\"'::regnamespace)",
        )
        assert sorted(owners) == sorted([f'"{owner_name(a)}"', f'"{owner_name(b)}"'])
        rights = await _fetchval(
            setup.admin,
            f"SELECT array[has_schema_privilege('{a}', '{a}', 'USAGE'), "
            f"has_schema_privilege('{a}', '{a}', 'CREATE'), "
            f"has_schema_privilege('public', '{a}', 'USAGE'), "
            f"has_table_privilege('{a}', '\"{a}\".flows', 'SELECT, INSERT, UPDATE, DELETE'), "
            f"has_table_privilege('{a}', '\"{a}\".flows', 'TRIGGER'), "
            f"has_table_privilege('{a}', '\"{a}\".flows', 'REFERENCES'), "
            f"has_table_privilege('{a}', '\"{a}\".flows', 'TRUNCATE'), "
            f"pg_has_role('{a}', '{owner_name(a)}', 'USAGE')]",
        )
        assert rights == [True, False, False, True, False, False, False, False]
        logins = await _fetchval(
            setup.admin,
            "SELECT array_agg(rolname::text || ':' || rolcanlogin::text ORDER BY rolname) "
            f"FROM pg_roles WHERE rolname IN ('{a}', '{owner_name(a)}')",
        )
        assert logins == [f"{a}:true", f"{owner_name(a)}:false"]
        attributes = await _fetchval(
            setup.admin,
            "SELECT bool_or(rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls) "
            f"FROM pg_roles WHERE rolname IN ('{a}', '{b}', '{owner_name(a)}', '{owner_name(b)}')",
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
        await _schedule(router, "team-p", "flow-p")  # migrated as the tenant's owner role
        owners = await _fetchval(
            setup.admin,
            f"SELECT array_agg(DISTINCT tableowner) FROM pg_tables WHERE schemaname = '{name}'",
        )
        assert owners == [owner_name(name)]
        # The default privileges gave the login role the rows of the tables migrated since.
        login = with_user(setup.admin, name, "secret")
        assert await _fetchval(login, f'SELECT count(*) FROM "{name}".flows') == 1
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


async def _execute(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(ergon_dsn_to_asyncpg(dsn), timeout=10)
    try:
        for sql in statements:
            await conn.execute(sql)
    finally:
        await conn.close()


async def _member(admin: str, role: str, of: str) -> bool:
    return bool(await _fetchval(admin, f"SELECT pg_has_role('{role}', '{of}', 'MEMBER')"))


def _escalation(a: str, b: str, schema: str) -> list[str]:
    """The review's attack: a trigger on the tenant's own `signals` whose function, run by the
    operator's insert with the operator's rights, makes tenant A a member of tenant B."""
    return [
        f"CREATE FUNCTION {schema}.escalate() RETURNS trigger LANGUAGE plpgsql AS "
        f'$$ BEGIN EXECUTE \'GRANT "{b}" TO "{a}"\'; RETURN NEW; END $$',
        f'CREATE TRIGGER escalate BEFORE INSERT ON "{a}".signals '
        f"FOR EACH ROW EXECUTE FUNCTION {schema}.escalate()",
    ]


async def test_flow_code_can_make_nothing_that_the_operator_would_run(setup: Setup) -> None:
    """With namespace A's DSN: no trigger, function, view, rule, operator or policy in A's schema
    (nor in public), no ownership to take; the review's escalation through a trigger on A's own
    `signals` fails, the operator's writes to A's tables run nothing of A's, and A stays out of
    B's tables."""
    router = setup.router()
    try:
        await _schedule(router, "team-a", "flow-a")
        await _schedule(router, "team-b", "flow-b")
        a, b = setup.name("team-a"), setup.name("team-b")
        a_dsn = setup.kube.dsn("team-a")
        attempts = {
            "function in its schema": f'CREATE FUNCTION "{a}".f() RETURNS int '
            "LANGUAGE sql AS 'SELECT 1'",
            "function in public": "CREATE FUNCTION public.f() RETURNS int "
            "LANGUAGE sql AS 'SELECT 1'",
            "view in its schema": f'CREATE VIEW "{a}".v AS SELECT 1 AS x',
            "table in its schema": f'CREATE TABLE "{a}".t (x int)',
            "operator in its schema": f'CREATE OPERATOR "{a}".=== (FUNCTION = int4eq, '
            "LEFTARG = int, RIGHTARG = int)",
            "rule on its flows": f'CREATE RULE r AS ON UPDATE TO "{a}".flows DO ALSO NOTIFY x',
            "row security on its flows": f'ALTER TABLE "{a}".flows ENABLE ROW LEVEL SECURITY',
            "a default on its flows": f'ALTER TABLE "{a}".flows ALTER COLUMN result '
            "SET DEFAULT 'x'",
            "the ownership of its flows": f'ALTER TABLE "{a}".flows OWNER TO "{a}"',
            "dropping its flows": f'DROP TABLE "{a}".flows',
            "the owner role": f'SET ROLE "{owner_name(a)}"',
            # A function of its own session's pg_temp, put on its table by a trigger.
            "trigger on its signals": [
                "CREATE FUNCTION pg_temp.escalate() RETURNS trigger LANGUAGE plpgsql AS "
                f'$$ BEGIN EXECUTE \'GRANT "{b}" TO "{a}"\'; RETURN NEW; END $$',
                f'CREATE TRIGGER escalate BEFORE INSERT ON "{a}".signals '
                "FOR EACH ROW EXECUTE FUNCTION pg_temp.escalate()",
            ],
            "the review's escalation": _escalation(a, b, f'"{a}"'),
        }
        for what, sql in attempts.items():
            statements = [sql] if isinstance(sql, str) else sql
            with pytest.raises(asyncpg.InsufficientPrivilegeError) as refused:
                await _execute(a_dsn, *statements)
            assert "permission denied" in str(refused.value) or "must be" in str(refused.value)
            print(f"{what} with {a}'s DSN: {refused.value}")

        # The operator writes to A's tables (a signal, a cancel): nothing of A's runs.
        client = await router.client_for("team-a")
        await client.signal("flow-a", "approve", {"ok": True})
        await client.cancel("flow-a")
        assert not await _member(setup.admin, a, b)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            await _fetchval(a_dsn, f'SELECT count(*) FROM "{b}".flows')
        # A's own rows are A's to read and write.
        assert await _fetchval(a_dsn, f'SELECT count(*) FROM "{a}".signals') == 1
        # The operator's own connections look functions up in pg_catalog only.
        store = await router.store_for("team-a")
        assert isinstance(store, ergon.PostgresStore)
        conn = await store._db.connect()
        try:
            assert await conn.fetchval("SHOW search_path") == "pg_catalog, pg_temp"
        finally:
            await conn.close()
    finally:
        await router.close()


async def _first_layout(setup: Setup, namespace: str, password: str) -> str:
    """A tenant as release 3ab6e10 provisioned it: the login role owns the schema and (migrated
    as that role) the tables, the operator is a member of it, and the Secret is the operator's."""
    name = setup.name(namespace)
    conn = await asyncpg.connect(setup.admin, timeout=10)
    try:
        await conn.execute(
            f'CREATE ROLE "{name}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION '
            f"NOBYPASSRLS PASSWORD '{password}'"
        )
        await conn.execute(f"COMMENT ON ROLE \"{name}\" IS 'ergon tenant of namespace {namespace}'")
        await conn.execute(f'GRANT "{name}" TO "{setup.operator.name}"')
        await conn.execute(f'CREATE SCHEMA "{name}" AUTHORIZATION "{name}"')
        await conn.execute(f'REVOKE ALL ON SCHEMA "{name}" FROM PUBLIC')
    finally:
        await conn.close()
    dsn = tenant_dsn(admin_dsn=setup.settings.store, role=name, password=password, schema=name)
    router = setup.router()
    assert router.provisioner is not None
    setup.kube.secrets[(namespace, SECRET)] = router.provisioner._manifest(namespace, name, dsn)
    store = ergon.PostgresStore(setup.operator.dsn, schema=name, migrate_as=name)
    try:
        client = ergon.Client(store)
        await client.schedule_by_name(
            "examples.orders:OrderFlow", {"order_id": "1"}, flow_id="flow-old", origin="o"
        )
        await client.signal("flow-old", "first", 1)
    finally:
        await store.close()
    return name


async def test_a_tenant_of_the_first_layout_is_moved_and_what_its_code_planted_dropped(
    setup: Setup,
) -> None:
    router = setup.router()
    try:
        await _schedule(router, "team-b", "flow-b")
        b = setup.name("team-b")
        a = await _first_layout(setup, "team-a", "pw-a")
        a_dsn = setup.kube.dsn("team-a")
        # The first layout: A's code plants the review's trigger, and the operator's next write
        # to A's signals makes A a member of B.
        await _execute(a_dsn, *_escalation(a, b, f'"{a}"'))
        old = ergon.PostgresStore(setup.operator.dsn, schema=a)
        try:
            await ergon.Client(old).signal("flow-old", "second", 2)
        finally:
            await old.close()
        assert await _member(setup.admin, a, b)
        assert await _fetchval(a_dsn, f'SELECT count(*) FROM "{b}".flows') == 1  # escalated
        # A login role that is a member of another role is refused, whatever its layout.
        with pytest.raises(TenantError, match=f"the login role {a} is a member of {b}"):
            await router.store_for("team-a")
        await _execute(setup.admin, f'REVOKE "{b}" FROM "{a}"')

        # Moved: the rows copied into a schema of the owner role, the old one (trigger and
        # function with it) dropped, the operator no longer a member of the login role.
        store = await router.store_for("team-a")
        flow = await store.get_flow("flow-old")
        assert flow is not None and flow.events == 2
        client = await router.client_for("team-a")
        await client.signal("flow-old", "third", 3)  # no trigger: nothing runs
        assert not await _member(setup.admin, a, b)
        seqs = await _fetchval(
            setup.admin, f'SELECT array_agg(seq ORDER BY seq) FROM "{a}".signals'
        )
        assert seqs == [1, 2, 3]  # the identity goes on after the copied rows
        left = await _fetchval(
            setup.admin,
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'ergon_moving_%' "
            f"OR nspname = '{a}' AND nspowner <> '\"{owner_name(a)}\"'::regrole",
        )
        assert left == 0
        assert (
            await _fetchval(
                setup.admin,
                "SELECT count(*) FROM pg_trigger t JOIN pg_class c "
                f"ON c.oid = t.tgrelid WHERE c.relnamespace = '\"{a}\"'::regnamespace",
            )
            == 0
        )
        assert not await _member(setup.admin, setup.operator.name, a)
        assert await _member(setup.admin, setup.operator.name, owner_name(a))
        # The worker's DSN (the Secret, kept) reads A's rows and can plant nothing any more.
        assert setup.kube.dsn("team-a") == a_dsn
        assert await _fetchval(a_dsn, f'SELECT count(*) FROM "{a}".flows') == 1
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await _execute(a_dsn, *_escalation(a, b, f'"{a}"'))
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await _fetchval(a_dsn, f'SELECT count(*) FROM "{b}".flows')
    finally:
        await router.close()


async def test_provided_mode_refuses_a_tenant_of_the_first_layout(setup: Setup) -> None:
    await _first_layout(setup, "team-p", "pw-p")
    router = setup.router(tenant_secrets="provided")
    try:
        with pytest.raises(TenantError, match="belongs to the login role"):
            await router.store_for("team-p")
    finally:
        await router.close()


async def test_a_deleted_secret_or_dropped_role_comes_back_without_a_restart(
    setup: Setup,
) -> None:
    name = setup.name("team-a")
    router = setup.router()
    router.pod_check_seconds = 0.0
    try:
        await _schedule(router, "team-a", "flow-1")
        dsn = setup.kube.dsn("team-a")
        calls = len(setup.kube.calls)
        await router.verify("team-a")  # all there: one GET, nothing written
        assert setup.kube.calls[calls:] == [("get", "team-a")]

        # The Secret is deleted: the check before the next worker pod writes it again.
        del setup.kube.secrets[("team-a", SECRET)]
        await router.verify("team-a")
        assert setup.kube.calls[-1] == ("create", "team-a")
        dsn = setup.kube.dsn("team-a")
        assert await _fetchval(dsn, "SELECT current_user") == name

        # The login role is dropped: made again, with the Secret's password and its privileges.
        await _execute(setup.admin, f'DROP OWNED BY "{name}"', f'DROP ROLE "{name}"')
        await router.verify("team-a")
        assert setup.kube.dsn("team-a") == dsn
        assert await _fetchval(dsn, f'SELECT count(*) FROM "{name}".flows') == 1

        # A store in use checks again now and then (WorkerPool pods read the Secret too).
        router.pod_check_seconds = 3600.0
        await router.verify("team-a")
        del setup.kube.secrets[("team-a", SECRET)]
        await router.store_for("team-a")
        assert ("team-a", SECRET) not in setup.kube.secrets  # not due yet
        router.recheck_seconds = 0.0
        await router.store_for("team-a")
        assert ("team-a", SECRET) in setup.kube.secrets
        # A check that fails leaves the store serving the operator.
        setup.kube.secrets[("team-a", SECRET)]["metadata"]["labels"] = {}
        store = await router.store_for("team-a")
        assert (await store.get_flow("flow-1")) is not None
        router.pod_check_seconds = 0.0
        with pytest.raises(TenantError, match="not written by the operator"):
            await router.verify("team-a")
    finally:
        await router.close()
