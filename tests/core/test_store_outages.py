"""A store that fails mid-flow (an outage longer than the store's own retries) stops the
execution without recording an outcome; a later execution resumes the flow."""

from __future__ import annotations

from collections import Counter

import pytest

import ergon
from ergon.storage import SignalRecord, StepRecord

RAN: Counter[str] = Counter()


class FlakyStore(ergon.MemoryStore):
    """A memory store whose server "goes away" while `down` is set."""

    down = False

    async def save_step(
        self, flow_id: str, step: StepRecord, *, epoch: int | None, consumes: int | None = None
    ) -> None:
        if self.down:
            raise ergon.StoreError("store at 127.0.0.1:5432 is unreachable")
        await super().save_step(flow_id, step, epoch=epoch, consumes=consumes)

    async def next_signal(self, flow_id: str, name: str) -> SignalRecord | None:
        if self.down:
            raise ergon.StoreError("store at 127.0.0.1:5432 is unreachable")
        return await super().next_signal(flow_id, name)


class Careful(ergon.Flow):
    @ergon.flow
    async def run(self) -> str:
        try:
            first = await self.one()
            second = await self.two()
        except Exception as exc:  # a flow that catches everything must not swallow an outage
            return f"caught {type(exc).__name__}"
        return first + second

    @ergon.step
    async def one(self) -> str:
        RAN["one"] += 1
        return "1"

    @ergon.step
    async def two(self) -> str:
        RAN["two"] += 1
        return "2"


async def test_an_outage_stops_the_execution_without_failing_the_flow() -> None:
    store = FlakyStore()
    original = store.save_step

    async def fail_second(
        flow_id: str, step: StepRecord, *, epoch: int | None, consumes: int | None = None
    ) -> None:
        if step.name == "two":
            store.down = True
        await original(flow_id, step, epoch=epoch, consumes=consumes)

    store.save_step = fail_second  # type: ignore[method-assign]
    with pytest.raises(ergon.StoreError, match="unreachable"):
        await ergon.Executor("c", Careful(), store).execute()
    status = await store.get_flow("c")
    assert status is not None and status.state == "running"  # no outcome recorded
    store.down = False
    store.save_step = original  # type: ignore[method-assign]
    assert await ergon.Executor("c", Careful(), store).execute() == ergon.Completed("12")
    assert RAN == Counter(one=1, two=2)  # "two" ran again: its checkpoint never landed


class Waiting(ergon.Flow):
    @ergon.flow
    async def run(self) -> object:
        try:
            return await ergon.wait_for_signal("go")
        except Exception:
            return "swallowed"


async def test_an_outage_at_a_signal_wait_stops_the_execution() -> None:
    store = FlakyStore()
    await ergon.Client(store).signal("w", "go", 1)
    store.down = True
    with pytest.raises(ergon.StoreError):
        await ergon.Executor("w", Waiting(), store).execute()
    store.down = False
    assert await ergon.Executor("w", Waiting(), store).execute() == ergon.Completed(1)
