"""A signal payload that cannot be decoded (JSON nested deeper than the decoder allows, not JSON
at all) or validated raises `SignalPayloadError` at the wait and is consumed with it: the signal
queued behind it reaches the next wait, and an uncaught one fails the flow (never retried)."""

from __future__ import annotations

from collections import Counter

import pytest

import ergon

DEEP = "[" * 1000 + "]" * 1000  # the decoder's recursion limit is about 200 levels
ORDER = {"item": "book"}
RAN: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _reset() -> None:
    RAN.clear()


class Patient(ergon.Flow):
    """Catches a bad payload at its first wait and waits again."""

    @ergon.flow
    async def run(self) -> list[str]:
        seen = []
        try:
            await ergon.wait_for_signal("order", dict[str, str])
        except ergon.SignalPayloadError as exc:
            seen.append(f"refused {exc.signal}")
        order = await ergon.wait_for_signal("order", dict[str, str])
        seen.append(order["item"])
        return [*seen, await self.after()]

    @ergon.step
    async def after(self) -> str:
        RAN["after"] += 1
        return "after"


class Trusting(ergon.Flow):
    """Does not catch it."""

    @ergon.flow
    async def run(self) -> object:
        RAN["body"] += 1
        return await ergon.wait_for_signal("order")


@pytest.mark.parametrize("bad", [DEEP, "{not json", '{"item": 1}'])
async def test_a_payload_that_cannot_be_used_is_consumed_and_the_next_one_delivered(
    store: ergon.Store, bad: str
) -> None:
    await store.send_signal("p", "order", bad)  # raw text, as another client could send it
    await ergon.Client(store).signal("p", "order", ORDER)
    outcome = await ergon.Executor("p", Patient(), store).execute()
    assert outcome == ergon.Completed(["refused order", "book", "after"])
    assert await store.next_signal("p", "order") is None
    # Replayed, the first wait raises the same error again and the second gets the same order.
    assert await ergon.Executor("p", Patient(), store).execute() == outcome
    assert RAN == Counter(after=1)


async def test_a_deep_payload_that_arrives_while_suspended_is_consumed(
    store: ergon.Store,
) -> None:
    executor = ergon.Executor("p", Patient(), store)
    assert isinstance(await executor.execute(), ergon.Suspended)
    await store.send_signal("p", "order", DEEP)
    assert isinstance(await ergon.Executor("p", Patient(), store).execute(), ergon.Suspended)
    await ergon.Client(store).signal("p", "order", ORDER)
    outcome = await ergon.Executor("p", Patient(), store).execute()
    assert outcome == ergon.Completed(["refused order", "book", "after"])


async def test_an_uncaught_payload_error_fails_the_flow_once(store: ergon.Store) -> None:
    await store.send_signal("t", "order", DEEP)
    outcome = await ergon.Executor("t", Trusting(), store, flow_retries=True).execute()
    assert isinstance(outcome, ergon.Failed)
    assert outcome.error.type == "SignalPayloadError" and outcome.error.retryable is False
    assert "signal 'order' payload cannot be decoded" in outcome.error.message
    assert "recursion" in outcome.error.message
    status = await store.get_flow("t")
    assert status is not None and status.state == "failed" and status.attempts == 1
    claimed = await store.claim_flows(owner="w", version=None, lease_seconds=30, limit=10)
    assert claimed.flows == []
    assert await store.next_signal("t", "order") is None
    # Another flow still runs on the same signal name.
    await ergon.Client(store).signal("u", "order", ORDER)
    assert await ergon.Executor("u", Trusting(), store).execute() == ergon.Completed(ORDER)
    assert RAN == Counter(body=2)
