"""A deliberately small connection pool shared by the Postgres and Redis stores.

Why not the drivers' pools: on the checkpoint hot path a store call is one round trip, and the
drivers' pools add work of the same order around it -- asyncpg's pool shields every release in a
task and (by default) sends a reset query; redis-py's pool probes the socket with a read before
every command. Here taking a connection is a list pop and giving it back a list append. Health
is judged from what the event loop already knows (a connection the server closed is marked
closed by the driver's protocol), and a connection that failed mid-call is discarded rather
than returned, so a restarted server costs at most the one call that found its connection dead.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ClassVar, Generic, TypeVar

from ergon.core.errors import StoreError, StoreValueError
from ergon.core.store import Notifier

C = TypeVar("C")
T = TypeVar("T")
Errors = tuple[type[BaseException], ...]

log = logging.getLogger("ergon.storage")

RECONNECT_MAX_DELAY = 2.0


def driver_error(
    exc: BaseException,
    *,
    backend: str,
    where: str,
    what: str,
    timed_out: bool,
    unreachable: bool,
    refused_value: bool,
    credentials: str,
) -> StoreError:
    """A `StoreError` for a driver or socket error of a networked store, saying what to do about
    it (the backend classifies the error; `credentials` names where they come from)."""
    if isinstance(exc, StoreError):
        return exc
    detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
    if timed_out:
        return StoreError(
            f"{backend} at {where} did not answer in time to {what} ({detail}). Check that the "
            "server is up, reachable and not overloaded; the next call tries again."
        )
    if unreachable:
        return StoreError(
            f"cannot reach {backend} at {where} to {what}: {detail}. Check that the server is "
            f"running and accepts connections there (and {credentials}); the store reconnects "
            "on the next call."
        )
    if refused_value:
        return StoreValueError(f"{backend} at {where} refused a value ({detail}) to {what}")
    return StoreError(f"{backend} at {where}: {what} failed: {detail}")


async def retry_after(
    error: BaseException,
    attempt: Callable[[], Awaitable[T]],
    *,
    transient: Errors,
    failure: Errors,
    translate: Callable[[BaseException], StoreError],
    idempotent: bool,
    grace: float,
    describe: str,
) -> T:
    """After a first attempt failed with the driver error `error`: give up with a `StoreError`,
    or -- for idempotent work that met a transient error (a dead connection, a server
    restarting) -- try again at once, then with backoff for up to `grace` seconds.

    The first attempt stays with the caller, so the hot path pays nothing for this.
    """
    if not (idempotent and isinstance(error, transient)):
        raise translate(error) from error
    log.info("retrying %s after %r", describe, error)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    delay = 0.05
    while True:
        try:
            return await attempt()
        except transient as exc:
            if loop.time() + delay > deadline:
                raise translate(exc) from exc
        except failure as exc:
            raise translate(exc) from exc
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


async def reconnect(
    connect: Callable[[], Awaitable[None]], *, errors: Errors, notifier: Notifier, what: str
) -> None:
    """Re-establish a notification channel: `connect` until it works, backing off up to
    `RECONNECT_MAX_DELAY`; then wake every waiter once, since whatever was sent while the channel
    was away is lost and they must re-check the store."""
    delay = 0.05
    while True:
        try:
            await connect()
        except errors as exc:
            log.debug("%s not back yet: %r", what, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_DELAY)
            continue
        log.info("%s re-established", what)
        notifier.notify_missed()
        return


class Pool(Generic[C]):
    """Idle connections on a stack; at most `max_size` in use at once."""

    def __init__(
        self,
        *,
        connect: Callable[[], Awaitable[C]],
        disconnect: Callable[[C], Coroutine[Any, Any, None]],
        usable: Callable[[C], bool],
        max_size: int,
    ) -> None:
        if max_size < 1:
            raise ValueError(f"a pool needs at least one connection, not {max_size}")
        self._connect = connect
        self._disconnect = disconnect
        self._usable = usable
        self._idle: list[C] = []
        self._slots = asyncio.Semaphore(max_size)
        self._closed = False
        self._closing: set[asyncio.Task[None]] = set()

    async def acquire(self) -> C:
        await self._slots.acquire()
        try:
            while self._idle:
                conn = self._idle.pop()
                if self._usable(conn):
                    return conn
                await self._disconnect(conn)
            return await self._connect()
        except BaseException:
            self._slots.release()
            raise

    def release(self, conn: C) -> None:
        """Give back a connection after a call that went through (or failed on the server's
        side, leaving the connection usable)."""
        self._slots.release()
        if self._closed or not self._usable(conn):
            task = asyncio.get_running_loop().create_task(self._disconnect(conn))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        else:
            self._idle.append(conn)

    async def discard(self, conn: C) -> None:
        """Close a connection whose state is unknown (a call failed or was cancelled on it)."""
        self._slots.release()
        await self._disconnect(conn)

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._disconnect(conn)


class PooledConnections(Generic[C]):
    """The connections of one networked store: a `Pool` opened on first use (`_open`, by the
    backend), and the retry of a call whose first attempt failed (`retry`).

    A backend names itself in messages (`backend`), says which driver errors are worth a retry
    (`transient`) and which are errors at all (`failure`), and turns them into `StoreError`s
    (`translate`).
    """

    backend: ClassVar[str]
    transient: ClassVar[Errors]
    failure: ClassVar[Errors]

    def __init__(self, *, where: str, outage_grace: float) -> None:
        self.where = where
        self.outage_grace = outage_grace
        self._pool: Pool[C] | None = None
        self._opening: asyncio.Lock | None = None

    def translate(self, error: BaseException, *, what: str) -> StoreError:
        raise NotImplementedError

    async def _open(self) -> Pool[C]:
        raise NotImplementedError

    async def pool(self) -> Pool[C]:
        if self._pool is not None:
            return self._pool
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._pool is None:
                self._pool = await self._open()
        return self._pool

    async def retry(
        self,
        error: BaseException,
        what: str,
        attempt: Callable[[], Awaitable[T]],
        *,
        idempotent: bool,
        ride_through: bool,
    ) -> T:
        """After the first attempt at `what` failed with `error`: `retry_after`, with a grace of
        `outage_grace` seconds for calls that `ride_through` a server restart (checkpoints and
        ends of executions, whose failure would make steps run again), else none."""
        return await retry_after(
            error,
            attempt,
            transient=self.transient,
            failure=self.failure,
            translate=functools.partial(self.translate, what=what),
            idempotent=idempotent,
            grace=self.outage_grace if ride_through else 0.0,
            describe=f"{what} on {self.backend} at {self.where}",
        )

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
