"""Conformance rows for worker pools of one version, on every backend: exclusive claims (a
versioned worker that never takes unversioned flows) and the queue depth per version an
autoscaler reads (`AdminStore.queue_depth`, `Client.queue_depth`)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest

import ergon
from ergon.core.records import FlowEnd, NewFlow, utcnow
from ergon.core.store import Store
from ergon.storage import FlowState, QueueDepth

CLOSE = 0.01  # seconds: times read back from a store (SQLite keeps float seconds)


def new(flow_id: str, state: FlowState = "pending", **kw: Any) -> NewFlow:
    return NewFlow(id=flow_id, flow="tests:Flow", input='{"x":1}', state=state, **kw)


async def claim(store: Store, version: str | None, *, exclusive: bool, **kw: Any) -> list[str]:
    claimed = await store.claim_flows(
        owner="w",
        version=version,
        lease_seconds=kw.pop("lease_seconds", 30),
        limit=kw.pop("limit", 10),
        exclusive=exclusive,
    )
    return sorted(flow.id for flow, _ in claimed.flows)


async def suspend(
    store: Store,
    flow_id: str,
    *,
    version: str | None,
    reason: ergon.SuspendReason,
    wake_at: datetime | None = None,
) -> None:
    """Record a flow suspended on `reason` (a running flow ends its execution suspended)."""
    opened = await store.open_flow(new(flow_id, "running", version=version), owner="me")
    assert opened.lease is not None
    end = FlowEnd("suspended", waiting_for=reason, wake_at=wake_at)
    await store.finish_flow(flow_id, end, epoch=opened.lease.epoch)


async def end(store: Store, flow_id: str, state: FlowState, *, version: str | None) -> None:
    opened = await store.open_flow(new(flow_id, "running", version=version), owner="me")
    assert opened.lease is not None
    await store.finish_flow(flow_id, FlowEnd(state, result="1"), epoch=opened.lease.epoch)


def close_to(at: datetime | None, expected: datetime) -> bool:
    return at is not None and abs((at - expected).total_seconds()) < CLOSE


# --- exclusive claims ----------------------------------------------------------------------


async def test_exclusive_claims_take_only_the_workers_own_version(store: Store) -> None:
    for flow_id, version in (("plain", None), ("plain2", None), ("v1", "1.0"), ("v2", "2.0")):
        await store.create_flow(new(flow_id, version=version))
    assert await claim(store, "1.0", exclusive=True) == ["v1"]
    assert await claim(store, "3.0", exclusive=True) == []
    # A non-exclusive worker of another version still takes unversioned flows, never v2.
    assert await claim(store, "3.0", exclusive=False, limit=1) in (["plain"], ["plain2"])
    # Without a version `exclusive` changes nothing: unversioned flows only.
    assert len(await claim(store, None, exclusive=True)) == 1
    assert await claim(store, "2.0", exclusive=True) == ["v2"]
    flow = await store.get_flow("v2")
    assert flow is not None and flow.state == "running" and flow.epoch == 1


async def test_exclusive_claims_report_only_their_versions_next_wake(store: Store) -> None:
    soon, later = utcnow() + timedelta(seconds=60), utcnow() + timedelta(seconds=120)
    await suspend(
        store, "plain", version=None, reason=ergon.SuspendReason("timer", None, soon), wake_at=soon
    )
    await suspend(
        store, "v1", version="1.0", reason=ergon.SuspendReason("timer", None, later), wake_at=later
    )
    mixed = await store.claim_flows(owner="w", version="1.0", lease_seconds=30, limit=10)
    assert mixed.flows == [] and close_to(mixed.next_wake_at, soon)
    only = await store.claim_flows(
        owner="w", version="1.0", lease_seconds=30, limit=10, exclusive=True
    )
    assert only.flows == [] and close_to(only.next_wake_at, later)


# --- queue depth ---------------------------------------------------------------------------


async def test_queue_depth_counts_a_versions_flows_by_what_they_wait_for(store: Store) -> None:
    v = "1.0"
    # Running under a live lease, then under a lease that runs out (claimed one at a time).
    await store.create_flow(new("leased", version=v))
    assert await claim(store, v, exclusive=True) == ["leased"]
    await store.create_flow(new("expiring", version=v))
    assert await claim(store, v, exclusive=True, lease_seconds=0.1) == ["expiring"]
    # Running without a lease: owned by an executor outside a worker.
    await store.open_flow(new("opened", "running", version=v), owner="in-process")
    past, timer = utcnow() - timedelta(seconds=1), utcnow() + timedelta(seconds=10)
    await suspend(
        store, "due", version=v, reason=ergon.SuspendReason("timer", None, past), wake_at=past
    )
    await suspend(
        store, "timer", version=v, reason=ergon.SuspendReason("timer", None, timer), wake_at=timer
    )
    await suspend(store, "signal", version=v, reason=ergon.SuspendReason("signal", "go"))
    await suspend(store, "child", version=v, reason=ergon.SuspendReason("child", "timer/0"))
    await end(store, "completed", "completed", version=v)
    await end(store, "failed", "failed", version=v)
    await store.create_flow(new("cancelled", version=v))
    await store.request_cancel("cancelled")
    await store.create_flow(new("pending", version=v))
    # Other versions' flows are not counted with it.
    await store.create_flow(new("plain"))
    await suspend(store, "plain-signal", version=None, reason=ergon.SuspendReason("signal", "go"))
    await store.create_flow(new("v2", version="2.0"))
    assert await claim(store, "2.0", exclusive=True) == ["v2"]
    await asyncio.sleep(0.15)  # the 0.1 s lease of "expiring" has run out

    depth = await store.queue_depth(version=v)
    assert (depth.runnable, depth.running, depth.waiting) == (3, 2, 3), depth
    assert depth.unfinished == 8
    assert close_to(depth.next_wake_at, timer), (depth.next_wake_at, timer)

    plain = await store.queue_depth(version=None)
    assert plain == QueueDepth(runnable=1, running=0, waiting=1, next_wake_at=None)
    v2 = await store.queue_depth(version="2.0")
    assert (v2.runnable, v2.running, v2.waiting) == (0, 1, 0)
    leased = await store.get_flow("v2")
    assert leased is not None and leased.lease_expires_at is not None
    assert close_to(v2.next_wake_at, leased.lease_expires_at)  # the lease running out
    assert await store.queue_depth(version="9.9") == QueueDepth(0, 0, 0, None)

    # What it calls runnable is what an exclusive worker of the version claims now.
    assert await claim(store, v, exclusive=True) == ["due", "expiring", "pending"]
    after = await store.queue_depth(version=v)
    assert (after.runnable, after.running, after.waiting) == (0, 5, 3)


async def test_a_drained_version_has_no_unfinished_flows(store: Store) -> None:
    await store.create_flow(new("a", version="old"))
    assert (await store.queue_depth(version="old")).unfinished == 1
    ((flow, lease),) = (
        await store.claim_flows(owner="w", version="old", lease_seconds=30, limit=1, exclusive=True)
    ).flows
    assert (await store.queue_depth(version="old")).running == 1
    await store.finish_flow(flow.id, FlowEnd("completed", result="1"), epoch=lease.epoch)
    assert await ergon.Client(store).queue_depth(version="old") == QueueDepth(0, 0, 0, None)


def test_queue_depth_is_exported_and_frozen() -> None:
    depth = ergon.QueueDepth(runnable=1, running=2, waiting=3)
    assert depth.unfinished == 6 and depth.next_wake_at is None
    with pytest.raises(AttributeError):
        depth.runnable = 5  # type: ignore[misc]
