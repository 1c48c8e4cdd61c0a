"""Durable timers: `ergon.sleep`."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta

import pytest

import ergon

CALLS: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()


class Settlement(ergon.Flow):
    seconds: float

    @ergon.flow
    async def run(self) -> str:
        await self.before()
        await ergon.sleep(timedelta(seconds=self.seconds))
        await self.after()
        return "settled"

    @ergon.step
    async def before(self) -> None:
        CALLS["before"] += 1

    @ergon.step
    async def after(self) -> None:
        CALLS["after"] += 1


async def test_sleep_suspends_and_records_fire_at_once(store: ergon.Store) -> None:
    first = await ergon.Executor("t", Settlement(seconds=0.3), store).execute()
    assert isinstance(first, ergon.Suspended)
    assert first.reason.kind == "timer" and first.reason.fire_at is not None
    status = await store.get_flow("t")
    assert status is not None and status.state == "suspended"
    assert status.wake_at == first.reason.fire_at
    again = await ergon.Executor("t", Settlement(seconds=0.3), store).execute()
    assert again == first  # same fire_at: the duration does not restart
    await asyncio.sleep((first.reason.fire_at - ergon_now()).total_seconds() + 0.01)
    done = await ergon.Executor("t", Settlement(seconds=0.3), store).execute()
    assert done == ergon.Completed("settled")
    assert Counter(before=1, after=1) == CALLS
    sleep = (await store.load_steps("t"))[1]
    assert (sleep.kind, sleep.state, sleep.fire_at) == ("sleep", "completed", first.reason.fire_at)


async def test_zero_sleep_does_not_suspend(store: ergon.Store) -> None:
    assert await ergon.Executor("t", Settlement(seconds=0), store).execute() == ergon.Completed(
        "settled"
    )


def test_sleep_outside_a_flow_is_a_clear_error() -> None:
    with pytest.raises(ergon.FlowContextError, match=r"ergon.sleep\(\) was called outside"):
        _ = ergon.sleep(1)  # raises at the call, before a coroutine exists


def ergon_now() -> datetime:
    from ergon.core.records import utcnow

    return utcnow()
