"""The connection and locking layer under `SqliteStore`: where statements run, how write
transactions lock, which errors mean what, group commit, and the cross-process wake-up channel.

All statements run on one dedicated thread per store (SQLite connections are not shareable
across threads, and fsync must not block the event loop) -- or inline, when the database is
free. Several processes may use the same file; write transactions take SQLite's write lock
(`BEGIN IMMEDIATE`) and wait for it up to `busy_timeout`.

Group commit (`Database.commit`): the writes executions make at every step (checkpoints, signal
consumptions, the ends of executions, opening a flow) are records of a batch. Concurrent
records are committed together by the store's one writer -- its thread and the connection
there -- in one `BEGIN IMMEDIATE ... COMMIT`, so one fsync covers them all; each record runs in a
savepoint of its own, so a record refused (fenced, a value SQLite cannot hold) fails only its
caller, and each caller's `await` returns once the batch holding its record has committed. A
lone execution writes inline, as before, at no added cost: see `Database.commit`.

Errors: a value SQLite refuses (a string over its maximum length, an integer over 64 bits, a str
with an unpaired surrogate, a constraint) is a `StoreValueError`; anything else (a locked,
read-only, full or corrupt database) a `StoreError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

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

# Writes of two different tasks less than this apart count as concurrent: for this long after
# such a pair, records go to the writer (batched, the event loop free during the fsync) instead of
# inline (the loop blocked for the fsync, so nothing else could have joined the write anyway).
# The cost of erring towards the writer is one thread hop (tens of microseconds) per record; the
# cost of erring towards inline is one fsync per record. A lone execution writes from one task
# and never enters this mode, whatever the window.
_OVERLAP_WINDOW = 0.01
# An inline write never suspends its caller, so a task writing in a loop (a flow of trivial
# steps) would hold the event loop until it stops writing: other executions could not even
# reach their first write, let alone share a batch. Every _STREAK-th write in a row by one task
# first yields to the loop once (one pass of the loop: about a microsecond a step, within the
# noise of a single flow's per-step cost); if another task writes meanwhile, both go to the
# writer from then on. Yielding before the write, not after it, keeps cancellation simple: a
# caller cancelled there wrote nothing.
_STREAK = 32
_SAVEPOINT = "SAVEPOINT ergon_record"
_RELEASE = "RELEASE ergon_record"
_ROLLBACK_TO = "ROLLBACK TO ergon_record"


class _Busy(Exception):
    """The inline connection met the write lock of another connection (nothing was done)."""


class _Record:
    """One caller's writes, waiting in the writer's queue for the next batch."""

    __slots__ = ("fn", "future", "single")

    def __init__(
        self, fn: Callable[[sqlite3.Connection], Any], future: asyncio.Future[Any], single: bool
    ) -> None:
        self.fn = fn
        self.future = future
        self.single = single


class Database:
    """One SQLite file's connections: an inline one that never waits for a lock, and one on the
    store's thread that does -- where the group commit's writer commits its batches."""

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
        # Group commit: records waiting for the next batch, and whether a batch is on its way
        # (scheduled, or committing on the thread; new records then wait for the next one).
        self._queue: list[_Record] = []
        self._flushing = False
        self._idle: list[asyncio.Future[None]] = []
        # Which task wrote last and when; until when writes count as concurrent.
        self._last_writer = 0
        self._streak = 0  # writes in a row by that task
        self._last_write = float("-inf")
        self._overlap_until = float("-inf")
        # Statistics (tests, benchmarks): batches committed by the writer, and their records.
        self.batches = 0
        self.batched = 0

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

    async def commit(
        self,
        fn: Callable[[sqlite3.Connection], T],
        *,
        single: bool = False,
        probe: bool = True,
    ) -> T:
        """Run `fn`'s statements as one record of a group commit; returns what `fn` returns
        once the transaction holding them has committed (durable at the store's setting).

        `fn` runs inside a write transaction that the caller does not open or close: in a
        `SAVEPOINT` of its own within a batch (rolled back if `fn` raises, so a refused record
        changes nothing and fails only its caller), or alone. `single=True` promises that `fn`
        changes the database with at most one statement and nothing after it (a checkpoint:
        one guarded upsert, then at most a read): SQLite undoes a failing statement by itself,
        so such a record needs no savepoint and, written alone, no `BEGIN`.

        `probe=False` marks a write that is not an execution's own (scheduling a flow): it
        joins the writer's batches when they form, but does not by itself make the next
        writes of other tasks count as concurrent (a flow scheduled and then run by a worker of
        this process is one execution, not two).

        Where it runs:

        * Inline, on the event loop's connection, as `run` does, when no batch is being
          committed or waiting and no other task wrote in the last `_OVERLAP_WINDOW`: a lone
          execution pays what it paid before group commit, plus about a microsecond of this
          bookkeeping (a thread hop would add tens of microseconds to a ~140 us fsync), and no
          timer ever delays a write. If another process holds the write lock, the record goes
          to the writer instead.
        * Otherwise through the writer: the record joins the queue, and the next batch starts
          as soon as the event loop has run the callbacks that are ready now (`call_soon`, no
          timer), with everything queued by then; records arriving while a batch commits on
          the store's thread form the next one. So the executions that one batch released,
          which resume in the same iteration of the loop, write their next records into one
          batch, and the loop is idle while the thread commits (the two do not compete for
          the GIL). Starting each batch at its first record instead overlapped the loop's
          work with the commit, but measured slower on a shared 2-core machine (64 flows:
          18,000 against 25,000 steps/s; 16 flows: 8,000 against 12,500): twice the fsyncs
          for batches half the size, and a writer thread waiting for the GIL at every
          statement.

        If the batch's `BEGIN IMMEDIATE` or `COMMIT` fails (a full disk, the lock not obtained
        within `busy_timeout`), or a statement fails for the database rather than for its
        record (I/O, a full disk), nothing of the batch is durable and every caller gets a
        `StoreError`: what a failed write raised before group commit, with the same retry
        semantics (the execution stops; a later one resumes from the last durable record).
        """
        if self.inline is None:
            await self._connect()
        task = id(asyncio.current_task())
        if task == self._last_writer:
            self._streak += 1
            if self._streak >= _STREAK:  # let the others run, before this write: see _STREAK
                self._streak = 0
                await asyncio.sleep(0)
        now = time.monotonic()
        if probe:
            if task != self._last_writer:
                self._streak = 0
                if now - self._last_write < _OVERLAP_WINDOW:
                    self._overlap_until = now + _OVERLAP_WINDOW
                self._last_writer = task
            self._last_write = now
        if not self._flushing and now >= self._overlap_until:
            try:
                value = self._inline(fn, single)
            except _Busy:
                pass  # another process holds the write lock: the writer waits for it
            else:
                if probe:  # the window counts from the end of a write (a slow fsync included)
                    self._last_write = time.monotonic()
                return value
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.append(_Record(fn, future, single))
        if not self._flushing:
            # The batch starts once the loop has run what is ready now (no timer): callers
            # that a batch just released, resumed in this same iteration, join the next one.
            self._flushing = True
            loop.call_soon(self._flush_next, loop)
        return await future

    def _inline(self, fn: Callable[[sqlite3.Connection], T], single: bool) -> T:
        conn = self.inline
        assert conn is not None
        try:
            if single:
                return fn(conn)
            conn.execute("BEGIN IMMEDIATE")  # on SQLITE_BUSY nothing has started
            try:
                value = fn(conn)
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return value
        except sqlite3.OperationalError as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if _is_busy(exc):
                raise _Busy from exc
            raise StoreError(f"SQLite store {self.path}: {exc}") from exc
        except _VALUE_REFUSED as exc:
            raise self._refused(exc) from exc
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self.path}: {exc}") from exc

    def _flush_next(self, loop: asyncio.AbstractEventLoop) -> None:
        """Commit everything queued as one batch, on the store's thread."""
        assert self._thread is not None and self.waiting is not None
        batch, self._queue = self._queue, []
        self._flushing = True
        self._thread.submit(self._flush, loop, self.waiting, batch)

    def _flush(
        self, loop: asyncio.AbstractEventLoop, conn: sqlite3.Connection, batch: list[_Record]
    ) -> None:
        """On the store's thread: one transaction for the whole batch, each record in a
        savepoint of its own; then the outcomes go back to the loop in one call."""
        outcomes: list[tuple[bool, Any]] = []
        failure: BaseException | None = None
        try:
            conn.execute("BEGIN IMMEDIATE")  # waits for the lock up to busy_timeout
            outcomes = [self._one(conn, record) for record in batch]
            conn.execute("COMMIT")
        except BaseException as exc:  # nothing of the batch is durable; every caller is told
            failure = exc
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
        with contextlib.suppress(RuntimeError):  # a loop closed meanwhile has no one to tell
            loop.call_soon_threadsafe(self._flushed, loop, batch, outcomes, failure)

    def _one(self, conn: sqlite3.Connection, record: _Record) -> tuple[bool, Any]:
        """Run one record of a batch (on the thread): its outcome, or raise a database error
        (not the record's: the whole batch fails)."""
        try:
            if record.single:
                return True, record.fn(conn)
            conn.execute(_SAVEPOINT)
            try:
                value = record.fn(conn)
            except BaseException:
                if conn.in_transaction:
                    conn.execute(_ROLLBACK_TO)
                    conn.execute(_RELEASE)
                raise
            conn.execute(_RELEASE)
            return True, value
        except _VALUE_REFUSED as exc:
            return False, self._refused(exc)
        except sqlite3.Error:
            raise
        except Exception as exc:  # fenced, refused by the rules: this caller's alone
            return False, exc

    def _flushed(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[_Record],
        outcomes: list[tuple[bool, Any]],
        failure: BaseException | None,
    ) -> None:
        """On the loop: the batch committed (or failed as a whole); answer its callers and
        start the next batch with whatever arrived meanwhile."""
        self._flushing = False
        self._last_write = time.monotonic()
        self.batches += 1
        self.batched += len(batch)
        for i, record in enumerate(batch):
            if record.future.done():  # cancelled (the record may be written all the same)
                continue
            if failure is not None:
                error = StoreError(f"SQLite store {self.path}: {failure}")
                error.__cause__ = failure
                record.future.set_exception(error)
            elif outcomes[i][0]:
                record.future.set_result(outcomes[i][1])
            else:
                record.future.set_exception(outcomes[i][1])
        if self._queue:  # arrived while this batch committed: the next batch
            self._flushing = True
            loop.call_soon(self._flush_next, loop)  # after the callers just answered
            return
        for waiter in self._idle:
            if not waiter.done():
                waiter.set_result(None)
        self._idle.clear()

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
        while self._flushing or self._queue:  # let the writer commit what it was given
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._idle.append(waiter)
            await waiter
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
