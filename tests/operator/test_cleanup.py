"""The orphan sweep against a real Postgres store: flows of FlowRuns that no longer exist are
cancelled, known ones untouched; with a retention, the ended records of deleted FlowRuns are
pruned. Unit level: a store and a set of known FlowRun uids, no cluster."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Collection
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import ergon
from ergon.core.records import FlowEnd, NewFlow
from ergon.storage.postgres import PostgresStore
from ergon_operator.cleanup import (
    KnownUids,
    Sweeper,
    SweepSettings,
    api_known_uids,
    origin_of,
    origin_prefix,
    parse_duration,
    uid_of,
)
from ergon_operator.settings import SettingsError
from tests.support.databases import fresh_schema, postgres_database


@pytest.fixture
async def store() -> AsyncIterator[ergon.Store]:
    async with PostgresStore(postgres_database(), schema=fresh_schema()) as opened:
        yield opened


def knowing(uids: Collection[str] | None) -> KnownUids:
    async def known() -> Collection[str] | None:
        return uids

    return known


async def record(
    store: ergon.Store, uid: str, *, namespace: str = "ns", origin: bool = True
) -> None:
    await ergon.Client(store).schedule_by_name(
        "tests:Flow",
        {},
        flow_id=uid,
        origin=origin_of(namespace, f"run-{uid}", uid) if origin else None,
    )


async def state(store: ergon.Store, uid: str) -> str | None:
    flow = await store.get_flow(uid)
    return None if flow is None else flow.state


async def test_orphans_are_cancelled_and_known_flows_untouched(store: ergon.Store) -> None:
    for uid in ("known", "orphan-pending", "orphan-running", "orphan-done"):
        await record(store, uid)
    await record(store, "foreign", origin=False)  # not the operator's: never touched
    claimed = await store.claim_flows(owner="w", version=None, lease_seconds=60, limit=10)
    running = {flow.id for flow, _ in claimed.flows}
    assert "orphan-running" in running
    for flow, lease in claimed.flows:  # back to pending except the running orphan
        if flow.id == "orphan-done":
            await store.finish_flow(flow.id, FlowEnd("completed"), epoch=lease.epoch)
        elif flow.id != "orphan-running":
            await store.finish_flow(flow.id, FlowEnd("suspended"), epoch=lease.epoch)

    sweeper = Sweeper(store=store, known_uids=knowing({"known"}))
    result = await sweeper.sweep()
    assert sorted(result.cancelled) == ["orphan-pending", "orphan-running"]
    assert result.pruned == []  # no retention: records stay
    assert await state(store, "orphan-pending") == "cancelled"
    assert await state(store, "orphan-running") == "cancelled"  # forced: the lease is fenced
    assert await state(store, "orphan-done") == "completed"
    assert await state(store, "known") == "suspended"
    assert await state(store, "foreign") == "suspended"
    assert (await sweeper.sweep()).cancelled == []  # nothing left to do


async def test_no_sweep_while_the_flowruns_are_not_known(store: ergon.Store) -> None:
    await record(store, "a")
    result = await Sweeper(store=store, known_uids=knowing(None)).sweep()
    assert result.skipped and result.cancelled == []
    assert await state(store, "a") == "pending"


async def test_a_namespaced_operator_sweeps_only_its_namespace(store: ergon.Store) -> None:
    await record(store, "mine", namespace="team-a")
    await record(store, "theirs", namespace="team-ab")  # a prefix of the name is not enough
    sweeper = Sweeper(store=store, known_uids=knowing(set()), namespace="team-a")
    assert (await sweeper.sweep()).cancelled == ["mine"]
    assert await state(store, "theirs") == "pending"


async def test_retention_prunes_ended_records_of_deleted_flowruns_only(store: ergon.Store) -> None:
    for uid in ("known", "gone", "gone-running"):
        await record(store, uid)
    client = ergon.Client(store)
    await client.cancel("known", force=True)
    await client.cancel("gone", force=True)
    origin = origin_of("ns", "r", "gone-running")
    await store.open_flow(NewFlow("gone-running", "tests:Flow", "{}", origin=origin), owner="w")
    later = datetime.now(UTC) + timedelta(hours=2)
    keep = SweepSettings(retention=timedelta(days=1))
    kept = await Sweeper(
        store=store, known_uids=knowing({"known"}), settings=keep, now=lambda: later
    ).sweep()
    assert kept.pruned == []  # ended two hours "ago", retention a day
    assert kept.cancelled == ["gone-running"]

    short = SweepSettings(retention=timedelta(hours=1))
    result = await Sweeper(
        store=store, known_uids=knowing({"known"}), settings=short, now=lambda: later
    ).sweep()
    assert sorted(result.pruned) == ["gone", "gone-running"]
    assert await store.get_flow("gone") is None
    assert await state(store, "known") == "cancelled"  # its FlowRun exists: the record stays


async def test_run_sweeps_at_once_and_keeps_going_after_a_failure(store: ergon.Store) -> None:
    await record(store, "a")
    calls = 0

    async def flaky() -> Collection[str] | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("API down")
        return set()

    sweeper = Sweeper(store=store, known_uids=flaky, settings=SweepSettings(interval=0.05))
    task = asyncio.create_task(sweeper.run())
    try:
        for _ in range(100):
            if await state(store, "a") == "cancelled":
                break
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
    assert await state(store, "a") == "cancelled" and calls >= 2


def test_origins_and_settings() -> None:
    origin = origin_of("ns", "my-run", "1234-abcd")
    assert origin == "flowrun:ns/my-run/1234-abcd"
    assert uid_of(origin) == "1234-abcd"
    assert uid_of("elsewhere:x/y/z") is None and uid_of(None) is None
    assert origin_prefix(None) == "flowrun:" and origin_prefix("ns") == "flowrun:ns/"
    assert parse_duration("7d") == timedelta(days=7)
    assert parse_duration(" 12h ") == timedelta(hours=12)
    assert parse_duration("30m") == timedelta(minutes=30)
    assert parse_duration("7") is None and parse_duration("1w") is None
    assert SweepSettings.from_env({}) == SweepSettings(interval=300.0, retention=None)
    assert SweepSettings.from_env({"ERGON_FLOW_RECORD_RETENTION": "off"}).retention is None
    env = {"ERGON_FLOW_RECORD_RETENTION": "7d", "ERGON_ORPHAN_SWEEP_SECONDS": "60"}
    assert SweepSettings.from_env(env) == SweepSettings(60.0, timedelta(days=7))
    with pytest.raises(SettingsError, match="ERGON_FLOW_RECORD_RETENTION"):
        SweepSettings.from_env({"ERGON_FLOW_RECORD_RETENTION": "a week"})
    with pytest.raises(SettingsError, match="ERGON_ORPHAN_SWEEP_SECONDS"):
        SweepSettings.from_env({"ERGON_ORPHAN_SWEEP_SECONDS": "0"})


class _Response:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = json.dumps(data).encode()


class _Custom:
    """The two list calls `api_known_uids` makes, answering in two pages."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def list_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> _Response:
        self.calls.append(args)
        return self._page(kwargs)

    def list_cluster_custom_object(self, *args: Any, **kwargs: Any) -> _Response:
        self.calls.append(args)
        return self._page(kwargs)

    def _page(self, kwargs: dict[str, Any]) -> _Response:
        if kwargs.get("_continue") == "next":
            return _Response({"items": [{"metadata": {"uid": "u3"}}], "metadata": {}})
        items = [{"metadata": {"uid": "u1"}}, {"metadata": {"uid": "u2"}}]
        return _Response({"items": items, "metadata": {"continue": "next"}})


class _Kube:
    def __init__(self) -> None:
        self.custom = _Custom()


async def test_the_known_uids_come_from_a_paginated_listing() -> None:
    kube = _Kube()
    assert await api_known_uids(kube, None)() == {"u1", "u2", "u3"}  # type: ignore[arg-type]
    assert kube.custom.calls[0] == ("ergon.dev", "v1alpha1", "flowruns")
    namespaced = _Kube()
    assert await api_known_uids(namespaced, "ns")() == {"u1", "u2", "u3"}  # type: ignore[arg-type]
    assert namespaced.custom.calls[0][2] == "ns"
