"""A worker stopped (SIGSTOP) past its lease, then woken (SIGCONT) after another worker finished
its flows, must not run user code that is already recorded: not a due retry attempt, not the step
after a checkpoint. On SQLite, Postgres and Redis, with real `ergon worker` processes.

What ran is read from an external log the steps append to (`stall_flows.record`), not from the
store: the store refuses a fenced worker's writes either way, the log shows whether its user code
ran. The one re-execution the guarantee allows is a step that was stalled *while running*, before
its checkpoint: the worker that takes over runs it again (scenario "mid-step").

Each test: worker A claims FLOWS flows; the test waits for the window, stops A, starts B; B takes
the flows over once A's lease lapses and completes them; the test wakes A, gives it GRACE seconds,
and counts executions per flow, step and attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import ergon
from tests.processes.stall_flows import Backoff, Paused, SlowStep
from tests.processes.workers import start_worker, stop, wait_all
from tests.support.backends import backend_url, forget_url

pytestmark = pytest.mark.integration

BACKENDS = ["sqlite", "postgres", "redis"]
MODULE = "tests.processes.stall_flows"
LEASE = 1.5  # Backoff retries after 3 s and SlowStep's step runs 2 s: both outlast it
FLOWS = 3
GRACE = 2.5  # after SIGCONT: a due timer fires within milliseconds, a lease renewal within 0.5 s


@dataclass(frozen=True)
class Execution:
    """One line of the external log: a step body started (`run`) or returned (`done`)."""

    flow_id: str
    step: str
    attempt: int
    pid: int
    event: str

    def __str__(self) -> str:
        return f"{self.flow_id[:8]} {self.step}#{self.attempt} pid {self.pid} {self.event}"


def executions(log: Path) -> list[Execution]:
    if not log.exists():
        return []
    runs = []
    for line in log.read_text().splitlines():
        flow_id, step, attempt, pid, event = line.split()
        runs.append(Execution(flow_id, step, int(attempt), int(pid), event))
    return runs


def counts(runs: list[Execution], flow_id: str) -> Counter[tuple[str, int]]:
    """How often each (step, attempt) of the flow started."""
    return Counter((r.step, r.attempt) for r in runs if r.flow_id == flow_id and r.event == "run")


@dataclass
class Stage:
    """A fresh store of one backend, the log, and the worker processes started on them."""

    kind: str
    url: str
    store: ergon.Store
    log: Path
    log_dir: Path
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def client(self) -> ergon.Client:
        return ergon.Client(self.store)

    def start(self, name: str) -> subprocess.Popen[bytes]:
        process = start_worker(
            self.url, name, lease_seconds=LEASE, log_dir=self.log_dir, module=MODULE
        )
        self.workers[name] = process
        return process

    def worker_output(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def check_alive(self) -> None:
        for name, process in self.workers.items():
            assert process.poll() is None, f"worker {name} died:\n{self.worker_output(name)}"

    async def until(self, check: Callable[[], Awaitable[bool]], what: str) -> None:
        """Poll `check` until true; fail at once if a worker died, and after 30 s."""
        deadline = time.monotonic() + 30
        while not await check():
            self.check_alive()
            assert time.monotonic() < deadline, f"timed out waiting until {what}"
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def stage(kind: str, tmp_path: Path) -> AsyncIterator[Stage]:
    """Every process started on the stage is woken and killed afterwards, whatever happened."""
    url = backend_url(kind, tmp_path)
    store = ergon.open_store(url)
    opened = Stage(kind, url, store, tmp_path / "steps.log", tmp_path)
    try:
        yield opened
    finally:
        processes = list(opened.workers.values())
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
        stop(processes)
        await store.close()
        await forget_url(url)


async def step_states(stage: Stage, ids: list[str], step: str) -> list[str | None]:
    """The recorded state of `step` in each flow (None: not recorded yet)."""
    states: list[str | None] = []
    for flow_id in ids:
        records = {s.name: s.state for s in await stage.client.steps(flow_id)}
        states.append(records.get(step))
    return states


async def take_over_and_wake(
    stage: Stage, stalled: subprocess.Popen[bytes], ids: list[str], expected: ergon.Outcome
) -> tuple[subprocess.Popen[bytes], list[Execution]]:
    """With `stalled` stopped, let a new worker complete the flows, wake `stalled` and give it
    GRACE seconds. Returns the new worker and the executions logged after the wake-up."""
    stopped = time.monotonic()
    other = stage.start("b")
    try:
        outcomes = await wait_all(stage.store, ids, timeout=30)
    except TimeoutError:
        stage.check_alive()
        raise
    assert outcomes == [expected] * len(ids)
    assert time.monotonic() - stopped > LEASE  # B could only take over once A's lease lapsed
    before = len(executions(stage.log))
    stalled.send_signal(signal.SIGCONT)
    await asyncio.sleep(GRACE)
    stage.check_alive()  # fenced, not crashed
    return other, executions(stage.log)[before:]


def explain(stage: Stage, runs: list[Execution]) -> str:
    lines = "\n".join(f"  {run}" for run in runs)
    return f"\nexecutions:\n{lines}\nworker a said:\n{stage.worker_output('a')}"


@pytest.mark.parametrize("kind", BACKENDS)
async def test_a_worker_stopped_during_a_retry_backoff_does_not_run_the_attempt(
    kind: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    async with stage(kind, tmp_path) as s:
        a = s.start("a")
        ids = [await s.client.schedule(Backoff(log=str(s.log))) for _ in range(FLOWS)]
        # Attempt 1 failed and its retry is recorded as due 3 s later: A is in the backoff.
        await s.until(
            lambda: _all_equal(step_states(s, ids, "flaky"), "retrying"),
            "attempt 1 of every flow failed and its retry was recorded",
        )
        a.send_signal(signal.SIGSTOP)
        assert {(r.step, r.attempt) for r in executions(s.log)} == {("flaky", 1)}, (
            "stopped too late"
        )
        b, late = await take_over_and_wake(
            s, a, ids, ergon.Completed("flaky succeeded on attempt 2")
        )
        runs = executions(s.log)
        report = explain(s, runs)
        assert late == [], f"the woken worker ran user code after the flows completed{report}"
        for flow_id in ids:
            assert counts(runs, flow_id) == {("flaky", 1): 1, ("flaky", 2): 1, ("after", 1): 1}, (
                f"flow {flow_id}: a step or attempt ran more than once{report}"
            )
            ran_by_b = {r.step for r in runs if r.flow_id == flow_id and r.pid == b.pid}
            assert ran_by_b == {"flaky", "after"}, report  # attempt 2 and `after` ran on B
    print(f"{kind}: stopped mid-backoff, 0 attempts re-run ({time.monotonic() - started:.1f} s)")


@pytest.mark.parametrize("kind", BACKENDS)
async def test_a_worker_stopped_between_steps_does_not_run_the_next_step(
    kind: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    async with stage(kind, tmp_path) as s:
        a = s.start("a")
        ids = [await s.client.schedule(Paused(log=str(s.log), pause=1.0)) for _ in range(FLOWS)]
        # `one` is checkpointed and the flow bodies wait 1 s before `two`: stop A in that gap.
        await s.until(
            lambda: _all_equal(step_states(s, ids, "one"), "completed"),
            "step one of every flow was recorded",
        )
        a.send_signal(signal.SIGSTOP)
        assert {r.step for r in executions(s.log)} == {"one"}, "stopped too late"
        b, late = await take_over_and_wake(s, a, ids, ergon.Completed(6))
        runs = executions(s.log)
        report = explain(s, runs)
        assert late == [], f"the woken worker ran user code after the flows completed{report}"
        for flow_id in ids:
            assert counts(runs, flow_id) == {("one", 1): 1, ("two", 1): 1, ("three", 1): 1}, (
                f"flow {flow_id}: a recorded step ran again{report}"
            )
            ran_by_b = {r.step for r in runs if r.flow_id == flow_id and r.pid == b.pid}
            assert ran_by_b == {"two", "three"}, report
    print(f"{kind}: stopped between steps, 0 steps re-run ({time.monotonic() - started:.1f} s)")


@pytest.mark.parametrize("kind", BACKENDS)
async def test_a_worker_stopped_mid_step_finishes_the_body_but_runs_nothing_after(
    kind: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    async with stage(kind, tmp_path) as s:
        a = s.start("a")
        ids = [await s.client.schedule(SlowStep(log=str(s.log), seconds=2.0)) for _ in range(FLOWS)]
        # Every flow is inside `slow` (2 s of body, no checkpoint yet): stop A there.
        await s.until(
            lambda: _logged(s.log, ids, "slow"), "step slow of every flow started on worker a"
        )
        a.send_signal(signal.SIGSTOP)
        assert {(r.step, r.event) for r in executions(s.log)} == {("one", "run"), ("slow", "run")}
        b, late = await take_over_and_wake(s, a, ids, ergon.Completed(3))
        runs = executions(s.log)
        report = explain(s, runs)
        # Allowed: A's `slow` bodies, already running, return (`done`); nothing may start.
        assert [r for r in late if r.event == "run"] == [], (
            f"the woken worker started user code after the flows completed{report}"
        )
        for flow_id in ids:
            # `slow` twice, exactly: A started it (seen above) and never checkpointed it, so B
            # ran it again; that is the documented re-execution. Every other step once.
            assert counts(runs, flow_id) == {("one", 1): 1, ("slow", 1): 2, ("three", 1): 1}, (
                f"flow {flow_id}: a step ran more often than allowed{report}"
            )
            by_b = {r.step for r in runs if r.flow_id == flow_id and r.pid == b.pid}
            assert by_b == {"slow", "three"}, report
        woken = sum(1 for r in late if r.event == "done" and r.pid == a.pid)
    print(
        f"{kind}: stopped mid-step, only the stalled step re-ran ({woken}/{FLOWS} stalled bodies "
        f"returned after SIGCONT; {time.monotonic() - started:.1f} s)"
    )


async def _all_equal(states: Awaitable[list[str | None]], state: str) -> bool:
    return all(found == state for found in await states)


async def _logged(log: Path, ids: list[str], step: str) -> bool:
    started = {r.flow_id for r in executions(log) if r.step == step}
    return started >= set(ids)
