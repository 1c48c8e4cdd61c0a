"""Wake-up latency under workers: how long after a signal is sent, or a timer is due, does the
flow run again? Measured with real worker processes on a store shared across processes.

`python -m benchmarks.wakeups [--store URL] [--samples N]`
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import ergon
from benchmarks.stats import percentile

ROOT = Path(__file__).resolve().parent.parent


class Woken(ergon.Flow, name="benchmarks.Woken"):
    sleep_seconds: float = 0.0

    @ergon.flow
    async def run(self) -> str:
        if self.sleep_seconds:
            await ergon.sleep(self.sleep_seconds)
        else:
            await ergon.wait_for_signal("go")
        return await self.resumed()

    @ergon.step
    async def resumed(self) -> str:
        return "resumed"


@dataclass
class Latency:
    what: str
    p50_ms: float
    p95_ms: float
    samples: int


async def _resumed_at(client: ergon.Client, flow_id: str) -> float:
    await client.wait(flow_id, timeout=30)
    steps = await client.steps(flow_id)
    started = steps[-1].started_at
    assert started is not None
    return started.timestamp()


async def _suspended(client: ergon.Client, flow_id: str) -> None:
    for _ in range(3000):
        if (await client.status(flow_id)).state == "suspended":
            return
        await asyncio.sleep(0.005)
    raise TimeoutError(flow_id)


async def measure(url: str, samples: int) -> list[Latency]:
    worker = subprocess.Popen(  # noqa: ASYNC220 - started once, before anything is measured
        [sys.executable, "-m", "ergon.cli.main", "worker", "--store", url,
         "--import", "benchmarks.wakeups", "--concurrency", "16", "--poll-interval", "5"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ},
    )  # fmt: skip
    store = ergon.open_store(url)
    try:
        client = ergon.Client(store)
        warm = await client.schedule(Woken(sleep_seconds=0.01))
        await client.wait(warm, timeout=60)
        signal_ms = []
        for _ in range(samples):
            flow_id = await client.schedule(Woken())
            await _suspended(client, flow_id)
            sent = ergon_now()
            await client.signal(flow_id, "go")
            signal_ms.append((await _resumed_at(client, flow_id) - sent) * 1000)
        timer_ms = []
        for _ in range(samples):
            flow_id = await client.schedule(Woken(sleep_seconds=0.2))
            await _suspended(client, flow_id)
            steps = await client.steps(flow_id)
            fire_at = steps[0].fire_at
            assert fire_at is not None
            timer_ms.append((await _resumed_at(client, flow_id) - fire_at.timestamp()) * 1000)
    finally:
        worker.kill()
        worker.wait()
        await store.close()
    return [
        Latency(
            "signal sent -> flow resumed",
            percentile(signal_ms, 50),
            percentile(signal_ms, 95),
            samples,
        ),
        Latency(
            "timer due -> flow resumed", percentile(timer_ms, 50), percentile(timer_ms, 95), samples
        ),
    ]


def ergon_now() -> float:
    import time

    return time.time()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.wakeups")
    parser.add_argument(
        "--store", default=None, help="store URL (default: a temporary SQLite file)"
    )
    parser.add_argument("--samples", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.store or f"sqlite:///{Path(tmp) / 'wake.db'}"
        store = url.split(":")[0]
        for row in asyncio.run(measure(url, args.samples)):
            print(
                f"{row.what}: p50 {row.p50_ms:.1f} ms, p95 {row.p95_ms:.1f} ms "
                f"({row.samples} samples, {store})"
            )


if __name__ == "__main__":
    main()
