"""Execution fencing inside one process, on every store: a worker whose lease may have lapsed
starts no further step, retry attempt or flow body. (The same with real processes stopped by
SIGSTOP is in tests/processes/test_stalls.py.)

A step that blocks the event loop stands in for a stall: while it blocks, no lease renewal can
run, exactly as during a long GC pause or a frozen VM.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

import ergon
from ergon.core.fencing import SAFETY_MARGIN, LeaseDeadline, lease_clock

CALLS: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()


class Stalls(ergon.Flow):
    """Step `stall` blocks the loop past the lease on its first execution only."""

    stall_seconds: float

    @ergon.flow
    async def run(self) -> str:
        await self.stall()
        await self.after()
        return "done"

    @ergon.step
    async def stall(self) -> None:
        CALLS["stall"] += 1
        if CALLS["stall"] == 1:
            time.sleep(self.stall_seconds)  # blocks the event loop: no renewal can run

    @ergon.step
    async def after(self) -> None:
        CALLS["after"] += 1


class StallsInBackoff(ergon.Flow):
    """Attempt 1 fails; the loop is blocked through the backoff, so attempt 2 must not start."""

    stall_seconds: float

    @ergon.flow
    async def run(self) -> str:
        return await self.flaky()

    @ergon.step(retry=ergon.RetryPolicy(3, 0.05, 0.05, 1.0))
    async def flaky(self) -> str:
        CALLS[f"flaky:{ergon.current_step().attempt}"] += 1
        if ergon.current_step().attempt == 1:
            asyncio.get_running_loop().call_soon(time.sleep, self.stall_seconds)
            raise ConnectionError("attempt 1 fails")
        return "ok"


LEASE = 0.6


async def run_with_a_stall(
    store: ergon.Store, flow: type[Stalls] | type[StallsInBackoff]
) -> tuple[ergon.Outcome, ergon.Worker]:
    """Run one flow that stalls for 1.5 leases under one worker; its outcome and the worker."""
    worker = ergon.Worker(store, "w", flows=[flow], lease_seconds=LEASE, poll_interval=0.05)
    handle = worker.start()
    try:
        flow_id = await ergon.Scheduler(store).schedule(flow(stall_seconds=LEASE * 1.5))
        return await ergon.Client(store).wait(flow_id, timeout=20), worker
    finally:
        await handle.shutdown(timeout=5)


async def test_a_stalled_execution_starts_no_further_step(store: ergon.Store) -> None:
    outcome, worker = await run_with_a_stall(store, Stalls)
    assert outcome == ergon.Completed("done")
    # The stalled execution recorded `stall` but stopped before `after`; the worker claimed the
    # flow again once its lease ran out and ran `after` once, without re-running `stall`.
    assert CALLS == Counter({"stall": 1, "after": 1})
    assert worker.stats.outcomes.get("lost") == 1


async def test_a_stall_through_a_backoff_starts_no_further_attempt(store: ergon.Store) -> None:
    outcome, worker = await run_with_a_stall(store, StallsInBackoff)
    assert outcome == ergon.Completed("ok")
    assert CALLS == Counter({"flaky:1": 1, "flaky:2": 1})
    assert worker.stats.outcomes.get("lost") == 1


def test_the_deadline_counts_from_the_request_and_keeps_its_margin() -> None:
    sent = lease_clock()
    deadline = LeaseDeadline(lease_seconds=10.0, confirmed_at=sent - 10 * (1 - SAFETY_MARGIN))
    assert deadline.lapsed
    deadline.confirm(sent_at=sent - 100)  # an older confirmation never moves it back
    assert deadline.lapsed
    deadline.confirm(sent_at=sent)
    assert not deadline.lapsed
    assert -8.1 < deadline.overdue() < -7.9
    deadline.revoke()
    assert deadline.lapsed
    deadline.confirm(sent_at=lease_clock())
    assert deadline.lapsed, "a lease reported lost stays lost"
