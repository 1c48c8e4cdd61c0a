"""A worker pool of one version (`Worker(exclusive=True)`), on every store: it runs its
version's flows and leaves unversioned ones to the processes that know their classes."""

from __future__ import annotations

import asyncio

import ergon


class Doubles(ergon.Flow):
    n: int

    @ergon.flow
    async def run(self) -> int:
        return await self.double()

    @ergon.step
    async def double(self) -> int:
        return self.n * 2


async def test_an_exclusive_worker_runs_only_its_version(store: ergon.Store) -> None:
    scheduler = ergon.Scheduler(store)
    mine = await scheduler.with_version("1.0").schedule(Doubles(n=1))
    other = await scheduler.with_version("2.0").schedule(Doubles(n=2))
    plain = await scheduler.unversioned().schedule(Doubles(n=3))
    client = ergon.Client(store)
    worker = ergon.Worker(
        store, "pool", flows=[Doubles], version="1.0", exclusive=True, poll_interval=0.1
    )
    handle = worker.start()
    try:
        assert await client.wait(mine, timeout=10) == ergon.Completed(2)
        await asyncio.sleep(0.3)
        assert (await client.status(plain)).state == "pending"
        assert (await client.status(other)).state == "pending"
    finally:
        await handle.shutdown(timeout=5)
    assert worker.stats.claimed == 1
    assert (await client.queue_depth()).runnable == 1  # the unversioned flow, still waiting
    assert (await client.queue_depth(version="1.0")).unfinished == 0
    # The same worker without `exclusive` takes the unversioned flow too.
    handle = ergon.Worker(store, "any", flows=[Doubles], version="1.0", poll_interval=0.1).start()
    try:
        assert await client.wait(plain, timeout=10) == ergon.Completed(6)
    finally:
        await handle.shutdown(timeout=5)
