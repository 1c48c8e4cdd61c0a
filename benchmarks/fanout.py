"""Workload 4: F flows at once, each fanning out W parallel steps -> total seconds, flows/s.

Both systems run the F flows concurrently in one process (Ergon: `Executor.execute()` of each
under `asyncio.gather`; DBOS: `start_workflow_async` of each, then all results), and each flow
gathers its W steps with `asyncio.gather`.
"""

from __future__ import annotations

import asyncio
import time

import ergon
from benchmarks.flows import FanOut
from benchmarks.peer import Peer
from benchmarks.stats import Rate, median


async def _round(store: ergon.Store, r: int, flows: int, width: int) -> float:
    started = time.perf_counter()
    executors = [ergon.Executor(f"fan-{r}-{i}", FanOut(width=width), store) for i in range(flows)]
    outcomes = await asyncio.gather(*(e.execute() for e in executors))
    elapsed = time.perf_counter() - started
    assert all(o == ergon.Completed(sum(range(width))) for o in outcomes), outcomes[:3]
    return elapsed


async def ergon_fanout(url: str, label: str, *, flows: int, width: int, rounds: int) -> Rate:
    store = ergon.open_store(url)
    try:
        await _round(store, -1, min(flows, 10), width)  # warm-up
        totals = [await _round(store, r, flows, width) for r in range(rounds)]
    finally:
        await store.close()
    return Rate("Ergon", label, flows, median(totals))


def dbos_fanout(peer: Peer, url: str, label: str, *, flows: int, width: int, rounds: int) -> Rate:
    result = peer.run("fanout", {"url": url, "flows": flows, "width": width, "rounds": rounds})
    return Rate(f"DBOS {peer.version}", label, flows, median(result["seconds"]))
