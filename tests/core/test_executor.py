"""The Executor's own controls: asking a running execution to cancel."""

from __future__ import annotations

from collections.abc import Callable

import ergon

RAN: list[str] = []
ON_FIRST: list[Callable[[], None]] = []


class TwoSteps(ergon.Flow):
    @ergon.flow
    async def run(self) -> str:
        await self.first()
        await self.second()
        return "done"

    @ergon.step
    async def first(self) -> None:
        RAN.append("first")
        for hook in ON_FIRST:
            hook()

    @ergon.step
    async def second(self) -> None:
        RAN.append("second")


async def test_request_cancel_stops_the_flow_at_its_next_step(store: ergon.Store) -> None:
    RAN.clear()
    executor = ergon.Executor("c", TwoSteps(), store)
    ON_FIRST[:] = [executor.request_cancel]
    try:
        assert await executor.execute() == ergon.Cancelled()
    finally:
        ON_FIRST.clear()
    assert RAN == ["first"]
    assert (await ergon.Client(store).status("c")).state == "cancelled"
    [record] = await ergon.Client(store).steps("c")
    assert (record.name, record.state) == ("first", "completed")


async def test_a_cancel_requested_before_the_execution_opened_the_flow_is_kept(
    store: ergon.Store,
) -> None:
    RAN.clear()
    executor = ergon.Executor("c", TwoSteps(), store)
    executor.request_cancel()
    assert executor.epoch is None
    assert await executor.execute() == ergon.Cancelled()
    assert RAN == [] and executor.epoch is not None
