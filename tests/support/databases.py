"""Isolated Postgres databases and Redis key prefixes for the suites.

Postgres: each test process creates one database of its own on the server named by
ERGON_TEST_POSTGRES_DSN (random suffix), on first use, and drops it when the process exits; each
test gets a fresh schema in it (the store creates the schema's tables itself). Redis: each test
gets its own key prefix on the server named by ERGON_TEST_REDIS_URL, deleted afterwards.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import threading
import uuid
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis.asyncio as aioredis

from tests.support.services import postgres_dsn

_lock = threading.Lock()
_databases: dict[str, str] = {}  # server DSN -> DSN of this process's database on it


def _with_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


def _in_own_loop(work: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine to completion on a fresh loop in a helper thread (callable from sync
    code and from inside a running loop alike)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, work).result()


async def _admin(dsn: str, statement: str) -> None:
    """One statement on the server's maintenance connection (CREATE/DROP DATABASE)."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def postgres_database(server: str | None = None) -> str:
    """The DSN of this process's own test database (created on first call, dropped at exit)."""
    server = server or postgres_dsn()
    with _lock:
        if server not in _databases:
            database = f"ergon_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
            _in_own_loop(_admin(server, f'CREATE DATABASE "{database}"'))
            atexit.register(_drop_at_exit, server, database)
            _databases[server] = _with_database(server, database)
        return _databases[server]


def _drop_at_exit(server: str, database: str) -> None:
    """Drop this process's database. At exit no loop runs here, and thread pools refuse new work,
    so the coroutine runs directly."""
    try:
        asyncio.run(_admin(server, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    except Exception as exc:  # the server may be gone already (a throwaway one)
        print(f"note: could not drop test database {database}: {exc}")


def fresh_schema() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


def fresh_prefix() -> str:
    return f"ergon-test:{uuid.uuid4().hex[:12]}:"


async def drop_prefix(url: str, prefix: str) -> None:
    """Delete every key under `prefix`."""
    client = aioredis.Redis.from_url(url)
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                await client.unlink(*batch)
                batch = []
        if batch:
            await client.unlink(*batch)
    finally:
        await client.aclose()
