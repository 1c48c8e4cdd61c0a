"""Fault tests on the server stores: worker processes SIGKILLed at random, and the server itself
restarted, in the middle of a run. Nothing may be lost, and no step whose checkpoint was written
may run again.

How "ran again after its checkpoint" is detected: a flow's steps run in order and each starts
only after the previous one's checkpoint returned, so in the log of step executions a flow's
step indexes never go down unless a recorded step ran again. Repeats of the *same* index are
executions interrupted by a kill (the step ran, its checkpoint was never written): at-least-once.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

import ergon
from tests.stores.fault_flows import Chain
from tests.stores.test_servers import ready, restart, throwaway
from tests.support.backends import backend_url, forget_url

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SERVERS = ["postgres", "redis"]


def start_worker(url: str, name: str, log_dir: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "ergon.cli.main", "worker",
        "--store", url,
        "--import", "tests.stores.fault_flows",
        "--name", name,
        "--concurrency", "8",
        "--lease-seconds", "1.5",
        "--poll-interval", "0.5",
    ]  # fmt: skip
    output = (log_dir / f"{name}.log").open("ab")
    return subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)


def executions(log: Path) -> dict[str, list[tuple[int, int]]]:
    runs: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for line in log.read_text().splitlines():
        tag, index, pid = line.split()
        runs[tag].append((int(index), int(pid)))
    return runs


def check_log(log: Path, flows: int, steps: int, killed: set[int] | None) -> int:
    """Every step of every flow ran; none ran again after its checkpoint; repeats came only
    from killed workers (`killed` None: from anyone -- a checkpoint refused while the server was
    down interrupts its step too). Returns the number of repeated (interrupted) executions."""
    runs = executions(log)
    assert len(runs) == flows
    repeats = 0
    for tag, seq in runs.items():
        indexes = [index for index, _ in seq]
        assert indexes == sorted(indexes), f"{tag}: a recorded step ran again: {seq}"
        assert set(indexes) == set(range(steps)), f"{tag}: steps missing: {seq}"
        for earlier, later in itertools.pairwise(seq):
            if earlier[0] == later[0]:
                repeats += 1
                if killed is not None:
                    assert earlier[1] in killed, f"{tag}: step {earlier[0]} ran twice, no kill"
    return repeats


async def wait_all(store: ergon.Store, ids: list[str], timeout: float) -> list[ergon.Outcome]:
    client = ergon.Client(store)
    return list(await asyncio.gather(*(client.wait(i, timeout=timeout) for i in ids)))


@pytest.mark.parametrize("kind", SERVERS)
async def test_four_workers_200_flows_20_random_kills(kind: str, tmp_path: Path) -> None:
    url = backend_url(kind, tmp_path)
    log = tmp_path / "steps.log"
    store = ergon.open_store(url)
    workers = {f"w{i}": start_worker(url, f"w{i}", tmp_path) for i in range(4)}
    killed: set[int] = set()
    rng = random.Random(5)
    try:
        client = ergon.Client(store)
        ids = [
            await client.schedule(Chain(log=str(log), tag=f"f{i}", steps=4, pause=0.05))
            for i in range(200)
        ]
        kills = 0
        generation = 4
        while kills < 20:
            await asyncio.sleep(rng.uniform(0.05, 0.3))
            name = rng.choice(sorted(workers))
            victim = workers.pop(name)
            victim.kill()
            victim.wait()
            killed.add(victim.pid)
            kills += 1
            workers[f"w{generation}"] = start_worker(url, f"w{generation}", tmp_path)
            generation += 1
        started = time.monotonic()
        outcomes = await wait_all(store, ids, timeout=120)
        assert outcomes == [ergon.Completed(0 + 1 + 2 + 3)] * 200
        repeats = check_log(log, flows=200, steps=4, killed=killed)
        print(
            f"{kind}: 200 flows, {kills} SIGKILLs: 0 lost, 0 recorded steps re-run, "
            f"{repeats} interrupted executions repeated; drained "
            f"{time.monotonic() - started:.1f} s after the last kill"
        )
    finally:
        for process in workers.values():
            process.kill()
            process.wait()
        await store.close()
        await forget_url(url)


@pytest.mark.parametrize("kind", SERVERS)
async def test_a_server_restart_mid_run_loses_and_repeats_nothing(
    kind: str, tmp_path: Path
) -> None:
    log = tmp_path / "steps.log"
    with throwaway(kind) as server:
        url = server.url
        store = ergon.open_store(url)
        workers = [start_worker(url, f"r{i}", tmp_path) for i in range(3)]
        try:
            client = ergon.Client(store)
            ids = [
                await client.schedule(Chain(log=str(log), tag=f"f{i}", steps=4, pause=0.1))
                for i in range(60)
            ]
            while not log.exists() or len(log.read_text().splitlines()) < 40:
                await asyncio.sleep(0.05)
            await asyncio.to_thread(restart, server, kind)
            await ready(server, kind)
            outcomes = await wait_all(store, ids, timeout=120)
            assert outcomes == [ergon.Completed(6)] * 60
            assert all(w.poll() is None for w in workers), "a worker died with the server"
            repeats = check_log(log, flows=60, steps=4, killed=None)
            print(
                f"{kind} restarted mid-run: 60 flows, 0 lost, 0 recorded steps re-run, "
                f"{repeats} executions repeated after a checkpoint the server refused"
            )
        finally:
            for process in workers:
                process.kill()
                process.wait()
            await store.close()
