"""Hostile input at the door of an Executor, on every store: ids no store can hold, child ids
derived from long parents, impostor children, NaN and ±Infinity. Each ends in a clear error (or
is handled), and a normal flow completes on the same store afterwards.
(Client, Scheduler and Worker paths: tests/distributed/test_hostile_input.py.)"""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest
from pydantic import BaseModel

import ergon
from ergon.core import codec
from ergon.core.identifiers import MAX_LENGTH
from ergon.core.records import NewFlow, StepRecord, utcnow
from ergon.storage import rows

HOSTILE_IDS = {
    "empty": ("", "cannot be empty"),
    "256 characters": ("x" * 256, "at most 255 characters; this one has 256"),
    "NUL": ("a\x00b", "cannot contain NUL"),
    "unpaired surrogate": ("a\ud800b", "unpaired surrogate"),
}


class Plain(ergon.Flow):
    n: int = 1

    @ergon.flow
    async def run(self) -> int:
        return await self.double()

    @ergon.step
    async def double(self) -> int:
        return self.n * 2


async def still_works(store: ergon.Store) -> None:
    """Nothing is wedged: a normal flow completes on the same store."""
    outcome = await ergon.Executor(str(uuid.uuid4()), Plain(n=21), store).execute()
    assert outcome == ergon.Completed(42)


# --- identifiers ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", HOSTILE_IDS)
async def test_executor_refuses_a_flow_id_no_store_can_hold(store: ergon.Store, case: str) -> None:
    flow_id, message = HOSTILE_IDS[case]
    with pytest.raises(ergon.IdentifierError, match=message) as info:
        ergon.Executor(flow_id, Plain(), store)
    assert isinstance(info.value, ValueError) and len(str(info.value)) < 200
    with pytest.raises(ValueError, match=message):
        await ergon.run(Plain(), store=store, flow_id=flow_id)
    assert await store.list_flows() == []
    await still_works(store)


async def test_an_id_of_255_characters_is_accepted(store: ergon.Store) -> None:
    flow_id = "é" * MAX_LENGTH  # characters, not bytes
    assert await ergon.run(Plain(n=2), store=store, flow_id=flow_id) == 4
    assert (await ergon.Client(store).status(flow_id)).state == "completed"


def test_errors_show_at_most_64_characters_repr_escaped() -> None:
    with pytest.raises(ergon.IdentifierError) as info:
        ergon.Executor("\n" + "y" * 999, Plain(), ergon.MemoryStore())
    message = str(info.value)
    assert "'\\n" + "y" * 63 + "'... (1000 characters)" in message
    assert "y" * 64 not in message


class WaitsFor(ergon.Flow):
    case: str  # the name comes from HOSTILE_IDS: a surrogate cannot even be JSON input

    @ergon.flow
    async def run(self) -> Any:
        return await ergon.wait_for_signal(HOSTILE_IDS[self.case][0])


@pytest.mark.parametrize("case", ["empty", "256 characters", "NUL", "unpaired surrogate"])
async def test_a_bad_signal_name_fails_the_flow(store: ergon.Store, case: str) -> None:
    message = HOSTILE_IDS[case][1]
    outcome = await ergon.Executor("waits", WaitsFor(case=case), store).execute()
    assert isinstance(outcome, ergon.Failed)
    assert outcome.error.type == "IdentifierError" and message in outcome.error.message
    assert not outcome.error.retryable
    await still_works(store)


class InvokesWithId(ergon.Flow):
    child_id: str

    @ergon.flow
    async def run(self) -> int:
        return int(await self.invoke(Plain(n=5), flow_id=self.child_id))


async def test_a_bad_explicit_child_id_fails_the_parent(store: ergon.Store) -> None:
    outcome = await ergon.Executor("parent", InvokesWithId(child_id="c\x00"), store).execute()
    assert isinstance(outcome, ergon.Failed) and outcome.error.type == "IdentifierError"
    assert "child flow id cannot contain NUL" in outcome.error.message
    assert await ergon.Executor("ok", InvokesWithId(child_id="c"), store).execute() == (
        ergon.Completed(10)
    )


# --- children of long parents, impostors ---------------------------------------------------


class Fans(ergon.Flow):
    count: int = 2

    @ergon.flow
    async def run(self) -> list[int]:
        return [await self.invoke(Plain(n=i)) for i in range(self.count)]


def test_child_ids_stay_valid_and_stable_under_a_long_parent() -> None:
    short = ergon.child_flow_id("p", "3")
    assert short == "p/3"
    parent = "p" * MAX_LENGTH
    derived = ergon.child_flow_id(parent, "12.3")
    assert len(derived) == MAX_LENGTH and derived.endswith("/12.3")
    assert derived == ergon.child_flow_id(parent, "12.3")  # replay derives the same id
    assert derived != ergon.child_flow_id(parent[:-1] + "q", "12.3")
    grandchild = ergon.child_flow_id(derived, "0")
    assert len(grandchild) <= MAX_LENGTH and grandchild != derived


async def test_children_of_a_parent_with_a_255_character_id_run_inline(
    store: ergon.Store,
) -> None:
    parent = "p" * MAX_LENGTH
    assert await ergon.Executor(parent, Fans(), store).execute() == ergon.Completed([0, 2])
    children = await store.list_flows(parent_id=parent)
    assert sorted(c.id for c in children) == [ergon.child_flow_id(parent, k) for k in "01"]
    assert all(len(c.id) <= MAX_LENGTH and c.state == "completed" for c in children)
    # resuming derives the same ids: nothing runs again, nothing new is created
    assert await ergon.Executor(parent, Fans(), store).execute() == ergon.Completed([0, 2])
    assert len(await store.list_flows()) == 3


class Other(ergon.Flow):
    @ergon.flow
    async def run(self) -> int:
        return -1


