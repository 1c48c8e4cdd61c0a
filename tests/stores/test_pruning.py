"""Conformance rows for flow origins and pruning ended flows, on every backend; and the schema
migration that brought the origin column to databases created before it."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg

import ergon
from ergon.core.records import FlowEnd, NewFlow, StepRecord, utcnow
from ergon.core.store import Store
from ergon.storage import FlowState
from ergon.storage.postgres import PostgresStore
from ergon.storage.postgres import schema as pg_schema
from ergon.storage.sqlite import schema as sqlite_schema
from tests.support.databases import fresh_schema, postgres_database

GAP = 0.05  # seconds between "old" and "recent" ends, well above clock granularity


def new(flow_id: str, state: FlowState = "pending", **kw: Any) -> NewFlow:
    return NewFlow(id=flow_id, flow="tests:Flow", input='{"x":1}', state=state, **kw)


async def end(store: Store, flow_id: str, state: FlowState = "completed") -> None:
    opened = await store.open_flow(new(flow_id, "running"), owner="me")
    assert opened.lease is not None
    await store.finish_flow(flow_id, FlowEnd(state, result="1"), epoch=opened.lease.epoch)


# --- origin --------------------------------------------------------------------------------


async def test_origin_is_recorded_and_filters_by_prefix(store: Store) -> None:
    await store.create_flow(new("a", origin="flowrun:ns/a/u1"))
    await asyncio.sleep(0.002)
    await store.create_flow(new("b", origin="flowrun:other/b/u2"))
    await asyncio.sleep(0.002)
    await store.create_flow(new("c"))
    opened = await store.open_flow(new("d", "running", origin="flowrun:ns/d/u3"), owner="me")
    assert opened.flow.origin == "flowrun:ns/d/u3"
    flow = await store.get_flow("a")
    assert flow is not None and flow.origin == "flowrun:ns/a/u1"
    plain = await store.get_flow("c")
    assert plain is not None and plain.origin is None
    assert [f.id for f in await store.list_flows(origin_prefix="flowrun:ns/")] == ["d", "a"]
    assert [f.id for f in await store.list_flows(origin_prefix="flowrun:")] == ["d", "b", "a"]
    assert [f.id for f in await store.list_flows(origin_prefix="")] == ["d", "b", "a"]
    assert await store.list_flows(origin_prefix="flowrun:ns/%") == []  # no wildcards
    assert await store.list_flows(origin_prefix="flowrun:ns/_") == []
    pending = await store.list_flows(state="pending", origin_prefix="flowrun:ns/")
    assert [f.id for f in pending] == ["a"]


async def test_origin_survives_state_changes_and_a_second_create(store: Store) -> None:
    await store.create_flow(new("a", origin="flowrun:ns/a/u1"))
    again, created = await store.create_flow(new("a", origin="someone-else"))
    assert not created and again.origin == "flowrun:ns/a/u1"
    await end(store, "a", "cancelled")
    flow = await store.get_flow("a")
    assert flow is not None and flow.state == "cancelled" and flow.origin == "flowrun:ns/a/u1"


# --- prune ---------------------------------------------------------------------------------


async def test_prune_removes_only_ended_flows_old_enough_with_their_records(store: Store) -> None:
    for flow_id in ("done", "failed", "cancelled", "recent"):
        await store.create_flow(new(flow_id, origin=f"flowrun:ns/{flow_id}/u"))
    await store.create_flow(new("pending"))
    await store.open_flow(new("running", "running"), owner="me")
    await store.save_step("done", StepRecord(key="0", name="s", state="completed"), epoch=None)
    await store.send_signal("done", "go", "1", "sig-1")
    await store.send_signal("done", "later", "2")
    await end(store, "done")
    await end(store, "failed", "failed")
    await end(store, "cancelled", "cancelled")
    await asyncio.sleep(GAP)
    cutoff = utcnow()
    await asyncio.sleep(GAP)
    await end(store, "recent")

    would = await store.prune_flows(finished_before=cutoff, dry_run=True)
    assert sorted(would) == ["cancelled", "done", "failed"]
    assert await store.get_flow("done") is not None  # a dry run deletes nothing
    assert [s.key for s in await store.load_steps("done")] == ["0"]

    pruned = await store.prune_flows(finished_before=cutoff)
    assert sorted(pruned) == ["cancelled", "done", "failed"]
    for flow_id in pruned:
        assert await store.get_flow(flow_id) is None
    assert await store.load_steps("done") == []
    assert await store.next_signal("done", "go") is None
    assert await store.next_signal("done", "later") is None
    # The signal id's record went too: a new flow with the same id starts clean.
    assert await store.send_signal("done", "go", "1", "sig-1")
    remaining = {f.id for f in await store.list_flows()}
    assert remaining == {"recent", "pending", "running"}
    assert await store.prune_flows(finished_before=cutoff) == []
    everything = await store.prune_flows(finished_before=utcnow() + timedelta(hours=1))
    assert everything == ["recent"]  # never a flow that has not ended
    assert {f.id for f in await store.list_flows()} == {"pending", "running"}
    assert [f.id for f in await store.list_flows(state="completed")] == []


async def test_prune_by_origin_prefix_ids_and_limit_oldest_first(store: Store) -> None:
    for i in range(5):
        await store.create_flow(new(f"f{i}", origin=f"flowrun:ns/f{i}/u{i}"))
        await end(store, f"f{i}")
        await asyncio.sleep(0.002)
    await store.create_flow(new("plain"))
    await end(store, "plain")
    cutoff = utcnow() + timedelta(hours=1)
    by_id = await store.prune_flows(finished_before=cutoff, ids=["f3", "f1", "f1", "nope"])
    assert by_id == ["f1", "f3"]
    assert await store.prune_flows(finished_before=cutoff, ids=[]) == []
    assert await store.prune_flows(finished_before=cutoff, origin_prefix="flowrun:", limit=2) == [
        "f0",
        "f2",
    ]
    assert await store.prune_flows(finished_before=cutoff, origin_prefix="flowrun:x") == []
    assert await store.prune_flows(finished_before=cutoff, origin_prefix="flowrun:") == ["f4"]
    assert [f.id for f in await store.list_flows()] == ["plain"]


async def test_prune_keeps_a_child_while_its_parent_has_not_ended(store: Store) -> None:
    await store.create_flow(new("parent"))
    await store.create_flow(new("kid", parent_id="parent"))
    await store.create_flow(new("orphan", parent_id="gone"))
    await end(store, "kid")
    await end(store, "orphan")
    cutoff = utcnow() + timedelta(hours=1)
    assert await store.prune_flows(finished_before=cutoff) == ["orphan"]
    await end(store, "parent")
    assert sorted(await store.prune_flows(finished_before=cutoff)) == ["kid", "parent"]


# --- migrations ----------------------------------------------------------------------------


async def test_a_postgres_schema_from_before_origins_gains_the_column() -> None:
    dsn, schema = postgres_database(), fresh_schema()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(pg_schema.MIGRATIONS[0].format(s=f'"{schema}"'))
        await conn.execute(
            f'CREATE TABLE "{schema}".schema_migrations (version integer PRIMARY KEY, '
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        await conn.execute(f'INSERT INTO "{schema}".schema_migrations (version) VALUES (1)')
        await conn.execute(
            f'INSERT INTO "{schema}".flows (id, flow, input, state, created_at, updated_at) '
            "VALUES ('old', 't:F', '{}', 'completed', now(), now())"
        )
    finally:
        await conn.close()
    async with PostgresStore(dsn, schema=schema) as store:
        old = await store.get_flow("old")
        assert old is not None and old.origin is None
        await store.create_flow(new("young", origin="flowrun:ns/y/u"))
        assert [f.id for f in await store.list_flows(origin_prefix="flowrun:")] == ["young"]
        assert await store.prune_flows(finished_before=utcnow() + timedelta(hours=1)) == ["old"]


async def test_a_sqlite_database_from_before_origins_gains_the_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    try:
        conn.executescript(sqlite_schema.MIGRATIONS[0])
        conn.execute("CREATE TABLE ergon_schema (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO ergon_schema (version) VALUES (1)")
        conn.execute(
            "INSERT INTO flows (id, flow, input, state, created_at, updated_at) "
            "VALUES ('old', 't:F', '{}', 'completed', 1.0, 1.0)"
        )
        conn.commit()
    finally:
        conn.close()
    async with ergon.SqliteStore(path) as store:
        old = await store.get_flow("old")
        assert old is not None and old.origin is None
        await store.create_flow(new("young", origin="flowrun:ns/y/u"))
        assert [f.id for f in await store.list_flows(origin_prefix="flowrun:")] == ["young"]
        assert await store.prune_flows(finished_before=utcnow()) == ["old"]
