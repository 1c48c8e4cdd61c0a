"""Workload 1: one flow of N trivial sequential steps -> microseconds per step.

Each store is measured beside its floor: the raw cost of one durable write per step, done the
simplest way the database allows, at the same durability setting as the store. Rounds alternate
between Ergon and the floor so that disk and CPU noise hit both alike; the median round counts.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import ergon

from benchmarks.stats import median


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


async def sqlite(n: int, rounds: int, synchronous: str = "full") -> StepResult:
    with tempfile.TemporaryDirectory(prefix="ergon-bench-") as tmp:
        base = Path(tmp)
        store = ergon.SqliteStore(base / "ergon.db", synchronous=synchronous)  # type: ignore[arg-type]
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
