"""Non-determinism detection between two versions of a flow class."""

from __future__ import annotations

import logging

import pytest

import ergon


class V1(ergon.Flow, name="orders.Checkout"):
    @ergon.flow
    async def run(self) -> str:
        await self.reserve()
        await ergon.sleep(60)
        return await self.charge(10)

    @ergon.step
    async def reserve(self) -> str:
        return "reserved"

    @ergon.step
    async def charge(self, amount: int) -> str:
        return f"charged {amount}"


class V2(ergon.Flow, name="orders.Checkout"):
    """The same flow after a deploy that swapped the first step."""

    @ergon.flow
    async def run(self) -> str:
        await self.check()
        await ergon.sleep(60)
        return "done"

    @ergon.step
    async def check(self) -> str:
        return "checked"


class V3(ergon.Flow, name="orders.Checkout"):
    """Catches every exception: must still fail."""

    @ergon.flow
    async def run(self) -> str:
        try:
            await self.check()
        except Exception:
            return "swallowed"
        return "done"

    @ergon.step
    async def check(self) -> str:
        return "checked"


async def test_a_different_step_at_a_recorded_position_fails_the_flow(store: ergon.Store) -> None:
    assert isinstance(await ergon.Executor("x", V1(), store).execute(), ergon.Suspended)
    outcome = await ergon.Executor("x", V2(), store).execute()
    assert isinstance(outcome, ergon.Failed)
    assert outcome.error.type == "NonDeterminismError"
    assert outcome.error.retryable is False
    assert "position 0" in outcome.error.message
    assert "'reserve'" in outcome.error.message and "'check'" in outcome.error.message


async def test_non_determinism_cannot_be_swallowed(store: ergon.Store) -> None:
    await ergon.Executor("x", V1(), store).execute()
    outcome = await ergon.Executor("x", V3(), store).execute()
    assert isinstance(outcome, ergon.Failed) and outcome.error.type == "NonDeterminismError"


class ArgsV1(ergon.Flow, name="orders.Args"):
    amount: int

    @ergon.flow
    async def run(self) -> str:
        result = await self.charge(self.amount)
        await ergon.sleep(60)
        return result

    @ergon.step
    async def charge(self, amount: int) -> str:
        return f"charged {amount}"


class ArgsV2(ergon.Flow, name="orders.Args"):
    amount: int

    @ergon.flow
    async def run(self) -> str:
        result = await self.charge(self.amount * 2)
        await ergon.sleep(60)
        return result

    @ergon.step
    async def charge(self, amount: int) -> str:
        return f"charged {amount}"


async def test_different_arguments_replay_the_recorded_result_with_a_warning(
    store: ergon.Store, caplog: pytest.LogCaptureFixture
) -> None:
    await ergon.Executor("a", ArgsV1(amount=5), store).execute()
    with caplog.at_level(logging.WARNING, logger="ergon.replay"):
        outcome = await ergon.Executor("a", ArgsV2(amount=5), store).execute()
    assert isinstance(outcome, ergon.Suspended)
    (record,) = [s for s in await store.load_steps("a") if s.name == "charge"]
    assert record.result == '"charged 5"'
    assert "different arguments" in caplog.text
