"""Tenant isolation by namespace: a Postgres schema, an owner role and a login role per namespace.

With `ERGON_TENANCY=namespace` the flows of namespace `team-a` live in the schema
`ergon_ns_team_a`. The schema and every table in it belong to the role `ergon_ns_team_a$owner`
(`owner_name`), which cannot log in; the worker pods of `team-a` connect as the login role
`ergon_ns_team_a` (the DSN in the namespace's Secret), which may use the schema and read and
write the rows of its tables, nothing else: no CREATE in the schema, no TRIGGER, no ownership, so
flow code can make no trigger, function, view or rule that the operator's statements would run
(with the operator's rights), and it gets "permission denied" on every other namespace's tables.
The operator connects with its own DSN, as a role that is a member of every tenant's owner role
(it created them, or an administrator granted them), reaches each schema through that
membership and runs the migrations as the owner role. Its connections search only `pg_catalog`
(and their own `pg_temp`) for functions, and every statement names its schema.

This module holds what both ways of setting a tenant up share: the names (`tenant_name`,
`owner_name`), the tenant's DSN (`tenant_dsn`), the SQL run on the operator's connection
(`TenantDatabase`), what an administrator runs in `provided` mode (`tenant_sql`), and
`Provisioner`, which in `provision` mode creates the roles, the schema and the namespace's DSN
Secret on first use. Passwords never reach the server or a log in clear text: the role's
password is sent as a SCRAM-SHA-256 verifier computed here (`scram_verifier`), and every message
goes through `ergon.redact`.

Provisioning is idempotent and safe to repeat after a restart. The Secret, when it exists and is
the operator's, is the source of truth: its password is set on the role again (a role dropped
meanwhile is created anew with it). When the Secret is gone, the role gets a new password and
the Secret is written again. A role or schema of the tenant's name that Ergon did not make is
never taken over: provisioning stops with a message naming it. A tenant of the first layout
(release 3ab6e10: the login role owned the schema and its tables) is moved to this one the first
time it is provisioned (`TenantDatabase.provision`): its rows are copied into a schema made anew,
and the old schema, with whatever flow code may have added to it, is dropped.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import asyncpg

import ergon
from ergon_operator.kube import Kube

log = logging.getLogger("ergon.operator.tenancy")

T = TypeVar("T")

DEFAULT_PREFIX = "ergon_ns_"
MAX_IDENTIFIER = 63  # Postgres truncates longer identifiers (NAMEDATALEN - 1 bytes)
HASH_CHARS = 12
SHORT_MAX = MAX_IDENTIFIER - HASH_CHARS - 1  # 50: longer names are cut and hashed (to 63)
SCRAM_ITERATIONS = 4096  # Postgres's own default (scram_iterations)
ROLE_COMMENT = "ergon tenant of namespace "
OWNER_COMMENT = "ergon tenant owner of namespace "
OWNER_SUFFIX = "$owner"
# The tables of a tenant's schema whose rows move with a tenant of the first layout.
MOVED_TABLES = ("flows", "steps", "signals")
SECRET_LABELS = {
    "app.kubernetes.io/managed-by": "ergon-operator",
    "app.kubernetes.io/component": "tenant-store",
}
TENANT_ANNOTATION = "ergon.dev/tenant"
# The operator's tenancy connection, as every connection of ergon's PostgresStore: functions and
# operators come from pg_catalog only (its statements name their schemas).
SEARCH_PATH = "pg_catalog, pg_temp"

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_$]{0,62}")
# Query options of the operator's DSN that are its own, never a tenant's.
_PRIVATE_OPTIONS = re.compile(r"(?i)schema|user|password|passfile|.*(password|secret|token|key)")
# The server cannot be reached, or the connection broke: an outage (retried, logged once).
_UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
)


class TenantError(Exception):
    """A namespace's store cannot be set up or used (not an outage): the message says what is
    wrong and what to do, and holds no secret. The FlowRuns of that namespace wait (reason
    `ProvisioningStore`) and the operator tries again with backoff."""


# --- names and DSNs ---------------------------------------------------------------------------


def tenant_name(*, namespace: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The schema and role of `namespace`: `<prefix><namespace with - as _>`, e.g.
    `ergon_ns_team_a`. Namespaces hold no `_`, so the mapping is one to one. A name longer
    than `SHORT_MAX` (50) characters is cut and ends with `_` and 12 hex characters of the
    namespace's SHA-256, 63 characters in all (Postgres's identifier limit): short and hashed
    names differ in length, so no namespace's name can be another's."""
    name = prefix + namespace.replace("-", "_")
    if len(name) <= SHORT_MAX:
        return name
    digest = hashlib.sha256(namespace.encode()).hexdigest()[:HASH_CHARS]
    return f"{name[:SHORT_MAX]}_{digest}"


