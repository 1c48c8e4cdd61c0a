"""Workload 6 (issue 18's scaling curves): throughput against concurrency, beside the store's
sequential-write limit.

- Flows in flight: N flows of S trivial sequential steps (`steps.Steps`) started at once in one
  process, one `Executor` each under `asyncio.gather`, on a store of their own -> steps/s (N x S
  over the time until the last flow returned), median of rounds after a warm-up round.
- Worker processes: a queue of F flows of 3 steps (`flows.ThreeSteps`), filled first, drained
  by W worker processes of C flows at once each -> flows/s, from the moment all W are told to
  start (each has connected to the store and waits for "go" on its stdin) to the last completion
  recorded in the store. The workers are `ergon.Worker`s run as `ergon worker` runs them, gated
  so that they start together: with `ergon worker` processes fed one flow at a time by a client
  (workload 2's shape), the client's enqueue rate, not the workers, set the pace here.
- Sequential-write limit: the store's floor of workload 1 (`steps.py`): one durable write at a
  time over one connection at the store's durability setting, measured in the same fresh database
  (SQLite: a file beside the store's) before and after every point. The median of those samples,
  as writes/s, is the limit; a flow of S steps needs at least S durable writes, so in flows/s the
  limit is writes/s ÷ S. Ratios are steps/s ÷ writes/s either way.

Every point (store x concurrency) runs in a store of its own (a new SQLite file, Postgres database
or Redis key prefix, dropped after), so no point reads another's rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import ergon
from benchmarks import steps, throughput
from benchmarks.databases import REDIS_URL, store_url
from benchmarks.flows import ThreeSteps
from benchmarks.stats import median

FLOOR_TABLE = (
    "CREATE TABLE IF NOT EXISTS floor (flow text, key text, result text, PRIMARY KEY (flow, key))"
)


@dataclass
class Scaling:
    """One store's curve: flows/s at each concurrency (flows in flight, or worker processes),
    and the floor samples (µs per sequential durable write) taken beside its points."""

    kind: str
    steps_per_flow: int
    rates: dict[int, float] = field(default_factory=dict)
    floors_us: list[float] = field(default_factory=list)

    def steps_per_second(self, x: int) -> float:
        return self.rates[x] * self.steps_per_flow

    @property
    def writes_per_second(self) -> float | None:
        """The sequential-write limit (None for the memory store, which writes nothing)."""
        return 1e6 / median(self.floors_us) if self.floors_us else None

    @property
    def flow_limit(self) -> float | None:
        """The limit in flows/s: one durable write per step and nothing else."""
        limit = self.writes_per_second
        return limit / self.steps_per_flow if limit else None

    def ratio(self, x: int) -> float | None:
        """Steps/s at concurrency `x` ÷ sequential durable writes/s."""
        limit = self.writes_per_second
        return self.steps_per_second(x) / limit if limit else None


@asynccontextmanager
async def _fresh(kind: str) -> AsyncIterator[tuple[str, Path]]:
    """A store URL no other point uses and a directory of its own (for the SQLite floor's file
    and the workers' logs), both removed after."""
    with tempfile.TemporaryDirectory(prefix="ergon-bench-") as tmp:
        async with store_url(kind, tmp) as url:
            yield url, Path(tmp)


async def floor_us(kind: str, url: str, directory: Path, writes: int) -> float | None:
    """µs per durable write, one at a time, as workload 1's floor (None for memory)."""
    if kind == "sqlite":
        return steps.sqlite_floor(directory / "floor.db", writes, "FULL")
    if kind == "postgres":
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            await conn.execute(FLOOR_TABLE)
            await steps._postgres_floor(conn, 10)  # warm-up: the statement prepared
            return await steps._postgres_floor(conn, writes)
        finally:
            await conn.close()
    if kind == "redis":
        import redis.asyncio as aioredis

        prefix = parse_qs(urlsplit(url).query)["prefix"][0]
        client = aioredis.Redis.from_url(
            REDIS_URL, single_connection_client=True, decode_responses=True, socket_timeout=None
        )
        try:
            key = f"{prefix}floor:{time.monotonic_ns()}"
            await steps._redis_floor(client, key + ":warm", 10)
            return await steps._redis_floor(client, key, writes)
        finally:
            await client.aclose()
    return None


async def _beside_floor(
    curve: Scaling, url: str, directory: Path, writes: int, measure: Callable[[], Awaitable[None]]
) -> None:
    """`measure()` between two floor samples taken in the same store."""
    before = await floor_us(curve.kind, url, directory, writes)
    await measure()
    after = await floor_us(curve.kind, url, directory, writes)
    curve.floors_us += [f for f in (before, after) if f is not None]


# --- flows in flight in one process ----------------------------------------------------------


async def _in_flight_round(store: ergon.Store, tag: str, flows: int, n: int) -> float:
    """Flows/s of `flows` flows of `n` steps started at once."""
    executors = [ergon.Executor(f"{tag}-{i}", steps.Steps(n=n), store) for i in range(flows)]
    started = time.perf_counter()
    outcomes = await asyncio.gather(*(e.execute() for e in executors))
    elapsed = time.perf_counter() - started
    expected = ergon.Completed(sum(range(n)))
    assert all(o == expected for o in outcomes), outcomes[:3]
    return flows / elapsed


async def in_flight(
    kind: str, *, sizes: tuple[int, ...], steps_per_flow: int, rounds: int, floor_writes: int
) -> Scaling:
    curve = Scaling(kind, steps_per_flow)
    for flows in sizes:
        async with _fresh(kind) as (url, directory):
            store = ergon.open_store(url)

            async def measure(store: ergon.Store = store, flows: int = flows) -> None:
                await _in_flight_round(store, "warm", min(flows, 8), 2)
                rates = [
                    await _in_flight_round(store, f"r{r}", flows, steps_per_flow)
                    for r in range(rounds)
                ]
                curve.rates[flows] = median(rates)

            try:
                await _beside_floor(curve, url, directory, floor_writes, measure)
            finally:
                await store.close()
    return curve


# --- worker processes ------------------------------------------------------------------------


def start_gated_workers(
    url: str, count: int, concurrency: int, poll_interval: float, log_dir: Path
) -> list[subprocess.Popen[bytes]]:
    """`count` worker processes (`python -m benchmarks.scaling`, below), each waiting for "go"
    on its stdin once connected; worker i's stderr goes to `log_dir/bench-i.log`."""
    processes = []
    for i in range(count):
        command = [
            sys.executable, "-m", "benchmarks.scaling", url, f"bench-{i}", str(concurrency),
            str(poll_interval),
        ]  # fmt: skip
        with (log_dir / f"bench-{i}.log").open("wb") as log:
            processes.append(
                subprocess.Popen(
                    command,
                    cwd=throughput.ROOT,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    env={**os.environ},
                )
            )
    return processes


async def _ready(processes: list[subprocess.Popen[bytes]], log_dir: Path) -> None:
    """Wait for every worker's "ready" line (imports done, store connected)."""
    for i, process in enumerate(processes):
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 120)
        except TimeoutError:
            raise TimeoutError(f"worker bench-{i} not ready in 120 s") from None
        if line.strip() != b"ready":
            tail = (log_dir / f"bench-{i}.log").read_text(errors="replace").splitlines()[-3:]
            raise RuntimeError(f"worker bench-{i} did not start: {line!r} {tail}")


