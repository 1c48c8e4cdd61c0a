"""Workload 1: one flow of N trivial sequential steps -> microseconds per step.

Each store is measured beside its floor: the raw cost of one durable write per step, done the
simplest way the database allows, at the same durability setting as the store. Rounds alternate
between Ergon and the floor so that disk and CPU noise hit both alike; the median round counts.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import ergon
from benchmarks.stats import median
from ergon.storage.sqlite import Synchronous


class Steps(ergon.Flow, name="benchmarks.Steps"):
    n: int

    @ergon.flow
    async def run(self) -> int:
        total = 0
        for i in range(self.n):
            total += await self.step(i)
        return total

    @ergon.step
    async def step(self, i: int) -> int:
        return i


@dataclass
class StepResult:
    store: str
    ergon_us: float
    floor_us: float | None
    floor: str

    @property
    def ratio(self) -> float | None:
        return self.ergon_us / self.floor_us if self.floor_us else None


async def ergon_per_step(store: ergon.Store, n: int, flow_id: str) -> float:
    started = time.perf_counter()
    outcome = await ergon.Executor(flow_id, Steps(n=n), store).execute()
    elapsed = time.perf_counter() - started
    assert isinstance(outcome, ergon.Completed), outcome
    return elapsed / n * 1e6


def sqlite_floor(path: Path, n: int, synchronous: str) -> float:
    """One INSERT + commit per step, WAL mode, at the store's synchronous level."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS floor "
        "(flow TEXT, key TEXT, result TEXT, PRIMARY KEY (flow, key))"
    )
    run = path.stem + str(time.monotonic_ns())
    started = time.perf_counter()
    for i in range(n):
        conn.execute("INSERT INTO floor VALUES (?, ?, ?)", (run, str(i), str(i)))
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed / n * 1e6


async def sqlite(n: int, rounds: int, synchronous: Synchronous = "full") -> StepResult:
    with tempfile.TemporaryDirectory(prefix="ergon-bench-") as tmp:
        base = Path(tmp)
        store = ergon.SqliteStore(base / "ergon.db", synchronous=synchronous)
        ours, floors = [], []
        try:
            await ergon_per_step(store, 10, "warmup")
            for r in range(rounds):
                ours.append(await ergon_per_step(store, n, f"round-{r}"))
                floors.append(sqlite_floor(base / "floor.db", n, synchronous.upper()))
        finally:
            await store.close()
    return StepResult(
        f"SQLite (WAL, synchronous={synchronous})",
        median(ours),
        median(floors),
        f"INSERT + commit, WAL, synchronous={synchronous}",
    )


async def memory(n: int, rounds: int) -> StepResult:
    store = ergon.MemoryStore()
    results = [await ergon_per_step(store, n, f"round-{r}") for r in range(rounds)]
    return StepResult("memory", median(results), None, "-")


# --- Postgres --------------------------------------------------------------------------------


async def _postgres_floor(conn: Any, n: int) -> float:
    """One INSERT per step, each its own transaction (autocommit), over one connection."""
    run = str(time.monotonic_ns())
    started = time.perf_counter()
    for i in range(n):
        await conn.execute("INSERT INTO floor VALUES ($1, $2, $3)", run, str(i), str(i))
    return (time.perf_counter() - started) / n * 1e6


async def postgres(n: int, rounds: int, server_dsn: str) -> StepResult:
    """Ergon on Postgres beside INSERT + commit, in a database created for this run."""
    import asyncpg

    from ergon.storage.postgres import PostgresStore

    database = f"ergon_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_dsn)
    await admin.execute(f'CREATE DATABASE "{database}"')
    dsn = urlunsplit(urlsplit(server_dsn)._replace(path=f"/{database}"))
    store = PostgresStore(dsn)
    floor = await asyncpg.connect(dsn)
    try:
        synchronous_commit = await floor.fetchval("SHOW synchronous_commit")
        await floor.execute(
            "CREATE TABLE floor (flow text, key text, result text, PRIMARY KEY (flow, key))"
        )
        await ergon_per_step(store, 10, "warmup")
        await _postgres_floor(floor, 10)
        ours, floors = [], []
        for r in range(rounds):
            ours.append(await ergon_per_step(store, n, f"round-{r}"))
            floors.append(await _postgres_floor(floor, n))
    finally:
        await store.close()
        await floor.close()
        await admin.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
        await admin.close()
    return StepResult(
        f"Postgres (synchronous_commit={synchronous_commit})",
        median(ours),
        median(floors),
        f"INSERT + commit, one asyncpg connection, synchronous_commit={synchronous_commit}",
    )


# --- Redis -----------------------------------------------------------------------------------


async def _redis_floor(client: Any, key: str, n: int) -> float:
    """One HSET per step over one connection."""
    started = time.perf_counter()
    for i in range(n):
        await client.hset(key, str(i), str(i))
    return (time.perf_counter() - started) / n * 1e6


async def redis(n: int, rounds: int, url: str) -> StepResult:
    """Ergon on Redis beside one HSET per step, under a key prefix of this run's own."""
    import redis.asyncio as aioredis

    from ergon.storage.redis import RedisStore

    prefix = f"ergon-bench:{uuid.uuid4().hex[:8]}:"
    store = RedisStore(url, prefix=prefix)
    # The leanest redis-py setup: one connection, no per-command socket timeout (a wait_for).
    floor = aioredis.Redis.from_url(
        url, single_connection_client=True, decode_responses=True, socket_timeout=None
    )
    try:
        config = await floor.config_get("append*")
        durability = (
            f"appendonly={config.get('appendonly')}, appendfsync={config.get('appendfsync')}"
        )
        await ergon_per_step(store, 10, "warmup")
        await _redis_floor(floor, f"{prefix}floor", 10)
        ours, floors = [], []
        for r in range(rounds):
            ours.append(await ergon_per_step(store, n, f"round-{r}"))
            floors.append(await _redis_floor(floor, f"{prefix}floor:{r}", n))
    finally:
        await store.close()
        keys = [key async for key in floor.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await floor.unlink(*keys)
        await floor.aclose()
    return StepResult(
        f"Redis ({durability})",
        median(ours),
        median(floors),
        f"HSET, one connection, {durability}",
    )