def owner_name(name: str) -> str:
    """The role that owns the schema and tables of the tenant `name` (a `tenant_name`):
    `<name>$owner`, or for a hashed name (63 characters) the name with `$` in place of the `_`
    before its hash. No tenant name holds a `$`, and the two forms differ in length, so no
    owner role can be another tenant's login or owner role."""
    if len(name) <= SHORT_MAX:
        return name + OWNER_SUFFIX
    return f"{name[:SHORT_MAX]}${name[SHORT_MAX + 1 :]}"


def quoted(name: str) -> str:
    """A tenant or owner name as a quoted SQL identifier (only names `tenant_name` and
    `owner_name` can make pass)."""
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"{name!r} is not a tenant name (lowercase letters, digits, _, $)")
    return f'"{name}"'


def database_dsn(dsn: str) -> str:
    """The operator's DSN without its `schema` option: the database itself."""
    parts = urlsplit(dsn)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "schema"]
    return urlunsplit(parts._replace(query=urlencode(query)))


def tenant_dsn(*, admin_dsn: str, role: str, password: str, schema: str) -> str:
    """`postgresql://<role>:<password>@<host:port of admin_dsn>/<its database>?schema=<schema>`,
    with the operator DSN's other non-secret options (sslmode, ...) kept."""
    parts = urlsplit(admin_dsn)
    hosts = parts.netloc.rpartition("@")[2]
    database = parts.path.lstrip("/") or unquote(parts.username or "") or "postgres"
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if not _PRIVATE_OPTIONS.fullmatch(k)
    ]
    query.append(("schema", schema))
    netloc = f"{role}:{password}@{hosts}"
    return urlunsplit(("postgresql", netloc, f"/{database}", urlencode(query), ""))


def dsn_password(dsn: str) -> str | None:
    """The password in a DSN, or None."""
    try:
        password = urlsplit(dsn).password
    except ValueError:
        return None
    return unquote(password) if password else None


def scram_verifier(
    password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS
) -> str:
    """The SCRAM-SHA-256 verifier Postgres stores for `password` (RFC 5802/7677, as
    `pg_authid.rolpassword` holds it). `CREATE ROLE ... PASSWORD '<verifier>'` stores it as is,
    so the password itself never reaches the server, its statement log or `pg_stat_activity`.
    `password` must be ASCII without controls (SASLprep leaves such text unchanged)."""
    if not password.isascii() or not password.isprintable():
        raise ValueError("a tenant password is printable ASCII")
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def new_password() -> str:
    """A random password: 43 URL-safe characters (256 bits), written into a DSN unescaped."""
    return secrets.token_urlsafe(32)


