"""Parallel steps: asyncio.gather, spawned branches and ergon.dag."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

import ergon
from ergon.core.records import FlowEnd, NewFlow

CALLS: Counter[str] = Counter()
RUNNING: dict[str, int] = {"now": 0, "peak": 0}


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    RUNNING.update(now=0, peak=0)


class FanOut(ergon.Flow):
    n: int

    @ergon.flow
    async def run(self) -> list[int]:
        return list(await asyncio.gather(*(self.square(i) for i in range(self.n))))

    @ergon.step
    async def square(self, i: int) -> int:
        CALLS[f"square:{i}"] += 1
        RUNNING["now"] += 1
        RUNNING["peak"] = max(RUNNING["peak"], RUNNING["now"])
        await asyncio.sleep(0.02 * (self.n - i))  # later calls finish first
        RUNNING["now"] -= 1
        return i * i


async def test_gather_over_steps_is_concurrent_and_positions_follow_call_order(
    store: ergon.Store,
) -> None:
    outcome = await ergon.Executor("g", FanOut(n=5), store).execute()
    assert outcome == ergon.Completed([0, 1, 4, 9, 16])
    assert RUNNING["peak"] == 5
    steps = await store.load_steps("g")
    assert [(s.key, s.result) for s in steps] == [(str(i), str(i * i)) for i in range(5)]


class Chains(ergon.Flow):
    items: list[str]

    @ergon.flow
    async def run(self) -> list[str]:
        return list(await asyncio.gather(*(self.process(item) for item in self.items)))

    async def process(self, item: str) -> str:  # a plain coroutine: a branch of several steps
        fetched = await self.fetch(item)
        return await self.save(fetched)

    @ergon.step
    async def fetch(self, item: str) -> str:
        CALLS[f"fetch:{item}"] += 1
        await asyncio.sleep(0.03 if item == "slow" else 0.0)
        return item.upper()

    @ergon.step
    async def save(self, value: str) -> str:
        CALLS[f"save:{value}"] += 1
        return f"saved {value}"


async def test_branches_of_several_steps_get_keys_that_do_not_depend_on_timing(
    store: ergon.Store,
) -> None:
    outcome = await ergon.Executor("c", Chains(items=["slow", "fast"]), store).execute()
    assert outcome == ergon.Completed(["saved SLOW", "saved FAST"])
    keys = {(s.key, s.name, s.result) for s in await store.load_steps("c")}
    assert keys == {
        ("0.0", "fetch", '"SLOW"'),
        ("0.1", "save", '"saved SLOW"'),
        ("1.0", "fetch", '"FAST"'),
        ("1.1", "save", '"saved FAST"'),
    }


async def test_branches_replay_after_a_crash_in_the_middle_of_a_wave(store: ergon.Store) -> None:
    await ergon.Executor("c", Chains(items=["slow", "fast"]), store).execute()
    # Keep only what had finished when the "crash" happened: both fetches and the fast save.
    kept = [s for s in await store.load_steps("c") if s.key != "0.1"]
    opened = await store.open_flow(
        NewFlow("c2", Chains.flow_name(), Chains(items=["slow", "fast"]).model_dump_json()),
        owner="t",
    )
    assert opened.lease is not None
    for record in kept:
        await store.save_step("c2", record, epoch=opened.lease.epoch)
    await store.finish_flow("c2", FlowEnd("suspended"), epoch=opened.lease.epoch)
    CALLS.clear()
    outcome = await ergon.Executor("c2", Chains(items=["slow", "fast"]), store).execute()
    assert outcome == ergon.Completed(["saved SLOW", "saved FAST"])
    assert Counter({"save:SLOW": 1}) == CALLS


class Mixed(ergon.Flow):
    @ergon.flow
    async def run(self) -> str:
        # gather() infers Any from ergon.sleep's Coroutine[Any, Any, None]: name the type.
        done: tuple[str, None] = await asyncio.gather(self.work(), ergon.sleep(0.2))
        return done[0]

    @ergon.step
    async def work(self) -> str:
        CALLS["work"] += 1
        await asyncio.sleep(0.05)
        return "worked"


async def test_a_branch_suspending_lets_the_other_branch_checkpoint(store: ergon.Store) -> None:
    first = await ergon.Executor("m", Mixed(), store).execute()
    assert isinstance(first, ergon.Suspended) and first.reason.kind == "timer"
    assert [(s.name, s.state) for s in await store.load_steps("m")] == [
        ("work", "completed"),
        ("sleep", "waiting"),
    ]
    await asyncio.sleep(0.2)
    assert await ergon.Executor("m", Mixed(), store).execute() == ergon.Completed("worked")
    assert CALLS["work"] == 1


class TwoWaits(ergon.Flow):
    @ergon.flow
    async def run(self) -> list[object]:
        return list(await asyncio.gather(ergon.wait_for_signal("a"), ergon.wait_for_signal("b")))


async def test_parallel_waits_do_not_race_each_others_suspension(store: ergon.Store) -> None:
    client = ergon.Client(store)
    first = await ergon.Executor("w", TwoWaits(), store).execute()
    assert first == ergon.Suspended(ergon.SuspendReason("signal", "a", None))
    await client.signal("w", "b", 2)
    second = await ergon.Executor("w", TwoWaits(), store).execute()
    assert second == ergon.Suspended(ergon.SuspendReason("signal", "a", None))
    await client.signal("w", "a", 1)
    assert await ergon.Executor("w", TwoWaits(), store).execute() == ergon.Completed([1, 2])


class Graph(ergon.Flow):
    limit: int = 2

    @ergon.flow
    async def run(self) -> str:
        async with ergon.dag(limit=self.limit) as g:
            user = g.add(self.fetch, "user")
            orders = g.add(self.fetch, "orders")
            prefs = g.add(self.fetch, "prefs")
            summary = g.add(self.merge, user, orders, prefs)
        return summary.result()

    @ergon.step
    async def fetch(self, what: str) -> str:
        CALLS[f"fetch:{what}"] += 1
        RUNNING["now"] += 1
        RUNNING["peak"] = max(RUNNING["peak"], RUNNING["now"])
        await asyncio.sleep(0.03)
        RUNNING["now"] -= 1
        return what

    @ergon.step
    async def merge(self, *parts: str) -> str:
        CALLS["merge"] += 1
        return "+".join(parts)


async def test_dag_runs_independent_nodes_in_parallel_within_the_limit(store: ergon.Store) -> None:
    assert await ergon.Executor("d", Graph(limit=2), store).execute() == ergon.Completed(
        "user+orders+prefs"
    )
    assert RUNNING["peak"] == 2
    assert [s.name for s in await store.load_steps("d")] == ["fetch", "fetch", "fetch", "merge"]


async def test_dag_without_limit_runs_all_independent_nodes_at_once(store: ergon.Store) -> None:

    class Unlimited(Graph):
        @ergon.flow
        async def run(self) -> str:
            async with ergon.dag() as g:
                parts = [g.add(self.fetch, w) for w in ("a", "b", "c", "d")]
                total = g.add(self.merge, *parts)
            return total.result()

    assert await ergon.Executor("u", Unlimited(), store).execute() == ergon.Completed("a+b+c+d")
    assert RUNNING["peak"] == 4


async def test_dag_replays_completed_nodes_after_a_crash(store: ergon.Store) -> None:
    await ergon.Executor("d", Graph(limit=3), store).execute()
    kept = [s for s in await store.load_steps("d") if s.name == "fetch" and s.key != "1"]
    opened = await store.open_flow(
        NewFlow("d2", Graph.flow_name(), Graph(limit=3).model_dump_json()), owner="t"
    )
    assert opened.lease is not None
    for record in kept:
        await store.save_step("d2", record, epoch=opened.lease.epoch)
    await store.finish_flow("d2", FlowEnd("suspended"), epoch=opened.lease.epoch)
    CALLS.clear()
    assert await ergon.Executor("d2", Graph(limit=3), store).execute() == ergon.Completed(
        "user+orders+prefs"
    )
    assert Counter({"fetch:orders": 1, "merge": 1}) == CALLS


class BrokenGraph(ergon.Flow):
    @ergon.flow
    async def run(self) -> str:
        async with ergon.dag() as g:
            bad = g.add(self.explode)
            g.add(self.after, bad)
        return "unreachable"

    @ergon.step
    async def explode(self) -> str:
        raise ValueError("node failed")

    @ergon.step
    async def after(self, value: str) -> str:
        CALLS["after"] += 1
        return value


async def test_dag_failure_skips_dependents_and_fails_the_flow(store: ergon.Store) -> None:
    outcome = await ergon.Executor("b", BrokenGraph(), store).execute()
    assert isinstance(outcome, ergon.Failed)
    assert (outcome.error.type, outcome.error.message) == ("ValueError", "node failed")
    assert CALLS["after"] == 0


async def test_dag_nodes_must_be_steps(store: ergon.Store) -> None:

    class NotSteps(ergon.Flow):
        @ergon.flow
        async def run(self) -> None:
            async with ergon.dag() as g:
                g.add(self.plain)

        async def plain(self) -> None: ...

    outcome = await ergon.Executor("n", NotSteps(), store).execute()
    assert isinstance(outcome, ergon.Failed)
    assert "must be @ergon.step" in outcome.error.message
