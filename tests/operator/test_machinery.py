"""The operator's machinery without a cluster: work queue, timer heap, concurrency limits, cache."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from ergon_operator.cache import Cache
from ergon_operator.kube import Kube
from ergon_operator.limits import Rank, Slots
from ergon_operator.timers import TimerHeap
from ergon_operator.watching import pod_watch
from ergon_operator.workqueue import Priority, WorkQueue

T0 = datetime(2026, 1, 1, tzinfo=UTC)


# --- work queue -------------------------------------------------------------------------------


async def test_queue_serves_by_priority_then_arrival_and_coalesces() -> None:
    seen: list[str] = []
    queue: WorkQueue[str] = WorkQueue(_record(seen), workers=1)
    for key in ("old-1", "old-2", "old-3"):
        queue.add(key, Priority.BACKGROUND)
    queue.add("new", Priority.URGENT)
    queue.add("old-2", Priority.URGENT)  # raised: served with the urgent ones
    queue.add("new", Priority.BACKGROUND)  # lowering does nothing
    queue.add("new", Priority.URGENT)  # coalesced: still once
    assert len(queue) == 4
    queue.start()
    await _until(lambda: len(seen) == 4)
    await queue.stop()
    assert seen == ["new", "old-2", "old-1", "old-3"]


async def test_a_key_poked_while_running_runs_once_more_never_twice_at_once() -> None:
    running: set[str] = set()
    overlaps: list[str] = []
    calls: list[str] = []
    release = asyncio.Event()

    async def handle(key: str) -> None:
        if key in running:
            overlaps.append(key)
        running.add(key)
        calls.append(key)
        if len(calls) == 1:
            await release.wait()
        running.discard(key)

    queue: WorkQueue[str] = WorkQueue(handle, workers=4)
    queue.start()
    queue.add("a")
    await _until(lambda: calls == ["a"])
    queue.add("a")
    queue.add("a")
    await asyncio.sleep(0.01)
    assert calls == ["a"]  # not started in parallel
    release.set()
    await _until(lambda: len(calls) == 2)
    await asyncio.sleep(0.02)
    await queue.stop()
    assert calls == ["a", "a"] and not overlaps


async def test_a_new_key_does_not_wait_behind_a_backlog() -> None:
    seen: list[str] = []

    async def slow(key: str) -> None:
        await asyncio.sleep(0.001)
        seen.append(key)

    queue: WorkQueue[str] = WorkQueue(slow, workers=2)
    for number in range(500):
        queue.add(f"old-{number}", Priority.BACKGROUND)
    queue.start()
    await _until(lambda: len(seen) >= 10)
    queue.add("new", Priority.URGENT)
    await _until(lambda: "new" in seen)
    await queue.stop()
    assert seen.index("new") < 20


async def test_a_failing_handler_does_not_lose_its_worker() -> None:
    seen: list[str] = []

    async def handle(key: str) -> None:
        seen.append(key)
        raise RuntimeError("boom")

    queue: WorkQueue[str] = WorkQueue(handle, workers=1)
    queue.start()
    queue.add("a")
    queue.add("b")
    await _until(lambda: len(seen) == 2)
    await queue.stop()


# --- timer heap -------------------------------------------------------------------------------


def test_timers_fire_in_order_keep_the_earliest_and_can_be_cancelled() -> None:
    now = [T0]
    fired: list[str] = []
    heap: TimerHeap[str] = TimerHeap(fired.append, clock=lambda: now[0])
    heap.schedule("b", T0 + timedelta(seconds=20))
    heap.schedule("a", T0 + timedelta(seconds=10))
    heap.schedule("a", T0 + timedelta(seconds=30))  # later than its current: ignored
    heap.schedule("c", T0 + timedelta(seconds=40))
    heap.schedule("c", T0 + timedelta(seconds=5))  # earlier: replaces
    heap.schedule("d", T0 + timedelta(seconds=15))
    heap.cancel("d")
    assert heap.fire_due() == pytest.approx(5.01)
    now[0] = T0 + timedelta(seconds=12)
    heap.fire_due()
    assert fired == ["c", "a"]
    now[0] = T0 + timedelta(seconds=100)
    assert heap.fire_due() == 60.0  # nothing left: sleep the cap
    assert fired == ["c", "a", "b"] and len(heap) == 0


async def test_one_task_sleeps_until_the_earliest_timer() -> None:
    fired: list[str] = []
    heap: TimerHeap[str] = TimerHeap(fired.append)
    task = asyncio.create_task(heap.run())
    now = datetime.now(UTC)
    heap.schedule("late", now + timedelta(seconds=30))
    await asyncio.sleep(0.01)
    heap.schedule("soon", now + timedelta(seconds=0.05))  # wakes the sleeping task
    await _until(lambda: fired == ["soon"], timeout=2.0)
    task.cancel()
    assert heap.due("late") is not None


# --- concurrency limits -----------------------------------------------------------------------


def _pod(name: str, uid: str, phase: str = "Running", namespace: str = "ns") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"pod-{name}",
            "resourceVersion": "1",
            "labels": {"ergon.dev/flowrun": uid},
            "ownerReferences": [{"uid": uid, "controller": True}],
        },
        "status": {"phase": phase},
    }


def _rank(name: str, priority: int = 0, age: int = 0, namespace: str = "ns") -> Rank:
    return Rank.of(priority=priority, created=T0 + timedelta(seconds=age), key=(namespace, name))


def test_unlimited_slots_are_always_free() -> None:
    slots = Slots(max_total=None, max_per_namespace=None, poke=lambda key: None)
    assert slots.may_start(uid="a", namespace="ns", rank=_rank("a"))


def test_two_runs_never_both_take_the_last_slot() -> None:
    slots = Slots(max_total=2, max_per_namespace=None, poke=lambda key: None)
    cache = Cache()
    cache.pod_listeners.append(slots.pod_changed)
    cache.put_pod(_pod("p1", "r1"))
    assert slots.may_start(uid="r2", namespace="ns", rank=_rank("r2"))
    slots.reserve(uid="r2", namespace="ns")  # creating: holds the slot before the pod shows
    assert not slots.may_start(uid="r3", namespace="ns", rank=_rank("r3"))
    cache.put_pod(_pod("p2", "r2", phase="Pending"))  # the reservation became the pod
    assert slots.running() == 2
    assert not slots.may_start(uid="r3", namespace="ns", rank=_rank("r3"))


def test_queued_runs_start_in_priority_then_creation_order_as_slots_free() -> None:
    poked: list[tuple[str, str]] = []
    slots = Slots(max_total=1, max_per_namespace=None, poke=poked.append)
    cache = Cache()
    cache.pod_listeners.append(slots.pod_changed)
    cache.put_pod(_pod("p0", "r0"))
    ranks = {
        "low-old": _rank("low-old", priority=0, age=1),
        "high": _rank("high", priority=5, age=9),
        "low-new": _rank("low-new", priority=0, age=5),
    }
    for uid, rank in ranks.items():
        assert not slots.may_start(uid=uid, namespace="ns", rank=rank)
        slots.wait(uid=uid, namespace="ns", rank=rank)
    assert [key[1] for key in slots.waiting()] == ["high", "low-old", "low-new"]
    ended = _pod("p0", "r0", phase="Succeeded")
    ended["metadata"]["resourceVersion"] = "2"
    cache.put_pod(ended)  # a slot frees: only the first in line is poked
    assert poked == [("ns", "high")]
    # A run further back, poked by something else, may not jump the line.
    assert not slots.may_start(uid="low-old", namespace="ns", rank=ranks["low-old"])
    assert slots.may_start(uid="high", namespace="ns", rank=ranks["high"])


def test_per_namespace_limits_count_each_namespace() -> None:
    slots = Slots(max_total=None, max_per_namespace=1, poke=lambda key: None)
    cache = Cache()
    cache.pod_listeners.append(slots.pod_changed)
    cache.put_pod(_pod("p1", "r1", namespace="a"))
    assert not slots.may_start(uid="r2", namespace="a", rank=_rank("r2", namespace="a"))
    assert slots.may_start(uid="r3", namespace="b", rank=_rank("r3", namespace="b"))


def test_a_released_reservation_gives_the_slot_back() -> None:
    poked: list[tuple[str, str]] = []
    slots = Slots(max_total=1, max_per_namespace=None, poke=poked.append)
    slots.reserve(uid="r1", namespace="ns")
    slots.wait(uid="r2", namespace="ns", rank=_rank("r2"))
    slots.release("r1")  # the creation was refused
    assert poked == [("ns", "r2")] and slots.running() == 0


# --- cache ------------------------------------------------------------------------------------


def test_cache_keeps_the_newest_version_and_indexes_by_owner() -> None:
    cache = Cache()
    newer = _pod("p1", "r1", phase="Succeeded")
    newer["metadata"]["resourceVersion"] = "5"
    assert cache.put_pod(newer)
    assert not cache.put_pod(_pod("p1", "r1"))  # an older event after a write's response
    assert [p["status"]["phase"] for p in cache.pods_of("r1")] == ["Succeeded"]
    foreign = _pod("x", "r1")
    del foreign["metadata"]["labels"]
    assert not cache.put_pod(foreign)  # not a worker pod
    cache.drop_pod(newer)
    assert cache.pods_of("r1") == []


def test_cache_indexes_flowruns_by_uid_and_signals_by_flowrun() -> None:
    cache = Cache()
    run = {"metadata": {"name": "r", "namespace": "ns", "uid": "u1", "resourceVersion": "1"}}
    cache.put_flowrun(run)
    assert cache.key_for_uid("u1") == ("ns", "r")
    signal = {
        "metadata": {"name": "s", "namespace": "ns", "uid": "s1", "resourceVersion": "1"},
        "spec": {"flowRun": "r", "name": "go"},
    }
    cache.put_signal(signal)
    assert [s["metadata"]["name"] for s in cache.signals_of(("ns", "r"))] == ["s"]
    cache.drop_signal(signal)
    cache.drop_flowrun(run)
    assert cache.signals_of(("ns", "r")) == [] and cache.key_for_uid("u1") is None


def test_cache_indexes_flowruns_by_worker_pool() -> None:
    cache = Cache()

    def run(name: str, pool: str | None, *, ns: str = "ns", uid: str = "", rv: str = "1") -> Any:
        spec = {"flow": "f"} if pool is None else {"flow": "f", "workerPool": pool}
        meta = {"name": name, "namespace": ns, "uid": uid or name, "resourceVersion": rv}
        return {"metadata": meta, "spec": spec}

    def names(pool: tuple[str, str]) -> list[str]:
        return [r["metadata"]["name"] for r in cache.flowruns_on(pool)]

    for body in (
        run("b", "p"),
        run("a", "p"),
        run("c", "q"),
        run("d", None),
        run("e", "p", ns="x"),
    ):
        cache.put_flowrun(body)
    assert names(("ns", "p")) == ["a", "b"]  # sorted by key, whatever the order they came in
    assert names(("ns", "q")) == ["c"] and names(("x", "p")) == ["e"]
    assert names(("ns", "missing")) == [] and names(("x", "q")) == []
    assert not cache.put_flowrun(run("a", "q", rv="0"))  # older: the index is unchanged too
    assert names(("ns", "p")) == ["a", "b"]
    assert cache.put_flowrun(run("a", "q", rv="2"))  # a newer version on another pool
    assert names(("ns", "p")) == ["b"] and names(("ns", "q")) == ["a", "c"]
    assert cache.put_flowrun(run("c", None, uid="c2"))  # re-created with the same name, no pool
    assert names(("ns", "q")) == ["a"]
    cache.drop_flowrun(run("b", "p", rv="3"))
    cache.drop_flowrun(run("a", "q", rv="3"))
    cache.drop_flowrun(run("e", "p", ns="x"))
    assert cache.flowruns_by_pool == {}  # emptied entries go, as the other indexes' do


# --- helpers ----------------------------------------------------------------------------------


def _record(seen: list[str]) -> Any:
    async def handle(key: str) -> None:
        seen.append(key)

    return handle


async def _until(condition: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


# --- the pod watch ----------------------------------------------------------------------------


class _Stream:
    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.lines = [json.dumps(e).encode() + b"\n\n" for e in events]

    def stream(self, amt: Any = None, decode_content: bool = False) -> Any:
        yield from self.lines

    def release_conn(self) -> None:
        pass

    def close(self) -> None:
        pass


class _WatchKube:
    """Two pages, then a watch that ends with 410 Gone, a relist, and a quiet watch."""

    def __init__(self) -> None:
        self.lists: list[str | None] = []
        self.watches: list[str] = []

    async def list_worker_pods(
        self, namespace: str | None, *, limit: int = 500, continue_: str | None = None
    ) -> dict[str, Any]:
        self.lists.append(continue_)
        if len(self.lists) == 1:
            return {"metadata": {"continue": "page-2"}, "items": [_pod("p1", "r1")]}
        if len(self.lists) == 2:
            return {"metadata": {"resourceVersion": "10"}, "items": [_pod("p2", "r2")]}
        return {"metadata": {"resourceVersion": "20"}, "items": [_pod("p3", "r3")]}

    def watch_worker_pods(
        self, namespace: str | None, *, resource_version: str, timeout_seconds: int
    ) -> _Stream:
        self.watches.append(resource_version)
        if len(self.watches) == 1:
            added = _pod("p3", "r3")
            added["metadata"]["resourceVersion"] = "11"
            bookmark = {"metadata": {"resourceVersion": "12"}}
            return _Stream(
                [
                    {"type": "ADDED", "object": added},
                    {"type": "BOOKMARK", "object": bookmark},
                    {"type": "ERROR", "object": {"code": 410, "message": "too old"}},
                ]
            )
        time.sleep(0.05)
        return _Stream([])


async def test_the_pod_watch_pages_watches_and_relists_on_gone() -> None:
    cache = Cache()
    kube = _WatchKube()
    watch = pod_watch(
        cast(Kube, kube),
        namespace=None,
        put=cache.put_pod,
        drop=cache.drop_pod,
        replace=cache.replace_pods,
    )
    task = asyncio.create_task(watch.run())
    await _until(lambda: len(kube.watches) >= 2)
    watch.stop()
    task.cancel()
    assert kube.lists == [None, "page-2", None]  # two pages, then one relist after 410
    assert kube.watches[:2] == ["10", "20"]  # from each listing's resourceVersion
    assert watch.synced.is_set()
    assert sorted(k[1] for k in cache.pods) == ["p3"]  # the relist replaced the picture
