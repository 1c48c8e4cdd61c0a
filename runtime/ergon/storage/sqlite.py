"""`SqliteStore`: the embedded default, one SQLite file in WAL mode.

Durability: `synchronous=FULL` by default, so a checkpoint that returned survives power loss.
`SqliteStore(path, synchronous="normal")` (URL `sqlite:///x.db?synchronous=normal`) trades that
for speed: commits survive a crash of the process but the last ones may be lost on power loss.

All statements run on one dedicated thread per store (SQLite connections are not shareable
across threads, and fsync must not block the event loop). Several processes may use the same
file; write transactions take SQLite's write lock (`BEGIN IMMEDIATE`) and wait for it up to
`busy_timeout`.

Errors: a value SQLite refuses (a string over its maximum length, an integer over 64 bits, a str
with an unpaired surrogate, a constraint) is a `StoreValueError`; anything else (a locked,
read-only, full or corrupt database) a `StoreError`.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

from ergon.core.codec import error_from_json, error_to_json, reason_from_json, reason_to_json
from ergon.core.errors import (
    CancelRequestedError,
    FencedError,
    FlowMismatchError,
    StoreError,
    StoreValueError,
)
from ergon.core.records import (
    TERMINAL_STATES,
    FlowEnd,
    FlowState,
    FlowStatus,
    Lease,
    NewFlow,
    OpenedFlow,
    SignalRecord,
    StepRecord,
    key_tuple,
    utcnow,
)
from ergon.core.store import Claimed, Notifier, Renewal
from ergon.storage.base import StoreLifecycle
from ergon.storage.notify import SocketChannel
from ergon.storage.sqlite_schema import MIGRATIONS

T = TypeVar("T")
Synchronous = Literal["full", "normal", "extra"]

_FLOW_COLUMNS = (
    "id, flow, input, state, version, parent_id, result, error, waiting_for, wake_at, attempts, "
    "epoch, lease_owner, lease_expires_at, cancel_requested, events, created_at, updated_at"
)
_STEP_COLUMNS = (
    "key, name, kind, state, attempts, result, error, started_at, completed_at, fire_at, "
    "flow_attempt, args_hash"
)
_UPSERT_STEP = (
    f"INSERT INTO steps (flow_id, {_STEP_COLUMNS}) "
    "SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? {guard} "
    "ON CONFLICT (flow_id, key) DO UPDATE SET name = excluded.name, kind = excluded.kind, "
    "state = excluded.state, attempts = excluded.attempts, result = excluded.result, "
    "error = excluded.error, started_at = excluded.started_at, "
    "completed_at = excluded.completed_at, fire_at = excluded.fire_at, "
    "flow_attempt = excluded.flow_attempt, args_hash = excluded.args_hash"
)
_GUARDED_UPSERT = _UPSERT_STEP.format(
    guard="WHERE EXISTS (SELECT 1 FROM flows WHERE id = ? AND epoch = ? AND state = 'running' "
    "AND cancel_requested = 0)"
)
_PLAIN_UPSERT = _UPSERT_STEP.format(guard="WHERE true")
# Refused for the value bound, not for the state of the database ("string or blob too big" is a
# DataError; fencing never raises, it is decided by the statements themselves).
_VALUE_REFUSED: tuple[type[BaseException], ...] = (
    sqlite3.DataError,
    sqlite3.IntegrityError,
    OverflowError,
    UnicodeEncodeError,
)
_RUNNABLE = (
    "(state = 'pending' OR (state = 'suspended' AND wake_at <= :now) "
    "OR (state = 'running' AND lease_expires_at < :now))"
)


class SqliteStore(StoreLifecycle):
    """A `Store` in one SQLite file (created with its schema on first use)."""

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: Synchronous = "full",
        busy_timeout: float = 30.0,
    ) -> None:
        if synchronous not in ("full", "normal", "extra"):
            raise ValueError(
                f"synchronous must be 'full', 'normal' or 'extra', not {synchronous!r}"
            )
        self.path = Path(path)
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        self._inline: sqlite3.Connection | None = None
        self._waiting: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._opening: asyncio.Lock | None = None
        self._notifier = Notifier()
        self._channel: SocketChannel | None = None

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r}, synchronous={self.synchronous!r})"

    # --- connection -------------------------------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in one transaction: inline if the database is free, else on a thread.

        The inline connection never waits for a lock (busy_timeout 0), so the event loop is only
        ever held for the statement itself (and its fsync). When another connection holds the
        write lock, the work moves to the store's thread, whose connection waits up to
        `busy_timeout` without blocking the loop.
        """
        if self._inline is None:
            await self._connect()
        assert self._inline is not None and self._thread is not None
        try:
            return fn(self._inline)
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise StoreError(f"SQLite store {self.path}: {exc}") from exc
        except _VALUE_REFUSED as exc:
            raise self._refused(exc) from exc
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self.path}: {exc}") from exc
        waiting = self._waiting
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
            if self._inline is not None:
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
            self._inline, self._waiting, self._thread = inline, waiting, thread
            self._channel = SocketChannel(self.path, self._notifier)

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

    async def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self._inline is not None and self._waiting is not None and self._thread is not None:
            inline, waiting, thread = self._inline, self._waiting, self._thread
            self._inline = self._waiting = self._thread = None
            inline.close()
            await asyncio.get_running_loop().run_in_executor(thread, waiting.close)
            thread.shutdown(wait=False)

    async def notifier(self) -> Notifier:
        if self._inline is None:
            await self._connect()
        assert self._channel is not None
        await self._channel.listen()
        return self._notifier

    def _broadcast(self) -> None:
        if self._channel is not None:
            self._channel.broadcast()

    # --- executing ------------------------------------------------------------------------

    async def open_flow(self, new: NewFlow, *, owner: str) -> OpenedFlow:
        def work(conn: sqlite3.Connection) -> OpenedFlow:
            with _write(conn):
                now = _ts(utcnow())
                conn.execute(
                    "INSERT INTO flows (id, flow, input, state, version, parent_id, created_at, "
                    "updated_at) VALUES (?, ?, ?, 'running', ?, ?, ?, ?) "
                    "ON CONFLICT (id) DO NOTHING",
                    (new.id, new.flow, new.input, new.version, new.parent_id, now, now),
                )
                flow = _flow(conn, new.id)
                assert flow is not None
                if flow.flow != new.flow:
                    raise FlowMismatchError(
                        f"flow id {new.id!r} is recorded as flow {flow.flow!r}, not {new.flow!r}"
                    )
                if flow.is_terminal:
                    return OpenedFlow(flow, [], None)
                conn.execute(
                    "UPDATE flows SET state = 'running', epoch = epoch + 1, lease_owner = ?, "
                    "lease_expires_at = NULL, waiting_for = NULL, wake_at = NULL, updated_at = ? "
                    "WHERE id = ?",
                    (owner, now, new.id),
                )
                flow = _flow(conn, new.id)
                assert flow is not None
                lease = Lease(new.id, flow.epoch, owner, None)
                return OpenedFlow(flow, _steps(conn, new.id), lease)

        return await self._run(work)

    async def resume_flow(self, lease: Lease) -> OpenedFlow:
        def work(conn: sqlite3.Connection) -> OpenedFlow:
            flow = _flow(conn, lease.flow_id)
            if flow is None or flow.epoch != lease.epoch:
                raise FencedError(f"flow {lease.flow_id} is held under a newer epoch")
            return OpenedFlow(flow, _steps(conn, lease.flow_id), lease)

        return await self._run(work)

    async def save_step(
        self, flow_id: str, step: StepRecord, *, epoch: int | None, consumes: int | None = None
    ) -> None:
        values = (
            flow_id,
            step.key,
            step.name,
            step.kind,
            step.state,
            step.attempts,
            step.result,
            error_to_json(step.error),
            _ts(step.started_at),
            _ts(step.completed_at),
            _ts(step.fire_at),
            step.flow_attempt,
            step.args_hash,
        )

        def work(conn: sqlite3.Connection) -> None:
            if consumes is None and epoch is not None:
                if conn.execute(_GUARDED_UPSERT, (*values, flow_id, epoch)).rowcount != 1:
                    _refuse(conn, flow_id, epoch)
                return
            with _write(conn):
                if epoch is not None:
                    cursor = conn.execute(_GUARDED_UPSERT, (*values, flow_id, epoch))
                    if cursor.rowcount != 1:
                        _refuse(conn, flow_id, epoch)
                else:
                    conn.execute(_PLAIN_UPSERT, values)
                if consumes is not None:
                    conn.execute(
                        "UPDATE signals SET consumed_at = ? WHERE seq = ? AND consumed_at IS NULL",
                        (_ts(utcnow()), consumes),
                    )

        await self._run(work)

    async def finish_flow(self, flow_id: str, end: FlowEnd, *, epoch: int | None) -> FlowStatus:
        def work(conn: sqlite3.Connection) -> FlowStatus:
            with _write(conn):
                flow = _flow(conn, flow_id)
                if flow is None or (epoch is not None and flow.epoch != epoch):
                    raise FencedError(f"flow {flow_id} is held by another executor")
                state: FlowState = end.state
                if state == "suspended" and flow.events > end.seen_events:
                    state = "pending"
                terminal = state in TERMINAL_STATES
                conn.execute(
                    "UPDATE flows SET state = ?, result = COALESCE(?, result), "
                    "error = COALESCE(?, error), waiting_for = ?, wake_at = ?, "
                    "attempts = COALESCE(?, attempts), lease_owner = NULL, "
                    "lease_expires_at = NULL, cancel_requested = ?, updated_at = ? WHERE id = ?",
                    (
                        state,
                        end.result,
                        error_to_json(end.error),
                        reason_to_json(end.waiting_for) if not terminal else None,
                        _ts(end.wake_at) if state == "suspended" else None,
                        end.attempts,
                        0 if terminal else int(flow.cancel_requested),
                        _ts(utcnow()),
                        flow_id,
                    ),
                )
                if terminal and flow.parent_id:
                    _wake(conn, flow.parent_id)
                result = _flow(conn, flow_id)
                assert result is not None
                return result

        flow = await self._run(work)
        self._broadcast()
        return flow

    # --- records ----------------------------------------------------------------------------

    async def create_flow(self, new: NewFlow) -> tuple[FlowStatus, bool]:
        def work(conn: sqlite3.Connection) -> tuple[FlowStatus, bool]:
            with _write(conn):
                now = _ts(utcnow())
                created = conn.execute(
                    "INSERT INTO flows (id, flow, input, state, version, parent_id, created_at, "
                    "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                    (new.id, new.flow, new.input, new.state, new.version, new.parent_id, now, now),
                ).rowcount
                flow = _flow(conn, new.id)
                assert flow is not None
                return flow, created == 1

        flow, created = await self._run(work)
        if created:
            self._broadcast()
        return flow, created

    async def get_flow(self, flow_id: str) -> FlowStatus | None:
        return await self._run(lambda conn: _flow(conn, flow_id))

    async def list_flows(
        self,
        *,
        state: FlowState | None = None,
        flow: str | None = None,
        parent_id: str | None = None,
        limit: int = 100,
    ) -> list[FlowStatus]:
        clauses, params = [], []
        for column, value in (("state", state), ("flow", flow), ("parent_id", parent_id)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT {_FLOW_COLUMNS} FROM flows {where} ORDER BY created_at DESC, id DESC LIMIT ?"

        def work(conn: sqlite3.Connection) -> list[FlowStatus]:
            return [_flow_row(row) for row in conn.execute(sql, (*params, limit))]

        return await self._run(work)

    async def load_steps(self, flow_id: str) -> list[StepRecord]:
        return await self._run(lambda conn: _steps(conn, flow_id))

    # --- signals ----------------------------------------------------------------------------

    async def send_signal(
        self, flow_id: str, name: str, payload: str, signal_id: str | None = None
    ) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            with _write(conn):
                cursor = conn.execute(
                    "INSERT INTO signals (flow_id, name, signal_id, payload, sent_at) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (flow_id, name, signal_id, payload, _ts(utcnow())),
                )
                if cursor.rowcount != 1:
                    return False
                _wake(conn, flow_id)
                return True

        sent = await self._run(work)
        if sent:
            self._broadcast()
        return sent

    async def next_signal(self, flow_id: str, name: str) -> SignalRecord | None:
        def work(conn: sqlite3.Connection) -> SignalRecord | None:
            row = conn.execute(
                "SELECT seq, payload, signal_id, sent_at FROM signals WHERE flow_id = ? "
                "AND name = ? AND consumed_at IS NULL ORDER BY seq LIMIT 1",
                (flow_id, name),
            ).fetchone()
            if row is None:
                return None
            return SignalRecord(row[0], flow_id, name, row[1], row[2], _dt(row[3]) or utcnow())

        return await self._run(work)

    # --- control ----------------------------------------------------------------------------

    async def request_cancel(self, flow_id: str) -> FlowStatus | None:
        def work(conn: sqlite3.Connection) -> FlowStatus | None:
            with _write(conn):
                flow = _flow(conn, flow_id)
                if flow is None or flow.is_terminal:
                    return flow
                now = utcnow()
                dead = flow.lease_expires_at is not None and flow.lease_expires_at < now
                if flow.state in ("pending", "suspended") or (flow.state == "running" and dead):
                    conn.execute(
                        "UPDATE flows SET state = 'cancelled', waiting_for = NULL, wake_at = NULL, "
                        "lease_owner = NULL, lease_expires_at = NULL, updated_at = ? WHERE id = ?",
                        (_ts(now), flow_id),
                    )
                    if flow.parent_id:
                        _wake(conn, flow.parent_id)
                else:
                    conn.execute(
                        "UPDATE flows SET cancel_requested = 1, updated_at = ? WHERE id = ?",
                        (_ts(now), flow_id),
                    )
                return _flow(conn, flow_id)

        flow = await self._run(work)
        self._broadcast()
        return flow

    async def claim_flows(
        self, *, owner: str, version: str | None, lease_seconds: float, limit: int
    ) -> Claimed:
        version_filter = (
            "version IS NULL" if version is None else "(version IS NULL OR version = :v)"
        )

        def work(conn: sqlite3.Connection) -> Claimed:
            now = utcnow()
            params: dict[str, Any] = {"now": _ts(now), "v": version, "limit": limit}
            with _write(conn):
                ids = [
                    row[0]
                    for row in conn.execute(
                        f"SELECT id FROM flows WHERE {_RUNNABLE} AND {version_filter} "
                        "ORDER BY updated_at LIMIT :limit",
                        params,
                    )
                ]
                expires = now + timedelta(seconds=lease_seconds)
                claimed = []
                for flow_id in ids:
                    conn.execute(
                        "UPDATE flows SET state = 'running', epoch = epoch + 1, lease_owner = ?, "
                        "lease_expires_at = ?, updated_at = ? WHERE id = ?",
                        (owner, _ts(expires), _ts(now), flow_id),
                    )
                    flow = _flow(conn, flow_id)
                    assert flow is not None
                    claimed.append((flow, Lease(flow_id, flow.epoch, owner, expires)))
                row = conn.execute(
                    "SELECT MIN(t) FROM (SELECT MIN(wake_at) AS t FROM flows WHERE "
                    f"state = 'suspended' AND wake_at IS NOT NULL AND {version_filter} "
                    "UNION ALL SELECT MIN(lease_expires_at) FROM flows WHERE state = 'running' "
                    f"AND lease_expires_at IS NOT NULL AND {version_filter})",
                    params,
                ).fetchone()
            return Claimed(claimed, _dt(row[0]) if row else None)

        return await self._run(work)

    async def renew_leases(
        self, *, owner: str, leases: Sequence[Lease], lease_seconds: float
    ) -> Renewal:
        def work(conn: sqlite3.Connection) -> Renewal:
            renewal = Renewal()
            expires = _ts(utcnow() + timedelta(seconds=lease_seconds))
            with _write(conn):
                for lease in leases:
                    row = conn.execute(
                        "UPDATE flows SET lease_expires_at = ? WHERE id = ? AND epoch = ? "
                        "AND state = 'running' RETURNING cancel_requested",
                        (expires, lease.flow_id, lease.epoch),
                    ).fetchone()
                    if row is None:
                        renewal.lost.add(lease.flow_id)
                    elif row[0]:
                        renewal.cancel_requested.add(lease.flow_id)
            return renewal

        return await self._run(work)


# --- helpers (run on the store's thread) ------------------------------------------------------


class _write:
    """A write transaction holding SQLite's write lock from the start (no upgrade deadlocks)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")  # on SQLITE_BUSY nothing has started
        return self.conn

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    return code in (5, 6) or "database is locked" in str(exc)


def _migrate(conn: sqlite3.Connection) -> None:
    with _write(conn):
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


def _refuse(conn: sqlite3.Connection, flow_id: str, epoch: int) -> None:
    flow = _flow(conn, flow_id)
    if flow is not None and flow.epoch == epoch and flow.cancel_requested:
        raise CancelRequestedError(f"flow {flow_id} is being cancelled")
    raise FencedError(f"flow {flow_id} is held by another executor (epoch {epoch} is stale)")


def _wake(conn: sqlite3.Connection, flow_id: str) -> None:
    conn.execute(
        "UPDATE flows SET events = events + 1, "
        "wake_at = CASE WHEN state = 'suspended' THEN NULL ELSE wake_at END, "
        "state = CASE WHEN state = 'suspended' THEN 'pending' ELSE state END, "
        "updated_at = ? WHERE id = ?",
        (_ts(utcnow()), flow_id),
    )


def _flow(conn: sqlite3.Connection, flow_id: str) -> FlowStatus | None:
    row = conn.execute(f"SELECT {_FLOW_COLUMNS} FROM flows WHERE id = ?", (flow_id,)).fetchone()
    return _flow_row(row) if row else None


def _flow_row(row: Sequence[Any]) -> FlowStatus:
    return FlowStatus(
        id=row[0],
        flow=row[1],
        input=row[2],
        state=row[3],
        version=row[4],
        parent_id=row[5],
        result=row[6],
        error=error_from_json(row[7]),
        waiting_for=reason_from_json(row[8]),
        wake_at=_dt(row[9]),
        attempts=row[10],
        epoch=row[11],
        lease_owner=row[12],
        lease_expires_at=_dt(row[13]),
        cancel_requested=bool(row[14]),
        events=row[15],
        created_at=_dt(row[16]) or utcnow(),
        updated_at=_dt(row[17]) or utcnow(),
    )


def _steps(conn: sqlite3.Connection, flow_id: str) -> list[StepRecord]:
    rows = conn.execute(f"SELECT {_STEP_COLUMNS} FROM steps WHERE flow_id = ?", (flow_id,))
    steps = [
        StepRecord(
            key=r[0],
            name=r[1],
            kind=r[2],
            state=r[3],
            attempts=r[4],
            result=r[5],
            error=error_from_json(r[6]),
            started_at=_dt(r[7]),
            completed_at=_dt(r[8]),
            fire_at=_dt(r[9]),
            flow_attempt=r[10],
            args_hash=r[11],
        )
        for r in rows
    ]
    steps.sort(key=lambda s: key_tuple(s.key))
    return steps


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _dt(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None
