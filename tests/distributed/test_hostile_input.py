"""Hostile input through Client, Scheduler and workers, on every store: ids and signal names no
store can hold, children of long parents, a flow scheduled under another flow's child id, NaN.
Each ends in a clear error (or is handled) and a normal flow completes afterwards: nothing is
retried forever, nothing is wedged. (Executor-level cases: tests/core/test_hostile_input.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest

import ergon
from ergon.core.identifiers import MAX_LENGTH
from tests.core.test_hostile_input import Plain

HOSTILE_IDS = {
    "empty": ("", "cannot be empty"),
    "256 characters": ("x" * 256, "has at most 255 characters"),
    "NUL": ("a\x00b", "cannot contain NUL"),
    "unpaired surrogate": ("a\udfffb", "cannot contain an unpaired surrogate"),
}
RETRIES = ergon.RetryPolicy(5, 0.01, 0.01, 1.0)


class Other(ergon.Flow):
    @ergon.flow
    async def run(self) -> int:
        return -1


class Fans(ergon.Flow):
    @ergon.flow
    async def run(self) -> list[int]:
        return list(await asyncio.gather(self.invoke(Plain(n=1)), self.invoke(Plain(n=2))))


class Deep(ergon.Flow):
    """A grandchild under a derived (hashed) child id."""

    @ergon.flow
    async def run(self) -> list[int]:
        result: list[int] = await self.invoke(Fans())
        return result


class Waits(ergon.Flow):
    case: str | None = None

    @ergon.flow(retry=RETRIES)
    async def run(self) -> Any:
        name = "go" if self.case is None else HOSTILE_IDS[self.case][0]
        return await ergon.wait_for_signal(name)


class Floats(ergon.Flow):
    @ergon.flow(retry=RETRIES)
    async def run(self) -> list[float]:
        return await self.measure()

    @ergon.step
    async def measure(self) -> list[float]:
        return [0.5, math.nan]


class Input(ergon.Flow):
    x: float

    @ergon.flow
    async def run(self) -> float:
        return self.x


class InvokesWithNaN(ergon.Flow):
    @ergon.flow
    async def run(self) -> float:
        result: float = await self.invoke(Input(x=math.inf))
        return result


FLOWS: list[type[ergon.Flow]] = [Plain, Other, Fans, Deep, Waits, Floats, Input, InvokesWithNaN]


@contextlib.asynccontextmanager
async def worker(store: ergon.Store) -> AsyncIterator[ergon.WorkerHandle]:
    handle = ergon.Worker(store, "w", flows=FLOWS, poll_interval=0.05, lease_seconds=5).start()
    try:
        yield handle
    finally:
        await handle.shutdown(timeout=5)


async def still_works(store: ergon.Store) -> None:
    """Nothing is wedged: a normal flow scheduled now completes under a worker."""
    client = ergon.Client(store)
    flow_id = await client.schedule(Plain(n=21))
    async with worker(store):
        assert await client.wait(flow_id, timeout=10) == ergon.Completed(42)


async def wait_until_suspended(client: ergon.Client, flow_id: str) -> None:
    for _ in range(500):
        status = await client.status(flow_id)
        if status.state == "suspended":
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"flow {flow_id} never suspended: {status}")


# --- identifiers ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", HOSTILE_IDS)
async def test_schedule_refuses_a_flow_id_no_store_can_hold(store: ergon.Store, case: str) -> None:
    flow_id, message = HOSTILE_IDS[case]
    with pytest.raises(ergon.IdentifierError, match=message):
        await ergon.Client(store).schedule(Plain(), flow_id=flow_id)
    with pytest.raises(ValueError, match=message):
        await ergon.Scheduler(store).with_version("1").schedule(Plain(), flow_id=flow_id)
    assert await store.list_flows() == []
    await still_works(store)


@pytest.mark.parametrize("case", HOSTILE_IDS)
async def test_signal_refuses_names_and_ids_no_store_can_hold(
    store: ergon.Store, case: str
) -> None:
    bad, message = HOSTILE_IDS[case]
    client = ergon.Client(store)
    flow_id = await client.schedule(Waits(), flow_id="waiting")
    with pytest.raises(ergon.IdentifierError, match=f"signal name {message}"):
        await client.signal(flow_id, bad, "payload")
    with pytest.raises(ergon.IdentifierError, match=f"signal id {message}"):
        await client.signal(flow_id, "go", "payload", signal_id=bad)
    with pytest.raises(ergon.IdentifierError, match=f"flow id {message}"):
        await client.signal(bad, "go", "payload")
    with pytest.raises(TypeError, match="NaN"):
        await client.signal(flow_id, "go", {"reading": math.nan})
    async with worker(store):
        await wait_until_suspended(client, flow_id)
        assert await client.signal(flow_id, "go", "payload", signal_id="s1")
        assert await client.wait(flow_id, timeout=10) == ergon.Completed("payload")
    await still_works(store)


async def test_lookups_refuse_nul_but_not_long_ids(store: ergon.Store) -> None:
    client = ergon.Client(store)
    for call in (client.status, client.cancel, client.steps, client.wait):
        with pytest.raises(ergon.IdentifierError, match="NUL"):
            await call("a\x00b")
        with pytest.raises(ergon.FlowNotFoundError):
            await call("l" * 1000)


@pytest.mark.parametrize("case", HOSTILE_IDS)
async def test_a_bad_signal_name_fails_the_flow_once_under_a_worker(
    store: ergon.Store, case: str
) -> None:
    client = ergon.Client(store)
    flow_id = await client.schedule(Waits(case=case))
    async with worker(store):
        outcome = await client.wait(flow_id, timeout=10)
    assert isinstance(outcome, ergon.Failed) and outcome.error.type == "IdentifierError"
    assert HOSTILE_IDS[case][1] in outcome.error.message
    assert (await client.status(flow_id)).attempts == 1  # not retried, despite its policy
    await still_works(store)


# --- children ------------------------------------------------------------------------------


async def test_children_of_a_255_character_parent_run_under_a_worker(store: ergon.Store) -> None:
    client = ergon.Client(store)
    parent = "p" * MAX_LENGTH
    await client.schedule(Deep(), flow_id=parent)
    async with worker(store):
        assert await client.wait(parent, timeout=15) == ergon.Completed([2, 4])
    (child,) = await store.list_flows(parent_id=parent)
    assert child.id == ergon.child_flow_id(parent, "0") and len(child.id) == MAX_LENGTH
    grandchildren = await store.list_flows(parent_id=child.id)
    assert len(grandchildren) == 2
    assert all(len(g.id) <= MAX_LENGTH and g.state == "completed" for g in grandchildren)
    await still_works(store)


@pytest.mark.parametrize("impostor", [Plain(n=100), Other()], ids=["same class", "other class"])
async def test_a_flow_scheduled_as_parent_slash_0_is_never_taken_for_its_child(
    store: ergon.Store, impostor: ergon.Flow
) -> None:
    client = ergon.Client(store)
    await client.schedule(impostor, flow_id="fans/0")
    async with worker(store):
        assert isinstance(await client.wait("fans/0", timeout=10), ergon.Completed)
        await client.schedule(Fans(), flow_id="fans")
        outcome = await client.wait("fans", timeout=10)
    assert isinstance(outcome, ergon.Failed) and outcome.error.type == "ChildFlowError"
    message = outcome.error.message
    assert "FlowMismatchError" in message and "'fans/0'" in message and "'fans'" in message
    assert impostor.flow_name() in message and Plain.flow_name() in message
    assert (await client.status("fans")).attempts == 1
    impostor_status = await client.status("fans/0")
    assert impostor_status.parent_id in (None, "")
    assert impostor_status.result in ("200", "-1")  # it ran as itself, untouched
    await still_works(store)


# --- non-finite floats ---------------------------------------------------------------------


async def test_nan_is_refused_at_schedule_and_fails_a_step_under_a_worker(
    store: ergon.Store,
) -> None:
    client = ergon.Client(store)
    for value in (math.nan, math.inf, -math.inf):
        with pytest.raises(ergon.FlowInputError, match="RFC 8259"):
            await client.schedule(Input(x=value))
    assert await store.list_flows() == []
    flow_id = await client.schedule(Floats())
    parent = await client.schedule(InvokesWithNaN())
    async with worker(store):
        outcome = await client.wait(flow_id, timeout=10)
        invoked = await client.wait(parent, timeout=10)
    assert isinstance(outcome, ergon.Failed) and outcome.error.type == "TypeError"
    assert "contains NaN at [1]" in outcome.error.message
    assert isinstance(invoked, ergon.Failed) and invoked.error.type == "FlowInputError"
    assert "contains Infinity at ['x']" in invoked.error.message
    assert await store.list_flows(parent_id=parent) == []
    await still_works(store)
