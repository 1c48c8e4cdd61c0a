"""What the server-backed stores (Postgres, Redis) make observable beyond the conformance suite:
clear errors for unreachable servers, migrations under concurrent starters, notifications across
store instances (other processes), no expiring keys, and recovery from a server restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator

import asyncpg
import pytest
import redis.asyncio as aioredis

import ergon
from ergon.core.records import FlowEnd, NewFlow, StepRecord
from ergon.core.store import Store
from ergon.storage.postgres import PostgresStore
from ergon.storage.postgres.schema import MIGRATIONS
from ergon.storage.redis import RedisStore
from tests.support.databases import drop_prefix, fresh_prefix, fresh_schema, postgres_database
from tests.support.services import Server, redis_url, start_postgres, start_redis

SERVERS = ["postgres", "redis"]


@contextlib.asynccontextmanager
async def two_stores(kind: str) -> AsyncIterator[tuple[Store, Store]]:
    """Two store instances over the same data, as two processes would have."""
    stores: list[Store]
    if kind == "postgres":
        dsn, schema = postgres_database(), fresh_schema()
        stores = [PostgresStore(dsn, schema=schema), PostgresStore(dsn, schema=schema)]
    else:
        prefix = fresh_prefix()
        stores = [RedisStore(redis_url(), prefix=prefix), RedisStore(redis_url(), prefix=prefix)]
    try:
        yield stores[0], stores[1]
    finally:
        for store in stores:
            await store.close()
        if kind == "redis":
            await drop_prefix(redis_url(), prefix)


async def changes(notifier: ergon.core.store.Notifier, since: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while notifier.mark() == since and time.monotonic() < deadline:
        await notifier.wait(since, deadline - time.monotonic())
    return notifier.mark() != since


# --- unreachable servers -------------------------------------------------------------------


@pytest.mark.parametrize(
    "store",
    [
        lambda: PostgresStore("postgresql://postgres@127.0.0.1:1/x"),
        lambda: RedisStore("redis://127.0.0.1:1/0"),
    ],
    ids=SERVERS,
)
async def test_an_unreachable_server_is_a_quick_clear_error(store: Callable[[], Store]) -> None:
    opened = store()
    started = time.monotonic()
    with pytest.raises(ergon.StoreError) as caught:
        await opened.get_flow("x")
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert "127.0.0.1:1" in message and "cannot reach" in message and "running" in message
    with pytest.raises(ergon.StoreError, match=r"127\.0\.0\.1:1"):
        await opened.notifier()
    with pytest.raises(ergon.StoreError, match=r"127\.0\.0\.1:1"):
        await ergon.Executor("f", _Flow(), opened).execute()
    await opened.close()


class _Flow(ergon.Flow, name="tests.stores.servers.Flow"):
    @ergon.flow
    async def run(self) -> int:
        return await self.one()

    @ergon.step
    async def one(self) -> int:
        return 1


# --- URLs ----------------------------------------------------------------------------------


def test_urls_choose_the_schema_and_the_prefix() -> None:
    store = ergon.open_store("postgresql://u:secret@db.example:6543/orders?schema=shop")
    assert isinstance(store, PostgresStore) and store.schema == "shop"
    assert "db.example:6543" in repr(store) and "secret" not in repr(store)
    default_schema = ergon.open_store("postgres://db/x")
    assert isinstance(default_schema, PostgresStore) and default_schema.schema == "ergon"
    redis_store = ergon.open_store("redis://:secret@cache:6380/2?prefix=shop:")
    assert isinstance(redis_store, RedisStore) and redis_store.prefix == "shop:"
    assert "cache:6380 (db 2)" in repr(redis_store) and "secret" not in repr(redis_store)
    default_prefix = ergon.open_store("redis://cache")
    assert isinstance(default_prefix, RedisStore) and default_prefix.prefix == "ergon:"
    with pytest.raises(ergon.StoreUrlError, match="plain identifier"):
        ergon.open_store("postgresql://db/x?schema=drop;table")


# --- Postgres schema -----------------------------------------------------------------------


async def test_concurrent_starters_migrate_the_schema_exactly_once() -> None:
    dsn, schema = postgres_database(), fresh_schema()
    stores = [PostgresStore(dsn, schema=schema) for _ in range(5)]
    try:
        assert await asyncio.gather(*(s.get_flow("x") for s in stores)) == [None] * 5
        await stores[0].create_flow(NewFlow("a", "t:F", "{}"))
        assert all(await asyncio.gather(*(s.get_flow("a") for s in stores)))
    finally:
        for store in stores:
            await store.close()
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(f'SELECT version FROM "{schema}".schema_migrations')
        assert sorted(r["version"] for r in rows) == list(range(1, len(MIGRATIONS) + 1))
        kinds = await conn.fetch(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = $1 AND table_name = 'flows'",
            schema,
        )
    finally:
        await conn.close()
    types = {r["column_name"]: r["data_type"] for r in kinds}
    assert types["created_at"] == types["wake_at"] == "timestamp with time zone"
    assert types["input"] == types["result"] == "text"


async def test_a_schema_newer_than_this_ergon_is_refused() -> None:
    dsn, schema = postgres_database(), fresh_schema()
    async with PostgresStore(dsn, schema=schema) as store:
        await store.get_flow("x")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'INSERT INTO "{schema}".schema_migrations (version) VALUES (999)')
    finally:
        await conn.close()
    async with PostgresStore(dsn, schema=schema) as store:
        with pytest.raises(ergon.StoreError, match="newer than this ergon"):
            await store.get_flow("x")


# --- Redis layout ----------------------------------------------------------------------------


async def test_redis_keys_never_expire_and_a_newer_layout_is_refused() -> None:
    prefix = fresh_prefix()
    client = aioredis.Redis.from_url(redis_url())
    try:
        async with RedisStore(redis_url(), prefix=prefix) as store:
            await store.send_signal("f", "go", "1", signal_id="s1")
            opened = await store.open_flow(NewFlow("f", "t:F", "{}", "running"), owner="me")
            assert opened.lease is not None
            await store.save_step("f", StepRecord("0", "s", "completed"), epoch=opened.lease.epoch)
            await store.create_flow(NewFlow("f/1", "t:C", "{}", parent_id="f"))
            await store.finish_flow("f", FlowEnd("suspended"), epoch=opened.lease.epoch)
            await store.claim_flows(owner="w", version=None, lease_seconds=30, limit=10)
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        assert len(keys) >= 8
        assert {await client.ttl(key) for key in keys} == {-1}
        await client.set(f"{prefix}layout", 99)
        async with RedisStore(redis_url(), prefix=prefix) as store:
            with pytest.raises(ergon.StoreError, match="newer than this ergon"):
                await store.get_flow("f")
    finally:
        await client.aclose()
        await drop_prefix(redis_url(), prefix)


# --- notifications across instances ----------------------------------------------------------


@pytest.mark.parametrize("kind", SERVERS)
async def test_another_instances_changes_reach_this_notifier(kind: str) -> None:
    async with two_stores(kind) as (here, there):
        notifier = await here.notifier()
        await asyncio.sleep(0.05)  # let the subscription settle on the server
        for change in (
            there.create_flow(NewFlow("n", "t:F", "{}")),
            there.send_signal("n", "go", "1"),
            there.request_cancel("n"),
        ):
            mark = notifier.mark()
            await change
            assert await changes(notifier, mark, 5.0), change


@pytest.mark.parametrize("kind", SERVERS)
async def test_a_flow_waited_for_through_one_instance_ends_through_another(kind: str) -> None:
    async with two_stores(kind) as (waiter, runner):
        await ergon.Client(waiter).schedule(_Flow(), flow_id="w")
        waiting = asyncio.create_task(ergon.Client(waiter).wait("w", timeout=10))
        await asyncio.sleep(0.1)
        ((_, lease),) = (
            await runner.claim_flows(owner="r", version=None, lease_seconds=30, limit=1)
        ).flows
        started = time.monotonic()
        assert await ergon.Executor("w", _Flow(), runner, lease=lease).execute() == (
            ergon.Completed(1)
        )
        assert await waiting == ergon.Completed(1)
        assert time.monotonic() - started < 0.9  # woken by the notification, not the 1 s poll


# --- server restarts (throwaway servers) -----------------------------------------------------


@contextlib.contextmanager
def throwaway(kind: str) -> Iterator[Server]:
    server = start_postgres() if kind == "postgres" else start_redis()
    try:
        yield server
    finally:
        server.destroy()


def restart(server: Server, kind: str) -> None:
    stop(server, kind)
    server.restart()


def stop(server: Server, kind: str) -> None:
    if kind == "postgres":
        # Fast shutdown (SIGINT to the postmaster, which runs under runuser): the smart
        # shutdown of SIGTERM would wait for our connections to end.
        postmaster = int((server.directory / "data" / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGINT)
        server.process.wait(timeout=30)
    server.stop()


async def ready(server: Server, kind: str) -> None:
    """Wait until the restarted server answers queries (its port opens a little earlier)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            if kind == "postgres":
                conn = await asyncpg.connect(server.url, timeout=2)
                await conn.close()
            else:
                client = aioredis.Redis.from_url(server.url)
                try:
                    await client.ping()
                finally:
                    await client.aclose()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def store_on(server: Server, kind: str) -> Store:
    if kind == "postgres":
        return PostgresStore(server.url, schema="restart")
    return RedisStore(server.url, prefix="restart:")


