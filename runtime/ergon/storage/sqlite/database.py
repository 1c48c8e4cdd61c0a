"""The connection and locking layer under `SqliteStore`: where statements run, how write
transactions lock, which errors mean what, and the cross-process wake-up channel.

All statements run on one dedicated thread per store (SQLite connections are not shareable
across threads, and fsync must not block the event loop) -- or inline, when the database is
free. Several processes may use the same file; write transactions take SQLite's write lock
(`BEGIN IMMEDIATE`) and wait for it up to `busy_timeout`.

Errors: a value SQLite refuses (a string over its maximum length, an integer over 64 bits, a str
with an unpaired surrogate, a constraint) is a `StoreValueError`; anything else (a locked,
read-only, full or corrupt database) a `StoreError`.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TypeVar

from ergon.core.errors import StoreError, StoreValueError
from ergon.core.store import Notifier
from ergon.storage.sqlite.channel import SocketChannel
from ergon.storage.sqlite.schema import MIGRATIONS

T = TypeVar("T")
Synchronous = Literal["full", "normal", "extra"]

# Refused for the value bound, not for the state of the database ("string or blob too big" is a
# DataError; fencing never raises, it is decided by the statements themselves).
_VALUE_REFUSED: tuple[type[BaseException], ...] = (
    sqlite3.DataError,
    sqlite3.IntegrityError,
    OverflowError,
    UnicodeEncodeError,
)


class Database:
    """One SQLite file's connections: an inline one that never waits for a lock, and one on the
    store's thread that does."""

    def __init__(self, path: Path, *, synchronous: Synchronous, busy_timeout: float) -> None:
        self.path = path
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        self.notifier = Notifier()
        self.inline: sqlite3.Connection | None = None
        self.waiting: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._opening: asyncio.Lock | None = None
        self._channel: SocketChannel | None = None

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in one transaction: inline if the database is free, else on a thread.

        The inline connection never waits for a lock (busy_timeout 0), so the event loop is only
        ever held for the statement itself (and its fsync). When another connection holds the
        write lock, the work moves to the store's thread, whose connection waits up to
        `busy_timeout` without blocking the loop.
        """
        if self.inline is None:
            await self._connect()
        assert self.inline is not None and self._thread is not None
        try:
            return fn(self.inline)
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise StoreError(f"SQLite store {self.path}: {exc}") from exc
        except _VALUE_REFUSED as exc:
            raise self._refused(exc) from exc
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self.path}: {exc}") from exc
        waiting = self.waiting
        assert waiting is not None
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, fn, waiting)
        except _VALUE_REFUSED as exc:
            raise self._refused(exc) from exc
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self.path}: {exc}") from exc

    def _refused(self, exc: BaseException) -> StoreValueError:
        return StoreValueError(
            f"SQLite store {self.path} refused a value: {type(exc).__name__}: {exc}"
        )

    async def _connect(self) -> None:
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self.inline is not None:
                return
            if not self.path.parent.exists():
                raise StoreError(
                    f"cannot open SQLite store {self.path}: directory {self.path.parent} does not "
                    "exist"
                )
            thread = ThreadPoolExecutor(1, thread_name_prefix="ergon-sqlite")
            loop = asyncio.get_running_loop()
            try:
                waiting = await loop.run_in_executor(thread, self._open_connection, True)
                inline = self._open_connection(False)
            except (sqlite3.Error, OSError) as exc:
                thread.shutdown(wait=False)
                raise StoreError(f"cannot open SQLite store {self.path}: {exc}") from exc
            self.inline, self.waiting, self._thread = inline, waiting, thread
            self._channel = SocketChannel(self.path, self.notifier)

    def _open_connection(self, waiting: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout if waiting else 0.0,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000) if waiting else 0}")
            if waiting:
                conn.execute("PRAGMA journal_mode=WAL")
                _migrate(conn)
            conn.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
        except sqlite3.Error:
            conn.close()
            raise
        return conn

    async def listen(self) -> Notifier:
        """The notifier, once this process listens on the database's wake-up channel."""
        if self.inline is None:
            await self._connect()
        assert self._channel is not None
        await self._channel.listen()
        return self.notifier

    def broadcast(self) -> None:
        """Tell every process using the database (this one included) that something changed."""
        if self._channel is not None:
            self._channel.broadcast()

    async def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self.inline is not None and self.waiting is not None and self._thread is not None:
            inline, waiting, thread = self.inline, self.waiting, self._thread
            self.inline = self.waiting = self._thread = None
            inline.close()
            await asyncio.get_running_loop().run_in_executor(thread, waiting.close)
            thread.shutdown(wait=False)


class write:
    """A write transaction holding SQLite's write lock from the start (no upgrade deadlocks)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")  # on SQLITE_BUSY nothing has started
        return self.conn

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")


def ts(value: datetime | None) -> float | None:
    """A time as stored: float seconds since the Unix epoch."""
    return value.timestamp() if value is not None else None


def dt(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    return code in (5, 6) or "database is locked" in str(exc)


def _migrate(conn: sqlite3.Connection) -> None:
    with write(conn):
        conn.execute("CREATE TABLE IF NOT EXISTS ergon_schema (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM ergon_schema").fetchone()
        current = row[0] if row else 0
        if current > len(MIGRATIONS):
            raise StoreError(
                f"database schema version {current} is newer than this ergon understands "
                f"({len(MIGRATIONS)}); upgrade ergon"
            )
        for script in MIGRATIONS[current:]:
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
        if row is None:
            conn.execute("INSERT INTO ergon_schema (version) VALUES (?)", (len(MIGRATIONS),))
        else:
            conn.execute("UPDATE ergon_schema SET version = ?", (len(MIGRATIONS),))
