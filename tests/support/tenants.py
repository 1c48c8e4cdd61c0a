"""Postgres roles for the tenancy tests: an operator role that may create roles (not a
superuser), and the cleanup of every tenant role and schema a test made (roles are per server,
so each test names its tenants with a prefix of its own)."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg


def fresh_tenant_prefix() -> str:
    """A prefix no other test uses (tenant roles are shared by every database of the server)."""
    return f"t{uuid.uuid4().hex[:8]}_"


def with_user(dsn: str, user: str, password: str) -> str:
    parts = urlsplit(dsn)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{user}:{password}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass
class OperatorRole:
    """A login role with CREATEROLE and CREATE on the test database: what `provision` mode
    asks of the operator's DSN, without superuser rights."""

    admin_dsn: str
    name: str
    dsn: str

    @classmethod
    async def create(cls, admin_dsn: str) -> OperatorRole:
        name = f"ergon_op_{secrets.token_hex(4)}"
        password = secrets.token_urlsafe(18)
        database = urlsplit(admin_dsn).path.lstrip("/")
        conn = await asyncpg.connect(admin_dsn, timeout=10)
        try:
            await conn.execute(f"CREATE ROLE \"{name}\" LOGIN CREATEROLE PASSWORD '{password}'")
            await conn.execute(f'GRANT CONNECT, CREATE ON DATABASE "{database}" TO "{name}"')
        finally:
            await conn.close()
        return cls(admin_dsn, name, with_user(admin_dsn, name, password))

    async def drop(self, *, prefix: str) -> None:
        """Drop every tenant `prefix` names (schemas, then roles), then this role."""
        await drop_tenants(self.admin_dsn, prefix)
        conn = await asyncpg.connect(self.admin_dsn, timeout=10)
        try:
            await conn.execute(f'DROP OWNED BY "{self.name}" CASCADE')
            await conn.execute(f'DROP ROLE IF EXISTS "{self.name}"')
        finally:
            await conn.close()


async def drop_tenants(admin_dsn: str, prefix: str) -> None:
    """Drop the schemas (with their tables) and roles whose names start with `prefix`."""
    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        schemas = await conn.fetch(
            "SELECT nspname FROM pg_namespace WHERE left(nspname, length($1)) = $1", prefix
        )
        for row in schemas:
            await conn.execute(f'DROP SCHEMA "{row[0]}" CASCADE')
        roles = await conn.fetch(
            "SELECT rolname FROM pg_roles WHERE left(rolname, length($1)) = $1", prefix
        )
        for row in roles:
            await conn.execute(f'DROP OWNED BY "{row[0]}" CASCADE')
            await conn.execute(f'DROP ROLE "{row[0]}"')
    finally:
        await conn.close()
