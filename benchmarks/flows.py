"""The Ergon flows of workloads 2-4, in a module of their own so that `ergon worker --import
benchmarks.flows` finds exactly these (workload 1's flow lives in `steps.py`)."""

from __future__ import annotations

import asyncio

import ergon


class ThreeSteps(ergon.Flow, name="benchmarks.ThreeSteps"):
    """Workload 2: a short flow, so the queue and the claim, not the steps, dominate."""

    i: int

    @ergon.flow
    async def run(self) -> int:
        a = await self.step(self.i)
        b = await self.step(a + 1)
        return await self.step(b + 1)

    @ergon.step
    async def step(self, i: int) -> int:
        return i


class FanOut(ergon.Flow, name="benchmarks.FanOut"):
    """Workload 4: `width` steps in parallel under one flow."""

    width: int

    @ergon.flow
    async def run(self) -> int:
        values = await asyncio.gather(*(self.step(i) for i in range(self.width)))
        return sum(values)

    @ergon.step
    async def step(self, i: int) -> int:
        return i


class WaitsAfterSteps(ergon.Flow, name="benchmarks.WaitsAfterSteps"):
    """Workload 3: n recorded steps, then a signal that never comes, so that every execution
    replays the n steps and suspends again."""

    n: int

    @ergon.flow
    async def run(self) -> int:
        total = 0
        for i in range(self.n):
            total += await self.step(i)
        await ergon.wait_for_signal("go")
        return total

    @ergon.step
    async def step(self, i: int) -> int:
        return i