def _go(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        assert process.stdin is not None
        process.stdin.write(b"go\n")
        process.stdin.flush()


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
    throughput.stop(processes)
    for process in processes:
        if process.stdout is not None:
            process.stdout.close()


async def _drain(
    url: str, directory: Path, *, workers: int, flows: int, concurrency: int, poll_interval: float
) -> float:
    """Flows/s of `workers` worker processes draining a queue of `flows` flows of 3 steps: the
    queue is filled first, the workers connect, then all are told to start at once; the clock
    runs from that moment to the last completion recorded in the store."""
    store = ergon.open_store(url)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        client = ergon.Client(store)
        scheduler = ergon.Scheduler(store)
        ids = [await scheduler.schedule(ThreeSteps(i=i), flow_id=f"q-{i}") for i in range(flows)]
        processes = start_gated_workers(url, workers, concurrency, poll_interval, directory)
        await _ready(processes, directory)
        started = time.time()
        _go(processes)
        await throughput._until_done(client, ids, timeout=600)
        statuses = [await client.status(flow_id) for flow_id in ids]
        assert all(s.state == "completed" for s in statuses), "a benchmark flow did not complete"
        finished = max(s.updated_at.timestamp() for s in statuses)
    finally:
        _stop(processes)
        await store.close()
    return flows / (finished - started)


async def workers(
    kind: str,
    *,
    sizes: tuple[int, ...],
    flows: int,
    concurrency: int,
    poll_interval: float,
    floor_writes: int,
) -> Scaling:
    curve = Scaling(kind, 3)
    for count in sizes:
        async with _fresh(kind) as (url, directory):

            async def measure(
                url: str = url, directory: Path = directory, count: int = count
            ) -> None:
                curve.rates[count] = await _drain(
                    url, directory, workers=count, flows=flows, concurrency=concurrency,
                    poll_interval=poll_interval,
                )  # fmt: skip

            await _beside_floor(curve, url, directory, floor_writes, measure)
    return curve


# --- the worker process ----------------------------------------------------------------------


async def _gated_worker(url: str, name: str, concurrency: int, poll_interval: float) -> None:
    """An `ergon.Worker` as `ergon worker` runs it (same options, SIGTERM finishes in-flight
    flows and stops), except that it starts claiming only when "go" arrives on stdin, so that
    every worker of a measurement starts at once on a full queue."""
    store = ergon.open_store(url)
    worker = ergon.Worker(
        store, name, flows=[ThreeSteps], concurrency=concurrency, poll_interval=poll_interval
    )
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, worker.stop)
    try:
        await store.get_flow("ergon-worker-startup-check")  # connected, as `ergon worker` is
        await store.notifier()
        print("ready", flush=True)
        if (await asyncio.to_thread(sys.stdin.readline)).strip() == "go":
            await worker.run()
    finally:
        await store.close()


def main() -> None:
    """`python -m benchmarks.scaling URL NAME CONCURRENCY POLL_INTERVAL`: one gated worker."""
    url, name, concurrency, poll_interval = sys.argv[1:5]
    asyncio.run(_gated_worker(url, name, int(concurrency), float(poll_interval)))


if __name__ == "__main__":
    main()
