"""The operator's probes: `/healthz` (liveness) and `/readyz` (readiness), on ERGON_HEALTH_PORT.

Liveness must never depend on anything outside the process: a liveness probe that fails while
Postgres is down restarts the operator in a loop, and every restart replays a reconcile of every
FlowRun. So `/healthz` is answered by a handler running on the operator's own event loop — that
it answers at all (within the kubelet's probe timeout) proves the loop is alive — and touches
nothing else.

Readiness reports the store: `/readyz` runs one cheap store read (with a store per namespace,
`ERGON_TENANCY=namespace`: one round trip to the database, which holds no flows of its own),
bounded by a short timeout,
shares it between concurrent probes and caches the result for a few seconds. A standby (waiting
for the leader Lease) is ready when the store is: being a standby is not a reason to be unready,
and a rolling update (maxUnavailable 0) needs the new standby ready to proceed. Nothing routes
traffic to the operator, so readiness is only a signal for rollouts and humans.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

import ergon
from ergon_operator.tenancy import TenantDatabase

log = logging.getLogger("ergon.operator.health")

STORE_TIMEOUT = 3.0
CACHE_SECONDS = 5.0
GIVE_UP_SECONDS = 30.0


class StoreCheck:
    """Whether the store answers a read; a probe waits at most `timeout` for the answer, which is
    cached for `cache_seconds`.

    The read runs as a task of its own that a probe's timeout never cancels: a slow first
    connection (pool opened, schema checked) still completes and serves the next probe, instead
    of being cut short at every probe and never finishing; concurrent probes share it. The store
    object is its own, opened lazily (a standby has no other store connection) and reopened
    after a failure, or when a read is still unanswered after `give_up_seconds` (a connection
    that hangs for good). A change of state is logged once, not at every probe.
    """

    def __init__(
        self,
        *,
        dsn: str,
        database_only: bool = False,
        timeout: float = STORE_TIMEOUT,
        cache_seconds: float = CACHE_SECONDS,
        give_up_seconds: float = GIVE_UP_SECONDS,
    ) -> None:
        self.dsn = dsn
        self.database_only = database_only
        self._database: TenantDatabase | None = None
        self.timeout = timeout
        self.cache_seconds = cache_seconds
        self.give_up_seconds = give_up_seconds
        self._started_at = 0.0
        self._store: ergon.Store | None = None
        self._task: asyncio.Task[tuple[bool, str]] | None = None
        self._checked_at = -float("inf")
        self._result: tuple[bool, str] | None = None

    async def __call__(self) -> tuple[bool, str]:
        if self._result is not None and time.monotonic() - self._checked_at < self.cache_seconds:
            return self._result
        if self._task is not None and time.monotonic() - self._started_at > self.give_up_seconds:
            await self.close()
        if self._task is None:
            self._task = asyncio.create_task(self._check())
            self._started_at = time.monotonic()
        task = self._task
        await asyncio.wait({task}, timeout=self.timeout)
        if not task.done():
            return False, f"no answer within {self.timeout:g}s"
        if task.cancelled():
            return False, f"no answer within {self.give_up_seconds:g}s"
        if self._task is task:
            self._task = None
            result = task.result()
            if self._result is None or result[0] != self._result[0]:
                level = logging.INFO if result[0] else logging.WARNING
                log.log(
                    level, "store %s", "reachable" if result[0] else f"unreachable: {result[1]}"
                )
            self._result = result
            self._checked_at = time.monotonic()
        return task.result()

    async def _check(self) -> tuple[bool, str]:
        try:
            if self.database_only:
                if self._database is None:
                    self._database = TenantDatabase(self.dsn)
                await self._database.check()
            else:
                if self._store is None:
                    self._store = ergon.open_store(self.dsn)
                await self._store.get_flow("ergon-operator-readiness")
        except Exception as exc:
            await self._discard()
            return False, ergon.redact(str(exc)) or type(exc).__name__
        return True, "ok"

    async def _discard(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(store.close(), 1.0)
        database, self._database = self._database, None
        if database is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(database.close(), 1.0)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._discard()


class HealthServer:
    """A small aiohttp server for the two probes; `leading` says whether this replica leads
    (shown in both answers, for humans; it never decides health)."""

    def __init__(
        self,
        *,
        port: int,
        store_check: Callable[[], Awaitable[tuple[bool, str]]],
        leading: Callable[[], bool],
        host: str = "0.0.0.0",
    ) -> None:
        self.port = port
        self.host = host
        self.store_check = store_check
        self.leading = leading
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        log.info("health endpoints on port %d: /healthz, /readyz", self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "leader": self.leading()})

    async def _readyz(self, _: web.Request) -> web.Response:
        ready, detail = await self.store_check()
        body = {"ready": ready, "store": detail, "leader": self.leading()}
        return web.json_response(body, status=200 if ready else 503)
