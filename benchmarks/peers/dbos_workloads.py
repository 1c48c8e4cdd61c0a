"""The DBOS Transact side of the benchmarks, run by the peer's own virtual environment.

This script imports only `dbos` and the standard library: it runs in `benchmarks/.peers/dbos`,
never in the project's environment, so the two libraries cannot share (or fight over) anything.

    python dbos_workloads.py MODE 'JSON settings'

prints one JSON object on its last line of stdout. Modes mirror the Ergon workloads:
`sequential`, `queue-worker`, `queue-client`, `resume-setup`, `resume`, `fanout`, `version`.
Every workflow and step is `async`, like Ergon's, unless the settings say `"style": "sync"`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from typing import Any

from dbos import DBOS, DBOSClient, DBOSConfig, EnqueueOptions, SetWorkflowID

QUEUE = "bench"
SETTINGS: dict[str, Any] = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}

# --- workflows ---------------------------------------------------------------------------------


@DBOS.step()
async def trivial(i: int) -> int:
    return i


@DBOS.step()
def trivial_sync(i: int) -> int:
    return i


@DBOS.workflow()
async def sequential(n: int) -> int:
    total = 0
    for i in range(n):
        total += await trivial(i)
    return total


@DBOS.workflow()
def sequential_sync(n: int) -> int:
    total = 0
    for i in range(n):
        total += trivial_sync(i)
    return total


@DBOS.workflow()
async def three_steps(i: int) -> int:
    a = await trivial(i)
    b = await trivial(a + 1)
    return await trivial(b + 1)


@DBOS.workflow()
async def fan_out(width: int) -> int:
    values = await asyncio.gather(*(trivial(i) for i in range(width)))
    return sum(values)


# Workload 3: a workflow whose first n operations are recorded steps and whose n+1st waits for a
# message. STARTED/REACHED[workflow_id] note when an execution enters the body and gets past
# the n steps (perf_counter).
STARTED: dict[str, float] = {}
REACHED: dict[str, float] = {}


@DBOS.workflow()
async def waits_after_steps(n: int) -> int:
    STARTED[DBOS.workflow_id or ""] = time.perf_counter()
    total = 0
    for i in range(n):
        total += await trivial(i)
    REACHED[DBOS.workflow_id or ""] = time.perf_counter()
    await DBOS.recv_async("go", timeout_seconds=3600)
    return total


# --- plumbing ----------------------------------------------------------------------------------


def launch(url: str, **extra: Any) -> None:
    config: DBOSConfig = {"name": "ergon-bench", "system_database_url": url, **extra}
    DBOS(config=config)
    DBOS.launch()


def report(value: dict[str, Any]) -> None:
    print(json.dumps(value), flush=True)


def quiet() -> None:
    logging.getLogger("dbos").setLevel(logging.WARNING)


# --- modes -------------------------------------------------------------------------------------


async def run_sequential() -> None:
    """One workflow of n trivial steps, `rounds` times: microseconds per step of each round."""
    n, rounds, style = SETTINGS["n"], SETTINGS["rounds"], SETTINGS.get("style", "async")
    launch(SETTINGS["url"])
    per_step = []
    for r in range(rounds + 1):  # round 0 warms up
        started = time.perf_counter()
        if style == "sync":
            await asyncio.to_thread(_sync_sequential, f"seq-{r}", n)
        else:
            with SetWorkflowID(f"seq-{r}"):
                await sequential(n)
        if r:
            per_step.append((time.perf_counter() - started) / n * 1e6)
    report({"us_per_step": per_step})


def _sync_sequential(workflow_id: str, n: int) -> None:
    with SetWorkflowID(workflow_id):
        sequential_sync(n)


def run_queue_worker() -> None:
    """A worker process: dequeue from the benchmark queue until stdin closes."""
    launch(SETTINGS["url"])
    DBOS.register_queue(
        QUEUE,
        worker_concurrency=SETTINGS["concurrency"],
        polling_interval_sec=SETTINGS["polling_interval"],
        on_conflict="always_update",
    )
    report({"ready": os.getpid()})
    sys.stdin.read()
    os._exit(0)


def run_queue_client() -> None:
    """Enqueue `flows` three-step workflows; report when the last one was recorded complete.

    `warmup` workflows run to the end first, so every worker has dequeued before the clock starts.
    """
    client = DBOSClient(system_database_url=SETTINGS["url"])
    options: EnqueueOptions = {"queue_name": QUEUE, "workflow_name": "three_steps"}
    for handle in [client.enqueue(options, i) for i in range(SETTINGS.get("warmup", 0))]:
        handle.get_result()
    flows = SETTINGS["flows"]
    started = time.time()
    handles = [client.enqueue(options, i) for i in range(flows)]
    enqueued = time.time()
    for handle in handles:
        handle.get_result()
    statuses = client.list_workflows(workflow_ids=[h.get_workflow_id() for h in handles])
    assert all(s.status == "SUCCESS" for s in statuses), "a benchmark workflow did not succeed"
    finished = max(s.updated_at or 0 for s in statuses) / 1000
    client.destroy()
    report({"seconds": finished - started, "enqueue_seconds": enqueued - started})


async def run_resume_setup() -> None:
    """Start `rounds` workflows, each to its wait after n recorded steps, then die without a trace.

    They stay PENDING, as after a crash, for `resume` to execute again.
    """
    n, rounds = SETTINGS["n"], SETTINGS["rounds"]
    launch(SETTINGS["url"])
    for r in range(rounds + 1):
        workflow_id = f"resume-{r}"
        with SetWorkflowID(workflow_id):
            await DBOS.start_workflow_async(waits_after_steps, n)
        while workflow_id not in REACHED:  # noqa: ASYNC110 (set by another thread's loop)
            await asyncio.sleep(0.005)
    report({"ready": True})
    sys.stdout.flush()
    os._exit(0)


async def run_resume() -> None:
    """Recover each PENDING workflow in turn: time until it is past its n recorded steps.

    DBOS recovers a workflow by putting it back on its internal queue (`resume_workflow`, what
    startup recovery does too); a queue thread then runs it again, replaying the recorded steps.
    `replay_ms` is body entry -> past the steps; `recovery_ms` adds the hand-off through the queue.
    The process has an executor id of its own, so launch recovers none of them by itself.
    """
    rounds = SETTINGS["rounds"]
    launch(SETTINGS["url"], executor_id="bench-resume")
    replay, recovery = [], []
    for r in range(rounds + 1):  # round 0 warms up
        workflow_id = f"resume-{r}"
        started = time.perf_counter()
        await DBOS.resume_workflow_async(workflow_id)
        while workflow_id not in REACHED:  # noqa: ASYNC110 (set by another thread's loop)
            await asyncio.sleep(0.0005)
        if r:
            replay.append((REACHED[workflow_id] - STARTED[workflow_id]) * 1000)
            recovery.append((REACHED[workflow_id] - started) * 1000)
    steps = await DBOS.list_workflow_steps_async("resume-1")
    report({"replay_ms": replay, "recovery_ms": recovery, "recorded_steps": len(steps)})
    sys.stdout.flush()
    os._exit(0)


async def run_fanout() -> None:
    """`flows` workflows at once, each gathering `width` parallel steps: total seconds."""
    flows, width, rounds = SETTINGS["flows"], SETTINGS["width"], SETTINGS["rounds"]
    launch(SETTINGS["url"])
    totals = []
    for r in range(rounds + 1):
        started = time.perf_counter()
        handles = []
        for i in range(flows):
            with SetWorkflowID(f"fan-{r}-{i}"):
                handles.append(await DBOS.start_workflow_async(fan_out, width))
        await asyncio.gather(*(h.get_result() for h in handles))
        if r:
            totals.append(time.perf_counter() - started)
    report({"seconds": totals})


def main() -> None:
    quiet()
    mode = sys.argv[1]
    if mode == "version":
        from importlib.metadata import version

        report({"version": version("dbos")})
    elif mode == "sequential":
        asyncio.run(run_sequential())
    elif mode == "queue-worker":
        run_queue_worker()
    elif mode == "queue-client":
        run_queue_client()
    elif mode == "resume-setup":
        asyncio.run(run_resume_setup())
    elif mode == "resume":
        asyncio.run(run_resume())
    elif mode == "fanout":
        asyncio.run(run_fanout())
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    DBOS.destroy()


if __name__ == "__main__":
    main()
