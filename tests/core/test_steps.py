"""Steps: checkpoints, replay, retries, timeouts, serialization, idempotency keys."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid
from collections import Counter
from typing import Any

import pydantic
import pytest

import ergon

CALLS: Counter[str] = Counter()
FAIL_PLAN: dict[str, int] = {}


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    FAIL_PLAN.clear()


class Flaky(Exception):
    """Retryable by default."""


class Fatal(Exception):
    retryable = False


class SaysNo(Exception):
    def is_retryable(self) -> bool:
        return False


def maybe_fail(name: str, exc: type[Exception] = Flaky) -> None:
    CALLS[name] += 1
    if FAIL_PLAN.get(name, 0) > 0:
        FAIL_PLAN[name] -= 1
        raise exc(f"{name} failed")


class Receipt(pydantic.BaseModel):
    id: str
    amount: float
    at: dt.datetime


@dataclasses.dataclass
class Box:
    size: int


class Order(ergon.Flow):
    order_id: str
    amount: float = 0.0

    @ergon.flow
    async def run(self) -> str:
        receipt = await self.charge()
        box = await self.pack(receipt.id)
        return f"{self.order_id}:{receipt.amount}:{box.size}"

    @ergon.step
    async def charge(self) -> Receipt:
        maybe_fail("charge")
        return Receipt(id=f"r-{self.order_id}", amount=self.amount, at=dt.datetime(2026, 1, 1))

    @ergon.step(retry=ergon.RetryPolicy(3, 0.01, 0.05, 2.0))
    def pack(self, receipt_id: str) -> Box:
        maybe_fail("pack")
        return Box(size=len(receipt_id))


async def test_completes_and_checkpoints_every_step(store: ergon.Store) -> None:
    outcome = await ergon.Executor("o-1", Order(order_id="A1", amount=9.5), store).execute()
    assert outcome == ergon.Completed("A1:9.5:4")
    steps = await store.load_steps("o-1")
    assert [(s.position, s.name, s.state) for s in steps] == [
        (0, "charge", "completed"),
        (1, "pack", "completed"),
    ]
    status = await store.get_flow("o-1")
    assert status is not None and status.state == "completed"
    assert status.flow == Order.flow_name()


async def test_reexecuting_a_completed_flow_runs_nothing(store: ergon.Store) -> None:
    await ergon.Executor("o-1", Order(order_id="A1"), store).execute()
    again = await ergon.Executor("o-1", Order(order_id="A1"), store).execute()
    assert again == ergon.Completed("A1:0.0:4")
    assert Counter(charge=1, pack=1) == CALLS


async def test_resume_replays_completed_steps_with_their_types(store: ergon.Store) -> None:
    FAIL_PLAN["pack"] = 5  # exhausts the 3 attempts
    first = await ergon.Executor("o-1", Order(order_id="A1"), store).execute()
    assert isinstance(first, ergon.Failed)
    assert first.error.type == "Flaky"
    assert Counter(charge=1, pack=3) == CALLS


async def test_failed_flow_returns_recorded_failure_without_running(store: ergon.Store) -> None:
    FAIL_PLAN["charge"] = 1
    first = await ergon.Executor("o-1", Order(order_id="A1"), store).execute()
    assert first == ergon.Failed(
        ergon.ErrorInfo("Flaky", "charge failed", True, module=__name__, args=("charge failed",))
    )
    second = await ergon.Executor("o-1", Order(order_id="A1"), store).execute()
    assert second == first
    assert Counter(charge=1) == CALLS


async def test_retry_then_success_counts_attempts(store: ergon.Store) -> None:
    FAIL_PLAN["pack"] = 2
    outcome = await ergon.Executor("o-1", Order(order_id="A1"), store).execute()
    assert isinstance(outcome, ergon.Completed)
    pack = (await store.load_steps("o-1"))[1]
    assert (pack.state, pack.attempts) == ("completed", 3)


class Counted(ergon.Flow):
    @ergon.flow
    async def run(self) -> int:
        try:
            return await self.unreliable()
        except Fatal:
            return -1

    @ergon.step(retry=ergon.RetryPolicy.AGGRESSIVE)
    async def unreliable(self) -> int:
        maybe_fail("unreliable", Fatal)
        return 1


async def test_non_retryable_error_stops_at_once_and_flow_may_catch_it(store: ergon.Store) -> None:
    FAIL_PLAN["unreliable"] = 1
    outcome = await ergon.Executor("c", Counted(), store).execute()
    assert outcome == ergon.Completed(-1)
    assert CALLS["unreliable"] == 1
    (record,) = await store.load_steps("c")
    assert record.state == "failed" and record.error is not None
    assert (record.error.type, record.error.retryable) == ("Fatal", False)


class Caller(ergon.Flow):
    @ergon.flow
    async def run(self) -> str:
        try:
            await self.refuse()
        except SaysNo as exc:
            return f"caught {exc}"
        return "no error"

    @ergon.step(retry=ergon.RetryPolicy.AGGRESSIVE)
    async def refuse(self) -> None:
        maybe_fail("refuse", SaysNo)


async def test_is_retryable_false_is_honoured(store: ergon.Store) -> None:
    FAIL_PLAN["refuse"] = 10
    assert await ergon.Executor("c", Caller(), store).execute() == ergon.Completed(
        "caught refuse failed"
    )
    assert CALLS["refuse"] == 1


class Unbuildable(Exception):
    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")


class Replayer(ergon.Flow):
    @ergon.flow
    async def run(self) -> str:
        try:
            await self.boom()
        except ergon.StepError as exc:
            return f"step error {exc.type}: {exc.message} retryable={exc.retryable}"
        except Unbuildable:
            return "live"
        return "none"

    @ergon.step
    async def boom(self) -> None:
        CALLS["boom"] += 1
        raise Unbuildable(7, "no")

    @ergon.step
    async def after(self) -> None:
        return None


async def test_recorded_failure_replays_as_step_error_when_class_cannot_be_rebuilt(
    store: ergon.Store,
) -> None:
    live = await ergon.Executor("r", Replayer(), store).execute()
    assert live == ergon.Completed("live")
    # A new execution of a fresh id that replays the same history: copy the record over.
    (record,) = await store.load_steps("r")
    opened = await store.open_flow(_new("r2", Replayer.flow_name()), owner="test")
    assert opened.lease is not None
    await store.save_step("r2", record, epoch=opened.lease.epoch)
    await store.finish_flow("r2", _suspended(), epoch=opened.lease.epoch)
    replayed = await ergon.Executor("r2", Replayer(), store).execute()
    assert replayed == ergon.Completed("step error Unbuildable: 7: no retryable=True")
    assert CALLS["boom"] == 1


async def test_recorded_failure_replays_as_original_class_when_possible(store: ergon.Store) -> None:
    FAIL_PLAN["unreliable"] = 1
    await ergon.Executor("c", Counted(), store).execute()
    (record,) = await store.load_steps("c")
    opened = await store.open_flow(_new("c2", Counted.flow_name()), owner="test")
    assert opened.lease is not None
    await store.save_step("c2", record, epoch=opened.lease.epoch)
    await store.finish_flow("c2", _suspended(), epoch=opened.lease.epoch)
    assert await ergon.Executor("c2", Counted(), store).execute() == ergon.Completed(-1)
    assert CALLS["unreliable"] == 1


class NoCache(ergon.Flow):
    @ergon.flow
    async def run(self) -> str:
        try:
            await self.fragile()
        except Flaky:
            await ergon.sleep(0)
            raise
        return "ok"

    @ergon.step(cache_errors=False)
    async def fragile(self) -> None:
        maybe_fail("fragile")


async def test_cache_errors_false_does_not_checkpoint_the_failure(store: ergon.Store) -> None:
    FAIL_PLAN["fragile"] = 1
    outcome = await ergon.Executor("n", NoCache(), store).execute()
    assert isinstance(outcome, ergon.Failed)
    steps = await store.load_steps("n")
    assert [s.name for s in steps] == ["sleep"]


class Slow(ergon.Flow):
    @ergon.flow
    async def run(self) -> str:
        return await self.crawl()

    @ergon.step(timeout=0.05, retry=ergon.RetryPolicy(2, 0.0, 0.0, 1.0))
    async def crawl(self) -> str:
        CALLS["crawl"] += 1
        await asyncio.sleep(5)
        return "never"


async def test_timeout_bounds_each_attempt(store: ergon.Store) -> None:
    outcome = await ergon.Executor("s", Slow(), store).execute()
    assert isinstance(outcome, ergon.Failed)
    assert outcome.error.type == "TimeoutError"
    assert "crawl" in outcome.error.message and "0.05" in outcome.error.message
    assert CALLS["crawl"] == 2


class Keys(ergon.Flow):
    @ergon.flow
    async def run(self) -> list[str]:
        return [await self.key(), await self.key()]

    @ergon.step(retry=ergon.RetryPolicy(3, 0.0, 0.0, 1.0))
    async def key(self) -> str:
        info = ergon.current_step()
        CALLS[f"{info.idempotency_key}@{info.attempt}"] += 1
        maybe_fail(f"key{info.position}")
        return info.idempotency_key


async def test_idempotency_key_is_stable_across_retries_and_unique_per_position(
    store: ergon.Store,
) -> None:
    FAIL_PLAN["key0"] = 2
    outcome = await ergon.Executor("k", Keys(), store).execute()
    assert outcome == ergon.Completed(["k:0", "k:1"])
    assert CALLS["k:0@1"] == CALLS["k:0@2"] == CALLS["k:0@3"] == 1


def test_current_step_outside_a_step_is_a_clear_error() -> None:
    with pytest.raises(ergon.FlowContextError, match=r"inside an @ergon\.step"):
        ergon.current_step()


async def test_step_called_outside_a_flow_is_a_clear_error() -> None:
    with pytest.raises(ergon.FlowContextError, match="outside a running flow"):
        _ = Order(order_id="x").charge()  # raises at the call, before a coroutine exists


class Values(ergon.Flow):
    @ergon.flow
    async def run(self) -> dict[str, Any]:
        when = await self.when()
        ident = await self.ident()
        raw = await self.raw()
        return {"when": when.isoformat(), "uuid": str(ident), "raw": raw}

    @ergon.step
    async def when(self) -> dt.datetime:
        return dt.datetime(2026, 5, 17, 12, tzinfo=dt.UTC)

    @ergon.step
    async def ident(self) -> uuid.UUID:
        return uuid.UUID(int=7)

    @ergon.step
    async def raw(self):  # type: ignore[no-untyped-def]  # unannotated on purpose: plain JSON
        return {"a": [1, 2.5, None, True]}


async def test_results_round_trip_through_json_with_declared_types(store: ergon.Store) -> None:
    outcome = await ergon.Executor("v", Values(), store).execute()
    assert outcome == ergon.Completed(
        {
            "when": "2026-05-17T12:00:00+00:00",
            "uuid": str(uuid.UUID(int=7)),
            "raw": {"a": [1, 2.5, None, True]},
        }
    )


class Opaque:
    pass


class BadResult(ergon.Flow):
    @ergon.flow
    async def run(self) -> None:
        await self.make()

    @ergon.step
    async def make(self) -> Opaque:
        return Opaque()


class BadArgument(ergon.Flow):
    @ergon.flow
    async def run(self) -> None:
        await self.take(Opaque())

    @ergon.step
    async def take(self, thing: object) -> None:
        CALLS["take"] += 1


async def test_unserializable_result_fails_with_type_error_naming_step_and_type(
    store: ergon.Store,
) -> None:
    outcome = await ergon.Executor("b", BadResult(), store).execute()
    assert isinstance(outcome, ergon.Failed)
    assert outcome.error.type == "TypeError"
    assert "'make'" in outcome.error.message and "Opaque" in outcome.error.message
    assert await store.load_steps("b") == []


async def test_unserializable_argument_fails_before_the_step_runs(store: ergon.Store) -> None:
    outcome = await ergon.Executor("b", BadArgument(), store).execute()
    assert isinstance(outcome, ergon.Failed)
    assert outcome.error.type == "TypeError"
    assert "'take'" in outcome.error.message and "Opaque" in outcome.error.message
    assert CALLS["take"] == 0


class Nested(ergon.Flow):
    @ergon.flow
    async def run(self) -> int:
        return await self.outer()

    @ergon.step
    async def outer(self) -> int:
        return await self.inner() + 1

    @ergon.step
    async def inner(self) -> int:
        return 41


async def test_step_called_from_a_step_runs_as_a_plain_call(store: ergon.Store) -> None:
    assert await ergon.Executor("n", Nested(), store).execute() == ergon.Completed(42)
    assert [s.name for s in await store.load_steps("n")] == ["outer"]


async def test_uuid_flow_ids_are_stored_as_strings(store: ergon.Store) -> None:
    flow_id = uuid.UUID(int=99)
    await ergon.Executor(flow_id, Order(order_id="u"), store).execute()
    status = await store.get_flow(str(flow_id))
    assert status is not None and status.state == "completed"


async def test_reusing_an_id_for_another_flow_class_is_refused(store: ergon.Store) -> None:
    await ergon.Executor("same", Order(order_id="x"), store).execute()
    with pytest.raises(ergon.FlowMismatchError, match="recorded as flow"):
        await ergon.Executor("same", Keys(), store).execute()
    assert [s.name for s in await store.load_steps("same")] == ["charge", "pack"]


def _new(flow_id: str, name: str) -> Any:
    from ergon.core.records import NewFlow

    return NewFlow(id=flow_id, flow=name, input="{}", state="running")


def _suspended() -> Any:
    from ergon.core.records import FlowEnd

    return FlowEnd("suspended", waiting_for=ergon.SuspendReason("timer", None, None))
