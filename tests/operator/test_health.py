"""The probes: /healthz answers from the event loop whatever the store does; /readyz reports the
store with a bounded wait, a shared and cached check, and a slow check that is never cut short."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from typing import Any

from ergon_operator.health import HealthServer, StoreCheck
from tests.support.databases import fresh_schema, postgres_database
from tests.support.services import free_port


def get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read())


async def aget(port: int, path: str) -> tuple[int, dict[str, Any]]:
    return await asyncio.to_thread(get, port, path)


class FakeCheck:
    """A store check that answers after `delay` with `result`, counting its calls."""

    def __init__(self, result: tuple[bool, str], delay: float = 0.0) -> None:
        self.result = result
        self.delay = delay
        self.calls = 0

    async def __call__(self) -> tuple[bool, str]:
        self.calls += 1
        await asyncio.sleep(self.delay)
        return self.result


async def test_healthz_answers_while_the_store_check_hangs() -> None:
    port = free_port()
    check = FakeCheck((True, "ok"), delay=3600)
    server = HealthServer(port=port, store_check=check, leading=lambda: False)
    await server.start()
    try:
        started = time.monotonic()
        assert await aget(port, "/healthz") == (200, {"status": "ok", "leader": False})
        assert time.monotonic() - started < 1 and check.calls == 0
    finally:
        await server.stop()


async def test_readyz_reports_the_store_and_the_leader() -> None:
    port = free_port()
    down = FakeCheck((False, "connection refused"))
    server = HealthServer(port=port, store_check=down, leading=lambda: True)
    await server.start()
    try:
        status, body = await aget(port, "/readyz")
        assert status == 503 and body == {
            "ready": False,
            "store": "connection refused",
            "leader": True,
        }
        down.result = (True, "ok")
        assert await aget(port, "/readyz") == (200, {"ready": True, "store": "ok", "leader": True})
    finally:
        await server.stop()


async def test_unreachable_postgres_is_not_ready_quickly() -> None:
    nothing_listens = free_port()
    dsn = f"postgresql://ergon:s3cret@127.0.0.1:{nothing_listens}/postgres"
    check = StoreCheck(dsn=dsn, timeout=3)
    try:
        started = time.monotonic()
        ready, detail = await check()
        assert not ready and detail and time.monotonic() - started < 3.5
        assert "s3cret" not in detail
    finally:
        await check.close()


async def test_reachable_postgres_is_ready_and_cached() -> None:
    dsn = f"{postgres_database()}?schema={fresh_schema()}"
    check = StoreCheck(dsn=dsn, timeout=10, cache_seconds=60)
    try:
        assert await check() == (True, "ok")
        store = check._store
        assert await check() == (True, "ok") and check._store is store  # cached, same store
    finally:
        await check.close()


async def test_a_slow_check_is_shared_and_not_cut_short() -> None:
    """A probe gives up waiting after `timeout`, but the read goes on and serves the next one."""
    check = StoreCheck(dsn="memory://", timeout=0.2, cache_seconds=60)
    calls = 0

    async def slow() -> tuple[bool, str]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.5)
        return True, "ok"

    check._check = slow  # type: ignore[method-assign]
    first = await asyncio.gather(check(), check())
    assert [r[0] for r in first] == [False, False] and "no answer within 0.2s" in first[0][1]
    await asyncio.sleep(0.4)
    assert await check() == (True, "ok")
    assert calls == 1


async def test_a_check_that_hangs_for_good_is_restarted() -> None:
    check = StoreCheck(dsn="memory://", timeout=0.1, give_up_seconds=0.3)
    calls = 0

    async def hang() -> tuple[bool, str]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(3600)
        return True, "ok"

    check._check = hang  # type: ignore[method-assign]
    assert not (await check())[0]
    await asyncio.sleep(0.4)
    assert not (await check())[0]
    assert calls == 2
    await check.close()
