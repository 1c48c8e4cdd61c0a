"""Where each run keeps its data: a fresh Postgres database, a fresh SQLite file.

Every workload of every system gets a database of its own, created for the run on the same server
(`ERGON_TEST_POSTGRES_DSN`) and dropped after, so no run reads another's rows or bloat.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

POSTGRES_DSN = os.environ.get(
    "ERGON_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("ERGON_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@asynccontextmanager
async def postgres_database(server_dsn: str = POSTGRES_DSN) -> AsyncIterator[str]:
    """The DSN of a database created for this run; dropped (with its connections) after."""
    import asyncpg

    name = f"ergon_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield urlunsplit(urlsplit(server_dsn)._replace(path=f"/{name}"))
        finally:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def postgres_setting(dsn: str, name: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return str(await conn.fetchval(f"SHOW {name}"))
    finally:
        await conn.close()


def redis_prefix() -> str:
    return f"ergon-bench:{uuid.uuid4().hex[:8]}:"


async def drop_redis_prefix(url: str, prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.unlink(*keys)
    finally:
        await client.aclose()


# The stores the workloads run Ergon on, by the names --stores takes.
LABELS = {
    "sqlite": "SQLite",
    "postgres": "Postgres",
    "redis": "Redis",
    "memory": "memory",
}


@asynccontextmanager
async def store_url(kind: str, directory: str) -> AsyncIterator[str]:
    """A store URL of `kind` that no other run uses: a new SQLite file, Postgres database or
    Redis key prefix (removed after). `memory://` is shared by nothing by construction."""
    if kind == "sqlite":
        yield f"sqlite:///{directory}/{uuid.uuid4().hex[:8]}.db"
    elif kind == "postgres":
        async with postgres_database() as dsn:
            yield dsn
    elif kind == "redis":
        prefix = redis_prefix()
        try:
            yield f"{REDIS_URL}?prefix={prefix}"
        finally:
            await drop_redis_prefix(REDIS_URL, prefix)
    elif kind == "memory":
        yield "memory://"
    else:
        raise ValueError(f"unknown store {kind!r}")
