"""The store backends the suites run against, and how a test gets a fresh one."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import ergon
from ergon.storage.postgres import PostgresStore
from ergon.storage.redis import RedisStore
from tests.support.databases import drop_prefix, fresh_prefix, fresh_schema, postgres_database
from tests.support.services import redis_url

BACKENDS = ["memory", "sqlite", "postgres", "redis"]


@contextlib.asynccontextmanager
async def open_backend(kind: str, tmp_path: Path) -> AsyncIterator[ergon.Store]:
    """A fresh, empty store of `kind`, closed afterwards.

    Postgres: a fresh schema in this test process's own database (dropped with it at exit).
    Redis: a fresh key prefix, deleted afterwards.
    """
    store: ergon.Store
    prefix = None
    if kind == "memory":
        store = ergon.MemoryStore()
    elif kind == "sqlite":
        store = ergon.SqliteStore(tmp_path / "ergon.db")
    elif kind == "postgres":
        store = PostgresStore(postgres_database(), schema=fresh_schema())
    elif kind == "redis":
        prefix = fresh_prefix()
        store = RedisStore(redis_url(), prefix=prefix)
    else:
        raise ValueError(f"unknown backend {kind}")
    try:
        yield store
    finally:
        await store.close()
        if prefix is not None:
            await drop_prefix(redis_url(), prefix)


async def forget_url(url: str) -> None:
    """Delete what a `backend_url` store left behind where nothing else does (Redis keys;
    Postgres schemas go with this process's database)."""
    parts = urlsplit(url)
    prefix = dict(parse_qsl(parts.query)).get("prefix")
    if parts.scheme.startswith("redis") and prefix:
        await drop_prefix(urlunsplit(parts._replace(query="")), prefix)


def with_option(url: str, name: str, value: str) -> str:
    parts = urlsplit(url)
    query = urlencode([*parse_qsl(parts.query), (name, value)])
    return urlunsplit(parts._replace(query=query))


def backend_url(kind: str, tmp_path: Path) -> str:
    """A URL for a store other processes can share (memory stores cannot be shared).

    Postgres and Redis URLs name a fresh schema / key prefix, so each call is a new, empty store.
    """
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'ergon.db'}"
    if kind == "postgres":
        return with_option(postgres_database(), "schema", fresh_schema())
    if kind == "redis":
        return with_option(redis_url(), "prefix", fresh_prefix())
    raise ValueError(f"backend {kind} cannot be shared across processes")