@pytest.mark.integration
@pytest.mark.parametrize("kind", SERVERS)
async def test_the_store_carries_on_after_a_server_restart(kind: str) -> None:
    with throwaway(kind) as server:
        store, other = store_on(server, kind), store_on(server, kind)
        try:
            notifier = await store.notifier()
            first = await store.open_flow(NewFlow("r", "t:F", "{}", "running"), owner="me")
            assert first.lease is not None
            await store.save_step("r", StepRecord("0", "s", "completed"), epoch=first.lease.epoch)
            await other.get_flow("r")

            mark = notifier.mark()
            await asyncio.to_thread(restart, server, kind)
            await ready(server, kind)
            # Every call works again at once: dead pooled connections are replaced.
            await store.save_step("r", StepRecord("1", "s", "completed"), epoch=first.lease.epoch)
            assert [s.key for s in await store.load_steps("r")] == ["0", "1"]
            created, was_new = await other.create_flow(NewFlow("after", "t:F", "{}"))
            assert was_new and created.state == "pending"
            # The notification channel came back on its own and said so.
            assert await changes(notifier, mark, 10.0)
            mark = notifier.mark()
            await other.send_signal("after", "go", "1")
            assert await changes(notifier, mark, 5.0)

            await asyncio.to_thread(stop, server, kind)
            started = time.monotonic()
            with pytest.raises(ergon.StoreError, match="cannot reach"):
                await store.get_flow("r")
            assert time.monotonic() - started < 5
            # A checkpoint waits for the server to come back (outage_grace) instead of failing.
            pending = asyncio.create_task(
                store.save_step("r", StepRecord("2", "s", "completed"), epoch=first.lease.epoch)
            )
            await asyncio.sleep(0.3)
            assert not pending.done()
            await asyncio.to_thread(server.restart)
            await pending
            await ready(server, kind)
            flow = await store.get_flow("r")
            assert flow is not None and flow.state == "running"
            assert [s.key for s in await store.load_steps("r")] == ["0", "1", "2"]
        finally:
            await store.close()
            await other.close()
