"""Workload 3: resume a flow with N recorded steps -> milliseconds.

Ergon: the flow's first N operations are recorded steps and its N+1st waits for a signal that
never comes; each `Executor.execute()` therefore loads the flow, replays the N steps from their
checkpoints and suspends again, and that whole call is what is timed.

DBOS: the same workflow (N recorded steps, then `recv`) is left PENDING by a process that exits
without a trace, as after a crash; a second process recovers each one in turn. See
`peers/dbos_workloads.py` for which part of the recovery each figure covers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import ergon
from benchmarks.flows import WaitsAfterSteps
from benchmarks.peer import Peer
from benchmarks.stats import median


@dataclass
class Resume:
    system: str
    store: str
    ms: float
    recovery_ms: float | None = None


async def ergon_resume(url: str, label: str, *, n: int, rounds: int) -> Resume:
    store = ergon.open_store(url)
    try:
        flow = WaitsAfterSteps(n=n)
        first = await ergon.Executor("resume", flow, store).execute()
        assert isinstance(first, ergon.Suspended), first
        times = []
        for r in range(rounds + 1):  # round 0 warms up
            started = time.perf_counter()
            outcome = await ergon.Executor("resume", flow, store).execute()
            elapsed = (time.perf_counter() - started) * 1000
            assert isinstance(outcome, ergon.Suspended), outcome
            if r:
                times.append(elapsed)
        recorded = len(await ergon.Client(store).steps("resume"))
        assert recorded >= n, f"only {recorded} steps recorded"
    finally:
        await store.close()
    return Resume("Ergon", label, median(times))


def dbos_resume(peer: Peer, url: str, label: str, *, n: int, rounds: int) -> Resume:
    settings = {"url": url, "n": n, "rounds": rounds}
    peer.run("resume-setup", settings)
    result = peer.run("resume", settings)
    assert result["recorded_steps"] >= n, result
    return Resume(
        f"DBOS {peer.version}", label, median(result["replay_ms"]), median(result["recovery_ms"])
    )
