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
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

C = TypeVar("C")


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
