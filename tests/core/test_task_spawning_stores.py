"""A store whose driver starts background tasks (asyncpg and redis-py do) must not shift step
positions: only tasks the flow body itself creates take positions."""

from __future__ import annotations

import asyncio
from collections import Counter

import ergon
from ergon.storage import SignalRecord, StepRecord

RAN: Counter[str] = Counter()


class SpawningStore(ergon.MemoryStore):
    """A memory store that, like a network driver, starts a task on every call it serves."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[asyncio.Task[None]] = []

    async def save_step(
        self, flow_id: str, step: StepRecord, *, epoch: int | None, consumes: int | None = None
    ) -> None:
        self.spawned.append(asyncio.create_task(asyncio.sleep(0)))
        await super().save_step(flow_id, step, epoch=epoch, consumes=consumes)

    async def next_signal(self, flow_id: str, name: str) -> SignalRecord | None:
        self.spawned.append(asyncio.create_task(asyncio.sleep(0)))
        return await super().next_signal(flow_id, name)


class Batch(ergon.Flow):
    items: list[str]

    @ergon.flow
    async def run(self) -> list[str]:
        done = [await self.process(item) for item in self.items]
        await ergon.sleep(0.05)
        parallel = await asyncio.gather(self.process("x"), self.process("y"))
        return [*done, *parallel]

    @ergon.step
    async def process(self, item: str) -> str:
        RAN[item] += 1
        return item.upper()


async def test_store_tasks_do_not_take_positions() -> None:
    store = SpawningStore()
    first = await ergon.Executor("b", Batch(items=["a", "b", "c"]), store).execute()
    assert isinstance(first, ergon.Suspended)
    assert [s.key for s in await store.load_steps("b")] == ["0", "1", "2", "3"]
    await asyncio.sleep(0.06)
    done = await ergon.Executor("b", Batch(items=["a", "b", "c"]), store).execute()
    assert done == ergon.Completed(["A", "B", "C", "X", "Y"])
    assert RAN == Counter(a=1, b=1, c=1, x=1, y=1)
    assert store.spawned
