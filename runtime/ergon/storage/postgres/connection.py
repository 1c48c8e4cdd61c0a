"""Connections for `PostgresStore`: the lazily created pool, error translation, and LISTEN.

Errors: anything that means "the server cannot be reached or went away" (refused or timed-out
connects, a connection dropped mid-query, the server shutting down or starting up) becomes a
`StoreError` naming the host, port and database, what was being done, and what to check. A value
the server (or asyncpg) refuses -- a NUL or unpaired surrogate in text, a number out of range, a
`pg_notify` payload over 8,000 bytes, an index row over its size limit -- becomes a
`StoreValueError`, which is never retried: the same value would be refused again. A
pooled connection the server closed (a restart) is known closed to asyncpg before it is reused and
is replaced, so the next call after the server is back works; calls marked idempotent are also
retried once at once after a connection failure or a deadlock.

Every connection runs with `search_path = pg_catalog, pg_temp`: every statement names its
tables with the store's schema, so no name of a function, operator or type a statement uses can
resolve to something another role made in `public` or a schema named like the connecting user
(the operator's connections to a tenant's schema rely on this: see docs/security.md, The store).

LISTEN holds a dedicated connection (a pooled one would lose its registration when returned).
A watchdog re-establishes it after a connection loss and then bumps the notifier once: whatever
was notified while it was away, waiters re-check.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit

import asyncpg

from ergon.core.errors import ErgonError, StoreError
from ergon.core.store import Notifier
from ergon.storage.base import pop_option
from ergon.storage.pooling import Pool, PooledConnections, driver_error, reconnect
from ergon.storage.postgres.schema import migrate

T = TypeVar("T")
log = logging.getLogger("ergon.storage.postgres")

HEALTH_SECONDS = 10.0
# Built-ins only (pg_temp, this session's own temporary objects, last; it is never searched for
# functions or operators). A DSN's own search_path option is overridden.
SEARCH_PATH = "pg_catalog, pg_temp"

# The server is unreachable, went away, or is not accepting connections right now.
_UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.ConnectionDoesNotExistError,  # "connection was closed in the middle of operation"
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
)
# Worth one immediate retry for an idempotent call. InternalClientError: a server that shuts
# down sends its FATAL error to idle connections too, which puts asyncpg's protocol out of step
# until the socket's end arrives; a connection taken in between fails that way.
_TRANSIENT: tuple[type[BaseException], ...] = (
    *_UNREACHABLE,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.InternalClientError,
)
# A call that ended like this leaves its connection in an unknown state.
_IN_DOUBT: tuple[type[BaseException], ...] = (asyncio.CancelledError, *_UNREACHABLE)
_ANY_DRIVER_ERROR: tuple[type[BaseException], ...] = (
    *_TRANSIENT,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,  # misuse, e.g. a value the column type cannot take
)
# Errors after which the connection is known to be back at rest: the server refused a
# statement, or our own code decided (fenced, wrong flow name) after its queries completed.
_CLEAN: tuple[type[BaseException], ...] = (asyncpg.PostgresError, ErgonError)
# The value itself was refused: class 22 (data exceptions, also raised by asyncpg for an argument
# it cannot encode), class 23 but for unique violations (which a concurrent insert can cause),
# class 54 (program limits, e.g. an index row too large).
_VALUE_REFUSED: tuple[type[BaseException], ...] = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.ProgramLimitExceededError,
)
_REFUSED: tuple[type[BaseException], ...] = (
    asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidAuthorizationSpecificationError,
)


def split_dsn(dsn: str) -> tuple[str, str | None]:
    """The DSN without Ergon's own `schema` query option, and that option."""
    return pop_option(dsn, "schema")


def describe(dsn: str) -> str:
    """host:port (database) for messages, without credentials."""
    parts = urlsplit(dsn)
    try:
        port = parts.port or 5432
    except ValueError:
        port = 5432
    database = parts.path.lstrip("/") or parts.username or "postgres"
    return f"{parts.hostname or 'localhost'}:{port} (database {database!r})"


def store_error(exc: BaseException, *, where: str, what: str) -> StoreError:
    """A `StoreError` for a driver or socket error, saying what to do about it."""
    if isinstance(exc, _REFUSED):
        detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
        return StoreError(f"Postgres at {where} refused the connection to {what}: {detail}")
    return driver_error(
        exc,
        backend="Postgres",
        where=where,
        what=what,
        timed_out=isinstance(exc, TimeoutError),
        unreachable=isinstance(exc, _UNREACHABLE),
        refused_value=isinstance(exc, _VALUE_REFUSED)
        and not isinstance(exc, asyncpg.UniqueViolationError),
        credentials="the DSN's credentials",
    )


async def _terminate(conn: asyncpg.Connection) -> None:
    conn.terminate()


def _usable(conn: asyncpg.Connection) -> bool:
    return not conn.is_closed() and not conn.is_in_transaction()


