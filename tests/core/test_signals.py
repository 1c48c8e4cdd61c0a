"""Signals: `ergon.wait_for_signal` and `Client.signal`."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import pydantic
import pytest

import ergon

CALLS: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()


class Approval(pydantic.BaseModel):
    approved: bool
    by: str = "someone"


class Approve(ergon.Flow):
    order_id: str

    @ergon.flow
    async def run(self) -> str:
        await self.prepare()
        decision = await ergon.wait_for_signal("approval", Approval)
        return f"{self.order_id}:{decision.approved}:{decision.by}"

    @ergon.step
    async def prepare(self) -> None:
        CALLS["prepare"] += 1


async def test_waits_then_resumes_with_the_signal(store: ergon.Store) -> None:
    client = ergon.Client(store)
    first = await ergon.Executor("a", Approve(order_id="1"), store).execute()
    assert first == ergon.Suspended(ergon.SuspendReason("signal", "approval", None))
    assert (await client.status("a")).state == "suspended"
    assert await client.signal("a", "approval", {"approved": True, "by": "ops"})
    assert (await client.status("a")).state == "pending"  # woken
    done = await ergon.Executor("a", Approve(order_id="1"), store).execute()
    assert done == ergon.Completed("1:True:ops")
    assert CALLS["prepare"] == 1
    wait = (await client.steps("a"))[1]
    assert (wait.kind, wait.name, wait.state) == ("signal", "signal:approval", "completed")


async def test_signal_sent_before_the_wait_is_kept(store: ergon.Store) -> None:
    await ergon.Client(store).signal("early", "approval", {"approved": False})
    done = await ergon.Executor("early", Approve(order_id="2"), store).execute()
    assert done == ergon.Completed("2:False:someone")


async def test_duplicate_signal_id_is_delivered_once(store: ergon.Store) -> None:
    client = ergon.Client(store)
    assert await client.signal("d", "approval", {"approved": True}, signal_id="req-42")
    assert not await client.signal("d", "approval", {"approved": False}, signal_id="req-42")
    assert await ergon.Executor("d", Approve(order_id="3"), store).execute() == ergon.Completed(
        "3:True:someone"
    )
    # The duplicate was not queued: a second wait would find nothing.
    assert await store.next_signal("d", "approval") is None


class TwoApprovals(ergon.Flow):
    @ergon.flow
    async def run(self) -> list[bool]:
        first = await ergon.wait_for_signal("approval", Approval)
        second = await ergon.wait_for_signal("approval", Approval)
        return [first.approved, second.approved]


async def test_signals_queue_in_arrival_order_and_each_wait_consumes_one(
    store: ergon.Store,
) -> None:
    client = ergon.Client(store)
    await client.signal("q", "approval", {"approved": True})
    await client.signal("q", "approval", {"approved": False})
    await client.signal("q", "other", {"approved": False})
    assert await ergon.Executor("q", TwoApprovals(), store).execute() == ergon.Completed(
        [True, False]
    )
    assert await store.next_signal("q", "other") is not None


class Forgiving(ergon.Flow):
    @ergon.flow
    async def run(self) -> str:
        while True:
            try:
                decision = await ergon.wait_for_signal("approval", Approval)
            except ergon.SignalPayloadError as exc:
                CALLS["invalid"] += 1
                CALLS[f"mentions approved: {'approved' in str(exc)}"] += 1
                continue
            return f"approved={decision.approved}"


async def test_invalid_payload_raises_at_the_wait_and_the_flow_may_wait_again(
    store: ergon.Store,
) -> None:
    client = ergon.Client(store)
    await client.signal("f", "approval", {"approved": "perhaps"})
    first = await ergon.Executor("f", Forgiving(), store).execute()
    assert isinstance(first, ergon.Suspended)
    await client.signal("f", "approval", {"approved": True})
    assert await ergon.Executor("f", Forgiving(), store).execute() == ergon.Completed(
        "approved=True"
    )
    assert CALLS["invalid"] == 2  # once live, once replayed from its checkpoint
    assert CALLS["mentions approved: True"] == 2
    states = [(s.state, s.error.type if s.error else None) for s in await store.load_steps("f")]
    assert states == [("failed", "SignalPayloadError"), ("completed", None)]


class Deadline(ergon.Flow):
    @ergon.flow
    async def run(self) -> str:
        try:
            await ergon.wait_for_signal("approval", Approval, timeout=timedelta(seconds=0.2))
        except ergon.SignalTimeoutError:
            return "timed out"
        return "approved"


async def test_timeout_is_durable_and_raises_signal_timeout(store: ergon.Store) -> None:
    first = await ergon.Executor("t", Deadline(), store).execute()
    assert isinstance(first, ergon.Suspended)
    assert first.reason.kind == "signal" and first.reason.fire_at is not None
    again = await ergon.Executor("t", Deadline(), store).execute()
    assert again == first  # the deadline does not move
    await asyncio.sleep(0.25)
    assert await ergon.Executor("t", Deadline(), store).execute() == ergon.Completed("timed out")


async def test_signal_within_the_timeout_wins(store: ergon.Store) -> None:
    await ergon.Executor("w", Deadline(), store).execute()
    await ergon.Client(store).signal("w", "approval", {"approved": True})
    assert await ergon.Executor("w", Deadline(), store).execute() == ergon.Completed("approved")


class Untyped(ergon.Flow):
    @ergon.flow
    async def run(self) -> object:
        return await ergon.wait_for_signal("anything")


async def test_untyped_wait_returns_plain_json(store: ergon.Store) -> None:
    await ergon.Client(store).signal("u", "anything", [1, {"a": None}])
    assert await ergon.Executor("u", Untyped(), store).execute() == ergon.Completed(
        [1, {"a": None}]
    )


async def test_run_waits_for_a_signal_from_another_task(store: ergon.Store) -> None:
    async def approve_later() -> None:
        await asyncio.sleep(0.1)
        await ergon.Client(store).signal("r", "approval", {"approved": True, "by": "later"})

    sender = asyncio.create_task(approve_later())
    assert await ergon.run(Approve(order_id="9"), store=store, flow_id="r") == "9:True:later"
    await sender


def test_wait_outside_a_flow_is_a_clear_error() -> None:
    with pytest.raises(ergon.FlowContextError, match="outside a running flow"):
        _ = ergon.wait_for_signal("x")  # raises at the call, before a coroutine exists


async def test_unserializable_signal_payload_is_refused(store: ergon.Store) -> None:
    with pytest.raises(TypeError, match="payload"):
        await ergon.Client(store).signal("x", "approval", object())