def tenant_sql(*, namespace: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The SQL an administrator runs (psql, as a superuser or a role with CREATEROLE) to set up
    `namespace` for `ERGON_TENANT_SECRETS=provided`: `psql "$ADMIN_DSN" --set password=...
    --set operator=<the operator's role> -f -`. The operator runs the migrations itself (as the
    owner role) on first use; the default privileges give the login role the rows of every
    table they make."""
    name = tenant_name(namespace=namespace, prefix=prefix)
    owner = owner_name(name)
    q, qo = quoted(name), quoted(owner)
    return "\n".join(
        [
            f"-- Ergon tenant of namespace {namespace}: schema and login role {name}, "
            f"owner role {owner}.",
            "-- psql variables: password (the login role's), operator (the operator's role).",
            "BEGIN;",
            f"CREATE ROLE {qo} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
            "NOBYPASSRLS;",
            f"COMMENT ON ROLE {qo} IS '{OWNER_COMMENT}{namespace}';",
            f"CREATE ROLE {q} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
            "NOBYPASSRLS PASSWORD :'password';",
            f"COMMENT ON ROLE {q} IS '{ROLE_COMMENT}{namespace}';",
            f'GRANT {qo} TO :"operator";',
            f"CREATE SCHEMA {q} AUTHORIZATION {qo};",
            *(f"{statement};" for statement in grants_sql(name)),
            "COMMIT;",
            f"-- The DSN for the Secret in {namespace}: "
            f"postgresql://{name}:<password>@<host>:5432/<database>?schema={name}",
            "",
        ]
    )


def grants_sql(name: str) -> list[str]:
    """What the login role `name` may do in its schema (owned by `owner_name(name)`): use it
    and read and write the rows of its tables (and sequences), now and for the tables of later
    migrations; nothing for PUBLIC, no CREATE, no TRIGGER, REFERENCES or TRUNCATE."""
    q, qo = quoted(name), quoted(owner_name(name))
    rows = "SELECT, INSERT, UPDATE, DELETE"
    sequences = "USAGE, SELECT, UPDATE"
    return [
        f"REVOKE ALL ON SCHEMA {q} FROM PUBLIC",
        f"REVOKE CREATE ON SCHEMA {q} FROM {q}",
        f"GRANT USAGE ON SCHEMA {q} TO {q}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {qo} IN SCHEMA {q} GRANT {rows} ON TABLES TO {q}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {qo} IN SCHEMA {q} "
        f"GRANT {sequences} ON SEQUENCES TO {q}",
        f"REVOKE TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA {q} FROM {q}",
        f"GRANT {rows} ON ALL TABLES IN SCHEMA {q} TO {q}",
        f"GRANT {sequences} ON ALL SEQUENCES IN SCHEMA {q} TO {q}",
    ]


# --- the operator's own connection -------------------------------------------------------------


class TenantDatabase:
    """The SQL of tenancy, on one connection of the operator's (opened on first use, replaced
    after a failure; one statement sequence at a time). An unreachable server raises
    `ergon.StoreError` (an outage); a refusal raises `TenantError`."""

    def __init__(self, dsn: str, *, connect_timeout: float = 10.0) -> None:
        self.dsn = database_dsn(dsn)
        parts = urlsplit(self.dsn)
        try:
            port = parts.port or 5432
        except ValueError:
            port = 5432
        self.where = f"{parts.hostname or 'localhost'}:{port} ({parts.path.lstrip('/')})"
        self.connect_timeout = connect_timeout
        self._conn: asyncpg.Connection | None = None
        self._version = 0
        self._lock = asyncio.Lock()

    async def _run(self, what: str, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        async with self._lock:
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await asyncpg.connect(
                        self.dsn,
                        timeout=self.connect_timeout,
                        command_timeout=30,
                        server_settings={
                            "application_name": "ergon-operator-tenancy",
                            "search_path": SEARCH_PATH,
                        },
                    )
                    self._version = int(await self._conn.fetchval("SHOW server_version_num"))
                return await work(self._conn)
            except _UNREACHABLE as exc:
                await self._discard()
                raise ergon.StoreError(
                    ergon.redact(f"Postgres at {self.where} unreachable ({what}): {exc}")
                ) from None
            except asyncpg.PostgresError as exc:
                raise TenantError(ergon.redact(f"{what}: {exc}")) from None

    async def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def close(self) -> None:
        async with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await asyncio.wait_for(conn.close(), 2.0)
            except Exception:  # closing is best effort
                conn.terminate()

    async def check(self) -> None:
        """One round trip (readiness)."""
        await self._run("check the database", lambda conn: conn.fetchval("SELECT 1"))

    def _can_set(self, role: str = "r") -> str:
        """SQL: whether the current user may `SET ROLE` to the role `<role>.oid` (Postgres 16
        grants membership with separate INHERIT and SET options)."""
        return f"pg_has_role({role}.oid, 'SET')" if self._version >= 160000 else "true"

    async def problem(self, name: str) -> str | None:
        """Why the operator cannot use the tenant `name`, or None: its login role, owner role
        and schema exist, the schema is the owner role's, the operator is a member of that
        role, and the login role can create nothing the operator's statements would run: it
        is a member of no role, may not CREATE in the schema, and owns no table in it nor may
        add triggers to one."""
        owner = owner_name(name)

        async def work(conn: asyncpg.Connection) -> str | None:
            row = await conn.fetchrow(
                "SELECT current_user AS me, l.oid IS NOT NULL AS login, "
                "o.oid IS NOT NULL AS owner, n.oid IS NOT NULL AS schema, "
                "pg_get_userbyid(n.nspowner) AS schema_owner, "
                "CASE WHEN o.oid IS NULL THEN false ELSE "
                f"pg_has_role(o.oid, 'USAGE') AND {self._can_set('o')} END AS member, "
                "(SELECT string_agg(DISTINCT pg_get_userbyid(m.roleid), ', ') "
                " FROM pg_auth_members m WHERE m.member = l.oid) AS joined, "
                "CASE WHEN l.oid IS NULL OR n.oid IS NULL THEN false "
                "ELSE has_schema_privilege(l.oid, n.oid, 'CREATE') END AS creates, "
                "(SELECT string_agg(c.relname, ', ' ORDER BY c.relname) FROM pg_class c "
                " WHERE c.relnamespace = n.oid AND (c.relowner IS DISTINCT FROM o.oid "
                "  OR (c.relkind IN ('r', 'p', 'v', 'm', 'f') AND l.oid IS NOT NULL "
                "   AND has_table_privilege(l.oid, c.oid, 'TRIGGER, REFERENCES, TRUNCATE')))"
                ") AS exposed "
                "FROM (SELECT $1::name AS name, $2::name AS owner) AS x "
                "LEFT JOIN pg_roles l ON l.rolname = x.name "
                "LEFT JOIN pg_roles o ON o.rolname = x.owner "
                "LEFT JOIN pg_namespace n ON n.nspname = x.name",
                name,
                owner,
            )
            assert row is not None
            if not row["login"]:
                return f"the role {name} does not exist"
            if not row["schema"]:
                return f"the schema {name} does not exist"
            if row["schema_owner"] == name:
                return (
                    f"the schema {name} belongs to the login role {name}, the layout of an "
                    "earlier release in which flow code could make the operator run its SQL; "
                    f"it is moved to the role {owner} when provisioned (docs/security.md, "
                    "The store)"
                )
            if not row["owner"]:
                return f"the role {owner} (owner of the schema {name}) does not exist"
            if row["schema_owner"] != owner:
                return (
                    f"the schema {name} belongs to {row['schema_owner']}, not to the role {owner}"
                )
            if not row["member"]:
                return (
                    f"the operator's role {row['me']} is not a member of {owner} "
                    f'(GRANT "{owner}" TO "{row["me"]}")'
                )
            if row["joined"]:
                return (
                    f"the login role {name} is a member of {row['joined']}; a tenant's login "
                    f'role is a member of no role (REVOKE ... FROM "{name}"; if flow code may '
                    "have done this, see docs/security.md, The store)"
                )
            if row["creates"]:
                return (
                    f"the login role {name} may create objects in the schema {name} "
                    f'(REVOKE CREATE ON SCHEMA "{name}" FROM "{name}")'
                )
            if row["exposed"]:
                return (
                    f"in the schema {name}, {row['exposed']} belong to another role than {owner} "
                    f"or let the login role {name} add triggers, references or truncate; "
                    f'ALTER TABLE ... OWNER TO "{owner}" and REVOKE TRIGGER, REFERENCES, '
                    f'TRUNCATE ... FROM "{name}"'
                )
            return None

        return await self._run(f"check the tenant {name}", work)

    async def existing(self, prefix: str) -> list[str]:
        """The tenants (schema starting with `prefix`, owned by the tenant's owner role) the
        operator can use. A tenant of the first layout is not listed: it is moved when its
        namespace is next used, never opened before."""

        async def work(conn: asyncpg.Connection) -> list[str]:
            rows = await conn.fetch(
                "SELECT n.nspname, r.rolname FROM pg_namespace n "
                "JOIN pg_roles r ON r.oid = n.nspowner "
                "WHERE left(n.nspname, length($1)) = $1 "
                f"AND pg_has_role(r.oid, 'USAGE') AND {self._can_set()} ORDER BY 1",
                prefix,
            )
            return [
                str(row[0])
                for row in rows
                if _IDENTIFIER.fullmatch(row[0]) and row[1] == owner_name(row[0])
            ]

        return await self._run("list the tenants", work)

    async def provision(self, name: str, *, namespace: str, verifier: str) -> None:
        """The login role `name` (created, or its password set to `verifier`), the owner role
        `owner_name(name)`, the operator's membership in the owner role, the schema (the owner's,
        nothing granted to PUBLIC) and the login role's privileges (`grants_sql`): in one
        transaction, under an advisory lock per tenant. A tenant of the first layout is moved
        (`_move`). A role or schema of those names that is not Ergon's, or a login role that is
        a member of another role, raises `TenantError`."""
        q = quoted(name)
        owner = owner_name(name)
        qo = quoted(owner)
        if not verifier.startswith("SCRAM-SHA-256$") or "'" in verifier:
            raise ValueError("a SCRAM-SHA-256 verifier")

        async def work(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"ergon:{name}")
                me = await conn.fetchrow(
                    "SELECT current_user AS name, rolsuper FROM pg_roles "
                    "WHERE rolname = current_user"
                )
                assert me is not None
                fresh = await self._role(
                    conn,
                    name,
                    comment=f"{ROLE_COMMENT}{namespace}",
                    namespace=namespace,
                    attributes=f"LOGIN PASSWORD '{verifier}'",
                )
                if not fresh:
                    await conn.execute(f"ALTER ROLE {q} PASSWORD '{verifier}'")
                await self._role(
                    conn,
                    owner,
                    comment=f"{OWNER_COMMENT}{namespace}",
                    namespace=namespace,
                    attributes="NOLOGIN",
                )
                if not me["rolsuper"]:
                    await self._join(conn, owner)
                schema_owner = await conn.fetchval(
                    "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = $1", name
                )
                aside = None
                if schema_owner == name:  # the first layout: moved to a schema made anew
                    aside = await self._set_aside(conn, name)
                elif schema_owner is not None and schema_owner != owner:
                    raise TenantError(
                        f"the schema {name} exists and belongs to {schema_owner}, not to the "
                        f"role {owner}; move or drop it (ALTER SCHEMA ... OWNER TO / RENAME TO)"
                    )
                if schema_owner != owner:
                    await conn.execute(f"CREATE SCHEMA {q} AUTHORIZATION {qo}")
                for statement in grants_sql(name):
                    await conn.execute(statement)
                if aside is not None:
                    await self._move(conn, name, aside=aside, namespace=namespace)
                joined = await conn.fetchval(
                    "SELECT string_agg(DISTINCT pg_get_userbyid(m.roleid), ', ') "
                    "FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member "
                    "WHERE r.rolname = $1",
                    name,
                )
                if joined:
                    raise TenantError(
                        f"the login role {name} is a member of {joined}; a tenant's login role "
                        f'is a member of no role (REVOKE ... FROM "{name}"; if flow code may '
                        "have done this, see docs/security.md, The store)"
                    )

        await self._run(f"provision the tenant {name}", work)

    async def _role(
        self,
        conn: asyncpg.Connection,
        role: str,
        *,
        comment: str,
        namespace: str,
        attributes: str,
    ) -> bool:
        """Create `role` (with `attributes`) unless it exists; True when created. An existing
        role without `comment`, or with more rights than a tenant's, is not Ergon's:
        `TenantError`."""
        found = await conn.fetchrow(
            "SELECT rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls "
            "AS privileged, rolcanlogin, shobj_description(oid, 'pg_authid') AS note "
            "FROM pg_roles WHERE rolname = $1",
            role,
        )
        if found is None:
            await conn.execute(
                f"CREATE ROLE {quoted(role)} NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                f"NOBYPASSRLS {attributes}"
            )
            await conn.execute(f"COMMENT ON ROLE {quoted(role)} IS '{comment}'")
            return True
        login = attributes.startswith("LOGIN")
        if found["privileged"] or found["note"] != comment or found["rolcanlogin"] != login:
            raise TenantError(
                f"a role named {role} exists that Ergon did not make for namespace "
                f"{namespace}; drop or rename it, or set another ERGON_TENANT_PREFIX"
            )
        return False

    async def _set_aside(self, conn: asyncpg.Connection, name: str) -> str:
        """The first layout's schema `name`, renamed to `ergon_moving_<oid>` (in the
        provisioning's transaction: nobody sees the name) with its tables locked, so that no
        worker writes while the rows are copied. Only catalogs are read and only renames and
        locks run: nothing the schema holds runs."""
        q = quoted(name)
        oid = await conn.fetchval("SELECT oid FROM pg_namespace WHERE nspname = $1", name)
        tables = await conn.fetch(
            "SELECT relname FROM pg_class WHERE relnamespace = $1 AND relname = ANY($2::name[]) "
            "AND relkind IN ('r', 'p') ORDER BY relname",
            oid,
            list(MOVED_TABLES),
        )
        for row in tables:
            await conn.execute(f"LOCK TABLE ONLY {q}.{quoted(row[0])} IN ACCESS EXCLUSIVE MODE")
        aside = f"ergon_moving_{oid}"
        await conn.execute(f"ALTER SCHEMA {q} RENAME TO {quoted(aside)}")
        return aside

    async def _move(
        self, conn: asyncpg.Connection, name: str, *, aside: str, namespace: str
    ) -> None:
        """Move a tenant of the first layout: migrate its new schema `name` (made, owned by the
        owner role, privileges granted), copy the rows of `MOVED_TABLES` from the old schema
        `aside`, drop the old schema with everything in it, and end the operator's membership
        in the login role. The rows are read only from plain tables (no row security, `ONLY`)
        whose columns have the types Ergon's migrations give them, so reading them runs no
        code of the tenant's; nothing else of the old schema is read."""
        q, qa = quoted(name), quoted(aside)
        owner = owner_name(name)
        await conn.execute(f"SET LOCAL ROLE {quoted(owner)}")
        await ergon.PostgresStore.migrate_schema(conn, name)
        await conn.execute("RESET ROLE")
        for table in MOVED_TABLES:
            old = await conn.fetchrow(
                "SELECT c.oid, c.relkind::text AS relkind, c.relrowsecurity FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = $1 AND c.relname = $2",
                aside,
                table,
            )
            if old is None:
                continue  # never migrated: nothing to copy
            if old["relkind"] != "r" or old["relrowsecurity"]:
                raise TenantError(
                    f"the first layout's schema {name} cannot be moved: {table} is no longer a "
                    f"plain table (row security or another kind); an administrator moves or "
                    "drops it (docs/security.md, The store)"
                )
            columns = await conn.fetch(
                "SELECT n.attname, o.atttypid = n.atttypid AND o.atttypmod = n.atttypmod "
                "AS same FROM pg_attribute n "
                "JOIN pg_attribute o ON o.attrelid = $2 AND o.attname = n.attname "
                "AND o.attnum > 0 AND NOT o.attisdropped "
                "WHERE n.attrelid = (SELECT c.oid FROM pg_class c JOIN pg_namespace s "
                "ON s.oid = c.relnamespace WHERE s.nspname = $1 AND c.relname = $3) "
                "AND n.attnum > 0 AND NOT n.attisdropped ORDER BY n.attnum",
                name,
                old["oid"],
                table,
            )
            changed = [str(c["attname"]) for c in columns if not c["same"]]
            if changed:
                raise TenantError(
                    f"the first layout's schema {name} cannot be moved: the column(s) "
                    f"{', '.join(changed)} of {table} no longer have Ergon's types; an "
                    "administrator moves or drops it (docs/security.md, The store)"
                )
            names = ", ".join(quoted(str(c["attname"])) for c in columns)
            overriding = " OVERRIDING SYSTEM VALUE" if table == "signals" else ""
            await conn.execute(
                f"INSERT INTO {q}.{table} ({names}){overriding} "
                f"SELECT {names} FROM ONLY {qa}.{table}"
            )
        await conn.execute(
            "SELECT setval(pg_get_serial_sequence($1, 'seq'), max(seq)) "
            f"FROM {q}.signals HAVING max(seq) IS NOT NULL",
            f"{q}.signals",
        )
        await conn.execute(f"DROP SCHEMA {qa} CASCADE")
        member = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid "
            "WHERE r.rolname = $1 AND m.member = (SELECT oid FROM pg_roles "
            "WHERE rolname = current_user))",
            name,
        )
        if member:  # the first layout's membership: the operator needs the owner role only
            try:
                async with conn.transaction():
                    await conn.execute(f"REVOKE {q} FROM CURRENT_USER")
            except asyncpg.PostgresError as exc:
                log.warning("tenant %s: the operator stays a member of %s (%s)", name, name, exc)
        log.warning(
            "namespace %s: tenant %s moved to the owner role %s (its login role owned the "
            "schema and tables); rows of %s copied, the old schema dropped",
            namespace,
            name,
            owner,
            ", ".join(MOVED_TABLES),
        )

    async def _join(self, conn: asyncpg.Connection, name: str) -> None:
        """Make the operator's role a member of `name` that inherits its privileges and may
        `SET ROLE` to it (Postgres 16: a role's creator holds only ADMIN OPTION on it)."""
        q = quoted(name)
        modern = self._version >= 160000
        check = "pg_has_role($1, 'USAGE')" + (" AND pg_has_role($1, 'SET')" if modern else "")
        if not await conn.fetchval(f"SELECT {check}", name):
            options = " WITH INHERIT TRUE, SET TRUE" if modern else ""
            await conn.execute(f"GRANT {q} TO CURRENT_USER{options}")


