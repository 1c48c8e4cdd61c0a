"""Workers inside one process, on every store: claims, wake-ups, children, versions, cancel,
flow-level retries, bad flows. (Real worker processes are in tests/processes/test_workers.py.)"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator

import pytest

import ergon

CALLS: Counter[str] = Counter()
GATES: dict[str, asyncio.Event] = {}


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    GATES.clear()


class Three(ergon.Flow):
    n: int

    @ergon.flow
    async def run(self) -> int:
        a = await self.step_a()
        b = await self.step_b(a)
        return await self.step_c(b)

    @ergon.step
    async def step_a(self) -> int:
        CALLS[f"{self.n}:a"] += 1
        return self.n

    @ergon.step
    async def step_b(self, a: int) -> int:
        CALLS[f"{self.n}:b"] += 1
        await asyncio.sleep(0.001)
        return a * 2

    @ergon.step
    async def step_c(self, b: int) -> int:
        CALLS[f"{self.n}:c"] += 1
        return b + 1


class Waits(ergon.Flow):
    @ergon.flow
    async def run(self) -> str:
        await ergon.sleep(0.2)
        return str(await ergon.wait_for_signal("go"))


class Gated(ergon.Flow):
    gate: str

    @ergon.flow
    async def run(self) -> str:
        await self.before()
        await self.blocked()
        await self.after()
        return "done"

    @ergon.step
    async def before(self) -> None:
        CALLS["before"] += 1

    @ergon.step
    async def blocked(self) -> None:
        CALLS["blocked"] += 1
        await GATES.setdefault(self.gate, asyncio.Event()).wait()

    @ergon.step
    async def after(self) -> None:
        CALLS["after"] += 1


class Child(ergon.Flow):
    x: int

    @ergon.flow
    async def run(self) -> int:
        await ergon.sleep(0.05)
        return await self.double()

    @ergon.step
    async def double(self) -> int:
        CALLS[f"child:{self.x}"] += 1
        return self.x * 2


class Parent(ergon.Flow):
    @ergon.flow
    async def run(self) -> list[int]:
        results = await asyncio.gather(self.invoke(Child(x=1)), self.invoke(Child(x=2)))
        return list(results)


class Unstable(ergon.Flow):
    @ergon.flow(retry=ergon.RetryPolicy(3, 0.05, 0.05, 1.0))
    async def run(self) -> str:
        await self.once()
        CALLS["attempt"] += 1
        if CALLS["attempt"] < 3:
            raise ConnectionError(f"flaky attempt {CALLS['attempt']}")
        return "stable"

    @ergon.step
    async def once(self) -> None:
        CALLS["once"] += 1


class Doomed(ergon.Flow):
    @ergon.flow(retry=ergon.RetryPolicy(5, 0.01, 0.01, 1.0))
    async def run(self) -> str:
        CALLS["doomed"] += 1
        raise ValueError("never works")  # retryable, so attempts run out


class NotRetried(ergon.Flow):
    @ergon.flow(retry=ergon.RetryPolicy(5, 0.01, 0.01, 1.0))
    async def run(self) -> str:
        CALLS["not-retried"] += 1
        raise ergon.SignalPayloadError("not retryable")


FLOWS: list[type[ergon.Flow]] = [Three, Waits, Gated, Parent, Child, Unstable, Doomed, NotRetried]


@contextlib.asynccontextmanager
async def workers(
    store: ergon.Store,
    count: int = 1,
    *,
    concurrency: int = 16,
    version: str | None = None,
    poll_interval: float = 0.2,
) -> AsyncIterator[list[ergon.WorkerHandle]]:
    handles = [
        ergon.Worker(
            store,
            f"w{i}",
            flows=FLOWS,
            concurrency=concurrency,
            version=version,
            poll_interval=poll_interval,
        ).start()
        for i in range(count)
    ]
    try:
        yield handles
    finally:
        for handle in handles:
            await handle.shutdown(timeout=5)


async def test_workers_run_every_step_exactly_once(store: ergon.Store) -> None:
    client = ergon.Client(store)
    ids = [await client.schedule(Three(n=i)) for i in range(20)]
    async with workers(store, count=3, concurrency=4):
        outcomes = [await client.wait(i, timeout=20) for i in ids]
    assert outcomes == [ergon.Completed(i * 2 + 1) for i in range(20)]
    assert set(CALLS.values()) == {1} and len(CALLS) == 60


async def test_signals_and_timers_wake_suspended_flows(store: ergon.Store) -> None:
    client = ergon.Client(store)
    flow_id = await client.schedule(Waits())
    async with workers(store):
        for _ in range(100):
            status = await client.status(flow_id)
            if (
                status.state == "suspended"
                and status.waiting_for
                and status.waiting_for.kind == "signal"
            ):
                break
            await asyncio.sleep(0.02)
        assert status.waiting_for == ergon.SuspendReason("signal", "go", None)
        await client.signal(flow_id, "go", "now")
        assert await client.wait(flow_id, timeout=5) == ergon.Completed("now")


async def test_children_are_queued_and_wake_their_parent(store: ergon.Store) -> None:
    client = ergon.Client(store)
    flow_id = await client.schedule(Parent(), flow_id="parent")
    async with workers(store, count=2):
        assert await client.wait(flow_id, timeout=10) == ergon.Completed([2, 4])
    assert Counter({"child:1": 1, "child:2": 1}) == CALLS
    children = await store.list_flows(parent_id="parent")
    assert sorted(c.id for c in children) == ["parent/0", "parent/1"]
    assert all(c.state == "completed" for c in children)


async def test_versioned_workers_claim_their_version_and_unversioned_flows(
    store: ergon.Store,
) -> None:
    scheduler = ergon.Scheduler(store)
    v1 = await scheduler.with_version("1.0").schedule(Three(n=1))
    v2 = await scheduler.with_version("2.0").schedule(Three(n=2))
    plain = await scheduler.unversioned().schedule(Three(n=3))
    client = ergon.Client(store)
    async with workers(store, version="1.0"):
        assert await client.wait(v1, timeout=5) == ergon.Completed(3)
        assert await client.wait(plain, timeout=5) == ergon.Completed(7)
        await asyncio.sleep(0.3)
        assert (await client.status(v2)).state == "pending"
    async with workers(store):  # unversioned: still not v2
        await asyncio.sleep(0.3)
        assert (await client.status(v2)).state == "pending"
    async with workers(store, version="2.0"):
        assert await client.wait(v2, timeout=5) == ergon.Completed(5)


async def test_scheduler_reads_deploy_version(
    store: ergon.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEPLOY_VERSION", "3.1")
    flow_id = await ergon.Scheduler(store).from_env().schedule(Three(n=1), flow_id="env")
    assert (await ergon.Client(store).status(flow_id)).version == "3.1"
    again = await ergon.Scheduler(store).with_version("9").schedule(Three(n=5), flow_id="env")
    assert again == "env" and (await ergon.Client(store).status("env")).version == "3.1"


async def test_cancel_a_running_flow_stops_it_at_its_next_step(store: ergon.Store) -> None:
    client = ergon.Client(store)
    flow_id = await client.schedule(Gated(gate="g"))
    async with workers(store):
        for _ in range(200):
            if CALLS["blocked"]:
                break
            await asyncio.sleep(0.01)
        status = await client.cancel(flow_id)
        assert status.state == "running" and status.cancel_requested
        GATES["g"].set()
        assert await client.wait(flow_id, timeout=5) == ergon.Cancelled()
    assert CALLS["after"] == 0
    assert (await client.status(flow_id)).state == "cancelled"


async def test_cancel_a_suspended_flow_at_once(store: ergon.Store) -> None:
    client = ergon.Client(store)
    flow_id = await client.schedule(Waits())
    async with workers(store):
        for _ in range(100):
            if (await client.status(flow_id)).state == "suspended":
                break
            await asyncio.sleep(0.02)
        status = await client.cancel(flow_id)
        assert status.state == "cancelled"
        assert await client.wait(flow_id, timeout=1) == ergon.Cancelled()


async def test_flow_level_retry_reruns_the_flow_replaying_its_checkpoints(
    store: ergon.Store,
) -> None:
    client = ergon.Client(store)
    flow_id = await client.schedule(Unstable())
    async with workers(store):
        assert await client.wait(flow_id, timeout=10) == ergon.Completed("stable")
    assert CALLS["once"] == 1 and CALLS["attempt"] == 3
    assert (await client.status(flow_id)).attempts == 3


async def test_flow_level_retry_gives_up_after_its_attempts(store: ergon.Store) -> None:
    client = ergon.Client(store)
    doomed = await client.schedule(Doomed())
    final = await client.schedule(NotRetried())
    async with workers(store):
        outcome = await client.wait(doomed, timeout=10)
        assert isinstance(outcome, ergon.Failed) and outcome.error.message == "never works"
        assert isinstance(await client.wait(final, timeout=10), ergon.Failed)
    assert CALLS["doomed"] == 5 and CALLS["not-retried"] == 1
    assert (await client.status(doomed)).attempts == 5


async def test_unknown_flows_and_invalid_input_fail_the_flow_not_the_worker(
    store: ergon.Store,
) -> None:
    from ergon.core.records import NewFlow

    client = ergon.Client(store)
    await store.create_flow(NewFlow("unknown", "nowhere:Missing", "{}"))
    await store.create_flow(NewFlow("invalid", Three.flow_name(), '{"n": "not a number"}'))
    async with workers(store):
        unknown = await client.wait("unknown", timeout=5)
        invalid = await client.wait("invalid", timeout=5)
        after = await client.wait(await client.schedule(Three(n=4)), timeout=5)
    assert isinstance(unknown, ergon.Failed)
    assert unknown.error.type == ergon.FailureCode.INVALID_FLOW
    assert "nowhere:Missing" in unknown.error.message and "Worker(flows=" in unknown.error.message
    assert isinstance(invalid, ergon.Failed) and invalid.error.type == "InvalidInput"
    assert "n" in invalid.error.message and not invalid.error.retryable
    assert after == ergon.Completed(9)


async def test_graceful_shutdown_finishes_in_flight_flows_and_stops_claiming(
    store: ergon.Store,
) -> None:
    client = ergon.Client(store)
    running = await client.schedule(Gated(gate="s"))
    handle = ergon.Worker(store, "w", flows=FLOWS, poll_interval=0.1).start()
    for _ in range(200):
        if CALLS["blocked"]:
            break
        await asyncio.sleep(0.01)
    shutting = asyncio.create_task(handle.shutdown())
    await asyncio.sleep(0.1)
    queued = await client.schedule(Three(n=1))
    assert not shutting.done()
    GATES["s"].set()
    await asyncio.wait_for(shutting, 5)
    assert (await client.status(running)).state == "completed"
    assert (await client.status(queued)).state == "pending"


def test_worker_rejects_bad_configuration() -> None:
    store = ergon.MemoryStore()
    with pytest.raises(ergon.FlowDefinitionError):
        ergon.Worker(store, "w", flows=[int])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="concurrency"):
        ergon.Worker(store, "w", flows=[Three], concurrency=0)
