"""Real worker processes on one SQLite file: exactly-once steps, timers, SIGKILL and SIGSTOP of a
worker, graceful SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

import ergon
from tests.processes.flows import Sleeper, SlowMiddle, Tagged
from tests.processes.workers import start_worker, stop, wait_all

pytestmark = pytest.mark.integration


def log_lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


async def warm_up(store: ergon.Store, log: Path, workers: int) -> None:
    """Wait until every worker process is up and claiming (one flow per worker completes)."""
    client = ergon.Client(store)
    ids = [
        await client.schedule(Tagged(log=str(log) + ".warm", tag=f"warm{i}"))
        for i in range(workers * 2)
    ]
    await wait_all(store, ids, timeout=60)


async def test_three_workers_thirty_flows_every_step_exactly_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    log = tmp_path / "steps.log"
    workers = [start_worker(url, f"w{i}", concurrency=4, log_dir=tmp_path) for i in range(3)]
    store = ergon.open_store(url)
    try:
        client = ergon.Client(store)
        ids = [await client.schedule(Tagged(log=str(log), tag=f"f{i}")) for i in range(30)]
        outcomes = await wait_all(store, ids, timeout=60)
        assert outcomes == [ergon.Completed(f"f{i}=3") for i in range(30)]
        counts = Counter(log_lines(log))
        assert len(counts) == 90 and set(counts.values()) == {1}, counts.most_common(3)
        owners = {(await client.status(i)).lease_owner for i in ids}
        assert owners == {None}
    finally:
        stop(workers)
        await store.close()


async def test_ten_timers_across_three_workers_fire_once_and_finish_in_time(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    log = tmp_path / "timers.log"
    workers = [start_worker(url, f"t{i}", log_dir=tmp_path) for i in range(3)]
    store = ergon.open_store(url)
    try:
        await warm_up(store, log, 3)
        client = ergon.Client(store)
        started = time.monotonic()
        ids = [
            await client.schedule(Sleeper(log=str(log), tag=f"s{i}", seconds=1.0))
            for i in range(10)
        ]
        outcomes = await wait_all(store, ids, timeout=30)
        elapsed = time.monotonic() - started
        assert outcomes == [ergon.Completed(f"s{i}") for i in range(10)]
        assert Counter(log_lines(log)) == Counter({f"s{i}:fired": 1 for i in range(10)})
        assert elapsed < 3.5, f"10 one-second timers took {elapsed:.2f} s"
        print(f"10 x 1 s timers over 3 worker processes finished in {elapsed:.2f} s")
    finally:
        stop(workers)
        await store.close()


async def test_a_worker_killed_mid_step_is_replaced_after_its_lease(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    log = tmp_path / "kill.log"
    victim = start_worker(url, "victim", lease_seconds=1.5, log_dir=tmp_path)
    store = ergon.open_store(url)
    survivor = None
    try:
        await warm_up(store, log, 1)
        client = ergon.Client(store)
        flow_id = await client.schedule(SlowMiddle(log=str(log), seconds=1.0))
        deadline = time.monotonic() + 30
        while not any(line.startswith("slow:") for line in log_lines(log)):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        survivor = start_worker(url, "survivor", lease_seconds=1.5, log_dir=tmp_path)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        assert (await client.status(flow_id)).lease_owner == "victim"
        assert await client.wait(flow_id, timeout=30) == ergon.Completed("done")
        lines = log_lines(log)
        assert lines[0] == "first" and lines.count("first") == 1  # not re-run
        slow = [line for line in lines if line.startswith("slow:")]
        assert len(slow) == 2 and slow[0] != slow[1]  # interrupted, then run by the survivor
        assert lines[-1] == f"last:{survivor.pid}"
    finally:
        stop([victim, *([survivor] if survivor else [])])
        await store.close()


async def test_a_stalled_worker_is_fenced_when_it_wakes_up(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'f.db'}"
    log = tmp_path / "fence.log"
    stalled = start_worker(url, "stalled", lease_seconds=1.0, log_dir=tmp_path)
    store = ergon.open_store(url)
    other = None
    try:
        await warm_up(store, log, 1)
        client = ergon.Client(store)
        flow_id = await client.schedule(SlowMiddle(log=str(log), seconds=1.5))
        while not any(line.startswith("slow:") for line in log_lines(log)):
            await asyncio.sleep(0.02)
        stalled.send_signal(signal.SIGSTOP)  # a long GC pause, a frozen VM, a partition
        other = start_worker(url, "other", lease_seconds=1.0, log_dir=tmp_path)
        assert await client.wait(flow_id, timeout=30) == ergon.Completed("done")
        stalled.send_signal(signal.SIGCONT)
        await asyncio.sleep(2.0)  # the stalled worker finishes its step and tries to record it
        lines = log_lines(log)
        assert [line for line in lines if line.startswith("last:")] == [f"last:{other.pid}"]
        steps = await client.steps(flow_id)
        assert [(s.name, s.state) for s in steps] == [
            ("first", "completed"),
            ("slow", "completed"),
            ("last", "completed"),
        ]
        # Fenced one way or another: its lease renewal finds the lease gone, its checkpoint is
        # refused, or its local lease deadline has passed.
        told = (tmp_path / "stalled.log").read_text()
        assert any(
            words in told
            for words in ("lost its lease on flow", "taken over", "lease may have lapsed")
        ), told
    finally:
        if stalled.poll() is None:
            stalled.send_signal(signal.SIGCONT)
        stop([stalled, *([other] if other else [])])
        await store.close()


async def test_sigterm_finishes_in_flight_flows_then_exits(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    log = tmp_path / "graceful.log"
    worker = start_worker(url, "graceful", log_dir=tmp_path)
    store = ergon.open_store(url)
    try:
        await warm_up(store, log, 1)
        client = ergon.Client(store)
        flow_id = await client.schedule(SlowMiddle(log=str(log), seconds=1.0))
        while not any(line.startswith("slow:") for line in log_lines(log)):
            await asyncio.sleep(0.02)
        worker.send_signal(signal.SIGTERM)
        queued = await client.schedule(Tagged(log=str(log), tag="late"))
        assert await asyncio.to_thread(worker.wait, 30) == 0
        assert (await client.status(flow_id)).state == "completed"
        assert (await client.status(queued)).state == "pending"
    finally:
        stop([worker])
        await store.close()


def test_worker_command_rejects_a_module_without_flows(tmp_path: Path) -> None:
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "ergon.cli.main", "worker", "--import", "json",
         "--store", f"sqlite:///{tmp_path / 'x.db'}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "no ergon.Flow classes found in json" in result.stderr


async def test_versioned_worker_processes_route_flows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'v.db'}"
    log = tmp_path / "versions.log"
    v1 = start_worker(url, "v1", version="1.0", log_dir=tmp_path)
    store = ergon.open_store(url)
    v2 = None
    try:
        scheduler = ergon.Scheduler(store)
        client = ergon.Client(store)
        old = await scheduler.with_version("1.0").schedule(Tagged(log=str(log), tag="old"))
        plain = await scheduler.unversioned().schedule(Tagged(log=str(log), tag="plain"))
        new = await scheduler.with_version("2.0").schedule(Tagged(log=str(log), tag="new"))
        assert await wait_all(store, [old, plain], timeout=30) == [
            ergon.Completed("old=3"),
            ergon.Completed("plain=3"),
        ]
        await asyncio.sleep(1.0)
        assert (await client.status(new)).state == "pending"  # no 2.0 worker yet
        v2 = start_worker(url, "v2", version="2.0", log_dir=tmp_path)
        assert await client.wait(new, timeout=30) == ergon.Completed("new=3")
        owners = {line.split(":")[0] for line in log_lines(log)}
        assert owners == {"old", "plain", "new"}
    finally:
        stop([v1, *([v2] if v2 else [])])
        await store.close()


async def test_cancel_running_and_suspended_flows_under_worker_processes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    log = tmp_path / "cancel.log"
    worker = start_worker(url, "canceller", log_dir=tmp_path)
    store = ergon.open_store(url)
    try:
        client = ergon.Client(store)
        running = await client.schedule(SlowMiddle(log=str(log), seconds=2.0))
        sleeping = await client.schedule(Sleeper(log=str(log), tag="z", seconds=60))
        while not any(line.startswith("slow:") for line in log_lines(log)):
            await asyncio.sleep(0.02)
        while (await client.status(sleeping)).state != "suspended":
            await asyncio.sleep(0.02)
        assert (await client.cancel(sleeping)).state == "cancelled"  # at once
        requested = await client.cancel(running)
        assert requested.state == "running" and requested.cancel_requested
        assert await client.wait(running, timeout=30) == ergon.Cancelled()
        assert not any(line.startswith("last:") for line in log_lines(log))  # stopped at the step
        assert await client.wait(sleeping, timeout=5) == ergon.Cancelled()
    finally:
        stop([worker])
        await store.close()


async def test_flow_level_retry_under_worker_processes(tmp_path: Path) -> None:
    from tests.processes.flows import FlakyFlow

    url = f"sqlite:///{tmp_path / 'r.db'}"
    log = tmp_path / "retry.log"
    workers = [start_worker(url, f"r{i}", log_dir=tmp_path) for i in range(2)]
    store = ergon.open_store(url)
    try:
        client = ergon.Client(store)
        flow_id = await client.schedule(FlakyFlow(log=str(log), failures=2))
        assert await client.wait(flow_id, timeout=30) == ergon.Completed("succeeded on attempt 3")
        status = await client.status(flow_id)
        assert status.attempts == 3
        assert log_lines(log) == ["prepare"]  # checkpoints replayed on each retry
    finally:
        stop(workers)
        await store.close()
