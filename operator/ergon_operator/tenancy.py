"""Tenant isolation by namespace: a Postgres schema and a login role per namespace.

With `ERGON_TENANCY=namespace` the flows of namespace `team-a` live in the schema
`ergon_ns_team_a`, owned by the role of the same name, and the worker pods of `team-a` connect
as that role (the DSN in the namespace's Secret), so they get "permission denied" on every other
namespace's tables. The operator connects with its own DSN, as a role that is a member of every
tenant role (it created them, or an administrator granted them), and reaches each schema through
that membership.

This module holds what both ways of setting a tenant up share: the names (`tenant_name`), the
tenant's DSN (`tenant_dsn`), the SQL run on the operator's connection (`TenantDatabase`), what an
administrator runs in `provided` mode (`tenant_sql`), and `Provisioner`, which in `provision`
mode creates the role, its schema and the namespace's DSN Secret on first use. Passwords never
reach the server or a log in clear text: the role's password is sent as a SCRAM-SHA-256 verifier
computed here (`scram_verifier`), and every message goes through `ergon.redact`.

Provisioning is idempotent and safe to repeat after a restart. The Secret, when it exists and is
the operator's, is the source of truth: its password is set on the role again (a role dropped
meanwhile is created anew with it). When the Secret is gone, the role gets a new password and
the Secret is written again. A role or schema of the tenant's name that Ergon did not make is
never taken over: provisioning stops with a message naming it.
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
SECRET_LABELS = {
    "app.kubernetes.io/managed-by": "ergon-operator",
    "app.kubernetes.io/component": "tenant-store",
}
TENANT_ANNOTATION = "ergon.dev/tenant"

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
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


def quoted(name: str) -> str:
    """A tenant name as a quoted SQL identifier (only names `tenant_name` can make pass)."""
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"{name!r} is not a tenant name (lowercase letters, digits, _)")
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
    tenant's role) on first use."""
    name = tenant_name(namespace=namespace, prefix=prefix)
    q = quoted(name)
    return "\n".join(
        [
            f"-- Ergon tenant of namespace {namespace}: role and schema {name}.",
            "-- psql variables: password (the role's), operator (the operator's role).",
            "BEGIN;",
            f"CREATE ROLE {q} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
            "NOBYPASSRLS PASSWORD :'password';",
            f"COMMENT ON ROLE {q} IS '{ROLE_COMMENT}{namespace}';",
            f'GRANT {q} TO :"operator";',
            f"CREATE SCHEMA {q} AUTHORIZATION {q};",
            f"REVOKE ALL ON SCHEMA {q} FROM PUBLIC;",
            "COMMIT;",
            f"-- The DSN for the Secret in {namespace}: "
            f"postgresql://{name}:<password>@<host>:5432/<database>?schema={name}",
            "",
        ]
    )


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
                        server_settings={"application_name": "ergon-operator-tenancy"},
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

    def _can_set(self) -> str:
        """SQL: whether the current user may `SET ROLE` to the role `r` (Postgres 16 grants
        membership with separate INHERIT and SET options)."""
        return "pg_has_role(r.oid, 'SET')" if self._version >= 160000 else "true"

    async def problem(self, name: str) -> str | None:
        """Why the operator cannot use the tenant `name` (role, schema, membership), or None."""

        async def work(conn: asyncpg.Connection) -> str | None:
            row = await conn.fetchrow(
                "SELECT current_user AS me, r.oid IS NOT NULL AS role, "
                "n.oid IS NOT NULL AS schema, pg_get_userbyid(n.nspowner) AS owner, "
                "CASE WHEN r.oid IS NULL THEN false ELSE "
                f"pg_has_role(r.oid, 'USAGE') AND {self._can_set()} END AS member "
                "FROM (SELECT $1::name AS name) AS x "
                "LEFT JOIN pg_roles r ON r.rolname = x.name "
                "LEFT JOIN pg_namespace n ON n.nspname = x.name",
                name,
            )
            assert row is not None
            if not row["role"]:
                return f"the role {name} does not exist"
            if not row["schema"]:
                return f"the schema {name} does not exist"
            if row["owner"] != name:
                return f"the schema {name} belongs to {row['owner']}, not to the role {name}"
            if not row["member"]:
                return (
                    f"the operator's role {row['me']} is not a member of {name} "
                    f'(GRANT "{name}" TO "{row["me"]}")'
                )
            return None

        return await self._run(f"check the tenant {name}", work)

    async def existing(self, prefix: str) -> list[str]:
        """The tenants (schema owned by the role of the same name, starting with `prefix`) the
        operator can use."""

        async def work(conn: asyncpg.Connection) -> list[str]:
            rows = await conn.fetch(
                "SELECT n.nspname FROM pg_namespace n "
                "JOIN pg_roles r ON r.rolname = n.nspname AND r.oid = n.nspowner "
                "WHERE left(n.nspname, length($1)) = $1 "
                f"AND pg_has_role(r.oid, 'USAGE') AND {self._can_set()} ORDER BY 1",
                prefix,
            )
            return [str(row[0]) for row in rows]

        return await self._run("list the tenants", work)

    async def provision(self, name: str, *, namespace: str, verifier: str) -> None:
        """The role `name` (created, or its password set to `verifier`), the operator's
        membership in it, and its schema with nothing granted to PUBLIC: in one transaction,
        under an advisory lock per tenant. A role or schema of that name that is not Ergon's
        raises `TenantError`."""
        q = quoted(name)
        if not verifier.startswith("SCRAM-SHA-256$") or "'" in verifier:
            raise ValueError("a SCRAM-SHA-256 verifier")
        comment = f"{ROLE_COMMENT}{namespace}"

        async def work(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"ergon:{name}")
                me = await conn.fetchrow(
                    "SELECT current_user AS name, rolsuper FROM pg_roles "
                    "WHERE rolname = current_user"
                )
                assert me is not None
                role = await conn.fetchrow(
                    "SELECT rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication "
                    "OR rolbypassrls AS privileged, shobj_description(oid, 'pg_authid') AS note "
                    "FROM pg_roles WHERE rolname = $1",
                    name,
                )
                if role is None:
                    await conn.execute(
                        f"CREATE ROLE {q} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                        f"NOREPLICATION NOBYPASSRLS PASSWORD '{verifier}'"
                    )
                    await conn.execute(f"COMMENT ON ROLE {q} IS '{comment}'")
                elif role["privileged"] or role["note"] != comment:
                    raise TenantError(
                        f"a role named {name} exists that Ergon did not make for namespace "
                        f"{namespace}; drop or rename it, or set another ERGON_TENANT_PREFIX"
                    )
                else:
                    await conn.execute(f"ALTER ROLE {q} PASSWORD '{verifier}'")
                if not me["rolsuper"]:
                    await self._join(conn, name)
                owner = await conn.fetchval(
                    "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = $1", name
                )
                if owner is None:
                    await conn.execute(f"CREATE SCHEMA {q} AUTHORIZATION {q}")
                elif owner != name:
                    raise TenantError(
                        f"the schema {name} exists and belongs to {owner}, not to the role "
                        f"{name}; move or drop it (ALTER SCHEMA ... OWNER TO / RENAME TO)"
                    )
                await conn.execute(f"REVOKE ALL ON SCHEMA {q} FROM PUBLIC")

        await self._run(f"provision the tenant {name}", work)

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
        await self.database.provision(name, namespace=namespace, verifier=scram_verifier(password))
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
        except ValueError:
            dsn = ""
        password = dsn_password(dsn)
        if password is None or urlsplit(dsn).username != name:
            raise TenantError(
                f"the Secret {self.secret} in {namespace} holds no DSN of role {name} under key "
                f"{self.key!r}; delete it and the operator writes a new one"
            )
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