# --- provisioning ------------------------------------------------------------------------------


class Provisioner:
    """Creates a namespace's tenant on first use (`ERGON_TENANT_SECRETS=provision`): the role
    and schema (`TenantDatabase.provision`) and the namespace's DSN Secret `secret`/`key`, which
    worker pods read. The Kubernetes calls: `get` of that Secret, `create` when it is missing."""

    def __init__(
        self,
        *,
        kube: Kube,
        database: TenantDatabase,
        admin_dsn: str,
        secret: str,
        key: str,
    ) -> None:
        self.kube = kube
        self.database = database
        self.admin_dsn = admin_dsn
        self.secret = secret
        self.key = key

    async def provision(self, *, namespace: str, name: str) -> None:
        existing = await self.kube.get_secret(namespace, self.secret)
        password = self._password_of(existing, namespace=namespace, name=name)
        fresh = password is None
        if password is None:
            password = new_password()
        try:
            verifier = scram_verifier(password)
        except ValueError:  # _password_of lets no such password through; never the password
            raise TenantError(self._bad_password(namespace)) from None
        await self.database.provision(name, namespace=namespace, verifier=verifier)
        if not fresh:
            return
        dsn = tenant_dsn(admin_dsn=self.admin_dsn, role=name, password=password, schema=name)
        created = await self.kube.create_secret(namespace, self._manifest(namespace, name, dsn))
        if created is None:
            raise TenantError(
                f"the Secret {self.secret} in {namespace} appeared while it was being written; "
                "the next try uses it"
            )
        log.info(
            "namespace %s: tenant %s provisioned, Secret %s written", namespace, name, self.secret
        )

    async def has_secret(self, *, namespace: str, name: str) -> bool:
        """Whether the namespace's Secret exists (one GET); `TenantError` when it is not the
        operator's for this tenant or holds no usable DSN."""
        existing = await self.kube.get_secret(namespace, self.secret)
        return self._password_of(existing, namespace=namespace, name=name) is not None

    def _bad_password(self, namespace: str) -> str:
        return (
            f"the Secret {self.secret} in {namespace} holds a password that is not printable "
            "ASCII (the operator's own are); delete it and the operator writes a new one"
        )

    def _password_of(
        self, secret: dict[str, Any] | None, *, namespace: str, name: str
    ) -> str | None:
        """The password of an existing Secret the operator wrote for this tenant (None: no
        Secret); `TenantError` for a Secret of that name that is someone else's."""
        if secret is None:
            return None
        meta = secret.get("metadata") or {}
        labels = meta.get("labels") or {}
        ours = all(labels.get(k) == v for k, v in SECRET_LABELS.items())
        if not ours or (meta.get("annotations") or {}).get(TENANT_ANNOTATION) != name:
            raise TenantError(
                f"the Secret {self.secret} in {namespace} was not written by the operator for "
                f"tenant {name}; delete it (the operator writes its own) or use "
                "ERGON_TENANT_SECRETS=provided"
            )
        try:
            dsn = base64.b64decode((secret.get("data") or {}).get(self.key) or "").decode()
            username = urlsplit(dsn).username
        except ValueError:
            dsn, username = "", None
        password = dsn_password(dsn)
        if password is None or username != name:
            raise TenantError(
                f"the Secret {self.secret} in {namespace} holds no DSN of role {name} under key "
                f"{self.key!r}; delete it and the operator writes a new one"
            )
        if not password.isascii() or not password.isprintable():
            raise TenantError(self._bad_password(namespace))
        return password

    def _manifest(self, namespace: str, name: str, dsn: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": self.secret,
                "namespace": namespace,
                "labels": dict(SECRET_LABELS),
                "annotations": {TENANT_ANNOTATION: name},
            },
            "data": {self.key: base64.b64encode(dsn.encode()).decode()},
        }
