"""The Postgres store (asyncpg): `store` (the `Store` methods), `connection` (the pool, errors,
LISTEN), `schema` (tables, migrations and every statement)."""

from ergon.storage.postgres.store import DEFAULT_SCHEMA, PostgresStore

__all__ = ["DEFAULT_SCHEMA", "PostgresStore"]