class Connections(PooledConnections[asyncpg.Connection]):
    """The connections of one store: a pool opened (and the schema migrated) on first use."""

    backend = "Postgres"
    transient = _TRANSIENT
    failure = _ANY_DRIVER_ERROR

    def __init__(
        self,
        dsn: str,
        *,
        schema: str,
        migrate_as: str | None = None,
        max_size: int,
        connect_timeout: float,
        command_timeout: float | None,
        outage_grace: float,
    ) -> None:
        super().__init__(where=describe(dsn), outage_grace=outage_grace)
        self.dsn = dsn
        self.schema = schema
        self.migrate_as = migrate_as
        self.max_size = max_size
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout

    async def connect(self, application: str = "ergon") -> asyncpg.Connection:
        """A new connection (raises the driver's errors)."""
        return await asyncpg.connect(
            self.dsn,
            timeout=self.connect_timeout,
            command_timeout=self.command_timeout,
            server_settings={"application_name": application, "search_path": SEARCH_PATH},
        )

    def translate(self, error: BaseException, *, what: str) -> StoreError:
        return store_error(error, where=self.where, what=what)

    async def _open(self) -> Pool[asyncpg.Connection]:
        pool: Pool[asyncpg.Connection] = Pool(
            connect=self.connect, disconnect=_terminate, usable=_usable, max_size=self.max_size
        )
        try:
            conn = await pool.acquire()
            try:
                applied = await self._migrate(conn)
            except BaseException:
                await pool.discard(conn)
                raise
            pool.release(conn)
        except _ANY_DRIVER_ERROR as exc:
            raise store_error(exc, where=self.where, what="open the store") from exc
        if applied:
            log.info(
                "migrated Postgres schema %r at %s (%d migrations)",
                self.schema,
                self.where,
                applied,
            )
        return pool

    async def _migrate(self, conn: asyncpg.Connection) -> int:
        """Migrate the schema, as the role `migrate_as` when set (`SET ROLE`, so that what the
        migrations create belongs to that role: a tenant's owner role, which no login role can
        become), then back as the connection's own user."""
        if self.migrate_as is None:
            return await migrate(conn, self.schema)
        await conn.execute(f'SET ROLE "{self.migrate_as}"')
        try:
            return await migrate(conn, self.schema)
        finally:
            await conn.execute("RESET ROLE")

    async def run(
        self,
        what: str,
        work: Callable[[asyncpg.Connection], Awaitable[T]],
        *,
        idempotent: bool,
        ride_through: bool = False,
    ) -> T:
        """Run `work` on a pooled connection, translating errors.

        Idempotent work is retried once at once on a dead connection or a deadlock; with
        `ride_through` (checkpoints and ends of executions, whose failure would make steps run
        again) it keeps retrying with backoff for up to `outage_grace` seconds while the server
        restarts. Only a server that was reachable before is waited for.
        """
        try:
            return await self._once(work)
        except _ANY_DRIVER_ERROR as exc:
            attempt = functools.partial(self._once, work)
            return await self.retry(
                exc, what, attempt, idempotent=idempotent, ride_through=ride_through
            )

    async def _once(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        pool = self._pool or await self.pool()
        conn = await pool.acquire()
        try:
            result = await work(conn)
        except BaseException as exc:
            if isinstance(exc, _CLEAN) and not isinstance(exc, _IN_DOUBT):
                pool.release(conn)  # a refused statement leaves an autocommit connection usable
            else:
                await pool.discard(conn)  # cut off mid-exchange: its protocol state is unknown
            raise
        pool.release(conn)
        return result


class Listener:
    """LISTEN on one channel over a dedicated connection that survives server restarts."""

    def __init__(self, connections: Connections, channel: str, notifier: Notifier) -> None:
        self.connections = connections
        self.channel = channel
        self.notifier = notifier
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._starting: asyncio.Lock | None = None

    async def start(self) -> None:
        if self._task is not None:
            return
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:  # several workers may ask for the notifier at once
            if self._task is None:
                await self._listen()
                self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _listen(self) -> None:
        try:
            conn = await self.connections.connect("ergon-listen")
        except _ANY_DRIVER_ERROR as exc:
            where = self.connections.where
            raise store_error(exc, where=where, what="listen for notifications") from exc
        try:
            await conn.add_listener(self.channel, self._received)
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(self._terminated)
        self._lost.clear()
        self._conn = conn

    def _received(self, conn: object, pid: int, channel: str, payload: object) -> None:
        self.notifier.notify(payload if isinstance(payload, str) and payload else None)

    def _terminated(self, conn: object) -> None:
        self._lost.set()

    async def _watch(self) -> None:
        while True:
            if not self._lost.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(HEALTH_SECONDS):
                        await self._lost.wait()
                if not self._lost.is_set() and await self._alive():
                    continue
            await self._reconnect()

    async def _alive(self) -> bool:
        conn = self._conn
        if conn is None or conn.is_closed():
            return False
        try:
            await conn.fetchval("SELECT 1", timeout=5.0)
        except _ANY_DRIVER_ERROR:
            return False
        return True

    async def _reconnect(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None
        await reconnect(
            self._listen,
            errors=(StoreError,),
            notifier=self.notifier,
            what=f"LISTEN connection to {self.connections.where}",
        )

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                async with asyncio.timeout(5.0):
                    await conn.close()
            except _UNREACHABLE:
                conn.terminate()