@pytest.mark.parametrize("impostor", [Plain(n=100), Other()], ids=["same class", "other class"])
async def test_a_flow_scheduled_under_a_child_id_is_not_taken_for_the_child(
    store: ergon.Store, impostor: ergon.Flow
) -> None:
    assert await ergon.Executor("fans/0", impostor, store).execute() in (
        ergon.Completed(200),
        ergon.Completed(-1),
    )
    outcome = await ergon.Executor("fans", Fans(), store).execute()
    assert isinstance(outcome, ergon.Failed) and outcome.error.type == "ChildFlowError"
    message = outcome.error.message
    assert "FlowMismatchError" in message and "'fans/0'" in message and "'fans'" in message
    assert impostor.flow_name() in message and Plain.flow_name() in message
    assert not outcome.error.retryable
    # the impostor was left alone, and the failure is recorded (replay gives the same)
    impostor_status = await store.get_flow("fans/0")
    assert impostor_status is not None and impostor_status.parent_id in (None, "")
    again = await ergon.Executor("fans", Fans(), store).execute()
    assert again == outcome
    await still_works(store)


# --- non-finite floats ---------------------------------------------------------------------


class Measured(BaseModel):
    value: float | None = None


class TakesFloats(ergon.Flow):
    x: float = 0.0
    nested: Measured = Measured()
    extra: dict[str, Any] = {}

    @ergon.flow
    async def run(self) -> float:
        return self.x


@pytest.mark.parametrize(
    ("flow", "where"),
    [
        (TakesFloats(x=math.nan), "contains NaN at ['x']"),
        (TakesFloats(x=-math.inf), "contains -Infinity at ['x']"),
        (TakesFloats(nested=Measured(value=math.inf)), "contains Infinity at ['nested']['value']"),
        (TakesFloats(extra={"a": [1, math.nan]}), "contains NaN at ['extra']['a'][1]"),
    ],
)
async def test_non_finite_floats_in_flow_input_are_refused(
    store: ergon.Store, flow: ergon.Flow, where: str
) -> None:
    with pytest.raises(ergon.FlowInputError, match="RFC 8259") as info:
        ergon.Executor("floats", flow, store)
    assert where in str(info.value)
    with pytest.raises(ergon.FlowInputError):
        await ergon.run(flow, store=store)
    assert await store.list_flows() == []
    assert await ergon.run(TakesFloats(x=1.5), store=store) == 1.5
    await still_works(store)


async def test_input_no_store_can_hold_is_refused(store: ergon.Store) -> None:
    with pytest.raises(ergon.FlowInputError, match="cannot be serialized to JSON"):
        ergon.Executor("surrogate", TakesFloats(extra={"s": "\udc00"}), store)
    await still_works(store)


class InvokesWithNaN(ergon.Flow):
    @ergon.flow
    async def run(self) -> float:
        return float(await self.invoke(TakesFloats(x=math.nan)))


async def test_a_child_with_non_finite_input_fails_its_parent(store: ergon.Store) -> None:
    outcome = await ergon.Executor("parent", InvokesWithNaN(), store).execute()
    assert isinstance(outcome, ergon.Failed) and outcome.error.type == "FlowInputError"
    assert "contains NaN at ['x']" in outcome.error.message
    assert await store.list_flows(parent_id="parent") == []
    await still_works(store)


class ReturnsFloats(ergon.Flow):
    kind: str

    @ergon.flow
    async def run(self) -> Any:
        if self.kind == "flow":
            return {"mean": math.nan}
        return await self.compute()

    @ergon.step
    async def compute(self) -> Any:
        if self.kind == "model":
            return Measured(value=math.inf)
        return [1.0, -math.inf]


@pytest.mark.parametrize("kind", ["step", "model", "flow"])
async def test_a_non_finite_result_fails_the_flow(store: ergon.Store, kind: str) -> None:
    outcome = await ergon.Executor(kind, ReturnsFloats(kind=kind), store).execute()
    assert isinstance(outcome, ergon.Failed) and outcome.error.type == "TypeError"
    assert "Infinity" in outcome.error.message or "NaN" in outcome.error.message
    assert "RFC 8259" in outcome.error.message
    assert all(step.state != "completed" for step in await store.load_steps(kind))
    await still_works(store)


class Replays(ergon.Flow):
    @ergon.flow
    async def run(self) -> str:
        return repr(await self.legacy())

    @ergon.step
    async def legacy(self) -> float:
        raise AssertionError("recorded: never runs again")


async def test_results_recorded_with_nan_before_the_rule_still_replay(store: ergon.Store) -> None:
    opened = await store.open_flow(NewFlow("old", Replays.flow_name(), "{}"), owner="old")
    assert opened.lease is not None
    step = StepRecord("0", "legacy", "completed", result="NaN", completed_at=utcnow())
    await store.save_step("old", step, epoch=opened.lease.epoch)
    assert await ergon.Executor("old", Replays(), store).execute() == ergon.Completed("nan")


def test_codec_refuses_non_finite_floats_and_still_loads_them() -> None:
    assert codec.dump({"a": [1.5, None, "NaN"]}, what="v") == '{"a":[1.5,null,"NaN"]}'
    assert codec.dump(Measured(), what="v") == '{"value":null}'
    for value in (math.nan, [math.inf], {"k": (1, {2: -math.inf})}, Measured(value=math.nan)):
        with pytest.raises(TypeError, match="RFC 8259"):
            codec.dump(value, what="v")
    assert math.isnan(codec.load("NaN", float))
    assert codec.load("[Infinity, -Infinity]") == [math.inf, -math.inf]
    error = codec.error_from_exception(ValueError(math.nan))
    assert error.args == () and "NaN" not in (rows.error_to_json(error) or "")
