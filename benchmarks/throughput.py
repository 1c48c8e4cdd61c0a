"""Workload 2: many short flows through the queue, run by worker processes -> flows per second.

Both systems get the same shape: W worker processes of C flows (or workflows) at once each, the
flows queued one by one from a separate client process, and the clock running from the first
enqueue to the last completion as recorded in the database (so how the client waits does not
count). Workers are started and warmed up (a few flows run to the end) before the clock starts.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import ergon
from benchmarks.flows import ThreeSteps
from benchmarks.peer import Peer
from benchmarks.stats import Rate

ROOT = Path(__file__).resolve().parent.parent
WARMUP = 8


def start_ergon_workers(
    url: str, workers: int, concurrency: int, poll_interval: float
) -> list[subprocess.Popen[bytes]]:
    """`ergon worker` processes, started the way an operator's pods (and tests/processes) are."""
    processes = []
    for i in range(workers):
        command = [
            sys.executable, "-m", "ergon.cli.main", "worker", "--store", url,
            "--import", "benchmarks.flows", "--name", f"bench-{i}",
            "--concurrency", str(concurrency), "--poll-interval", str(poll_interval),
        ]  # fmt: skip
        processes.append(
            subprocess.Popen(
                command,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={**os.environ},
            )
        )
    return processes


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _until_done(client: ergon.Client, ids: list[str], timeout: float) -> None:
    """Wait for every flow, checking them in order (cheap: one status read per poll)."""
    deadline = time.monotonic() + timeout
    for flow_id in ids:
        while not (await client.status(flow_id)).is_terminal:
            if time.monotonic() > deadline:
                raise TimeoutError(f"flow {flow_id} did not finish in {timeout:g} s")
            await asyncio.sleep(0.01)


async def ergon_queue(
    url: str, label: str, *, flows: int, workers: int, concurrency: int, poll_interval: float
) -> Rate:
    processes = start_ergon_workers(url, workers, concurrency, poll_interval)
    store = ergon.open_store(url)
    try:
        client = ergon.Client(store)
        scheduler = ergon.Scheduler(store)
        warm = [
            await scheduler.schedule(ThreeSteps(i=i), flow_id=f"warm-{i}") for i in range(WARMUP)
        ]
        await _until_done(client, warm, timeout=120)
        started = time.time()
        ids = [await scheduler.schedule(ThreeSteps(i=i), flow_id=f"q-{i}") for i in range(flows)]
        await _until_done(client, ids, timeout=600)
        statuses = [await client.status(flow_id) for flow_id in ids]
        assert all(s.state == "completed" for s in statuses), "a benchmark flow did not complete"
        finished = max(s.updated_at.timestamp() for s in statuses)
    finally:
        stop(processes)
        await store.close()
    return Rate("Ergon", label, flows, finished - started)


def dbos_queue(
    peer: Peer,
    url: str,
    label: str,
    *,
    flows: int,
    workers: int,
    concurrency: int,
    polling_interval: float,
) -> Rate:
    settings = {"url": url, "concurrency": concurrency, "polling_interval": polling_interval}
    try:
        processes = [peer.start_worker(settings) for _ in range(workers)]
        for process in processes:
            peer.wait_ready(process)
        result = peer.run("queue-client", {"url": url, "flows": flows, "warmup": WARMUP})
    finally:
        peer.stop_workers()
    return Rate(f"DBOS {peer.version}", label, flows, float(result["seconds"]))
