"""`SqliteStore`: the embedded default, one SQLite file in WAL mode.

Durability: `synchronous=FULL` by default, so a checkpoint that returned survives power loss.
`SqliteStore(path, synchronous="normal")` (URL `sqlite:///x.db?synchronous=normal`) trades that
for speed: commits survive a crash of the process but the last ones may be lost on power loss.

State changes read the flow, apply the transition from `ergon.storage.transitions` and write
the flow back, inside one write transaction (`database.write`), so the rules are the ones every
store shares. The step checkpoint, the hot path, stays one guarded upsert. Connections, locking
and errors: `ergon.storage.sqlite.database`.

Group commit: what executions write as they run -- `open_flow`, `save_step` (with the signal it
consumes), `finish_flow` and `create_flow` (child flows) -- goes through `Database.commit`, which
commits the records of concurrent executions in one transaction (one fsync), each record in a
savepoint of its own so that a fenced or refused record fails only its caller. Workers' and
clients' writes (claims, renewals, signals, cancellations, pruning) stay one transaction each
(`Database.run`): they are rare next to checkpoints and some are large.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ergon.core.errors import FencedError
from ergon.core.records import (
    FlowEnd,
    FlowState,
    FlowStatus,
    Lease,
    NewFlow,
    OpenedFlow,
    QueueDepth,
    SignalRecord,
    StepRecord,
    utcnow,
)
from ergon.core.store import Claimed, Notifier, Renewal
from ergon.storage import rows, transitions
from ergon.storage.base import StoreLifecycle
from ergon.storage.sqlite.database import Database, Synchronous, dt, ts, write

_UPSERT_STEP = (
    f"INSERT INTO steps (flow_id, {rows.STEP_COLUMN_LIST}) "
    "SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? {guard} "
    "ON CONFLICT (flow_id, key) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in rows.STEP_COLUMNS[1:])
)
# Mirrors `transitions.accepts_checkpoint` (accepted: this epoch, running, no cancel request).
_GUARDED_UPSERT = _UPSERT_STEP.format(
    guard="WHERE EXISTS (SELECT 1 FROM flows WHERE id = ? AND epoch = ? AND state = 'running' "
    "AND cancel_requested = 0)"
)
_PLAIN_UPSERT = _UPSERT_STEP.format(guard="WHERE true")
_INSERT_FLOW = (
    f"INSERT INTO flows ({rows.FLOW_COLUMN_LIST}) "
    f"VALUES ({', '.join(':' + c for c in rows.FLOW_COLUMNS)}) ON CONFLICT (id) DO NOTHING"
)
_IMMUTABLE = {"id", "flow", "input", "version", "parent_id", "created_at", "origin"}
_PUT_FLOW = (
    "UPDATE flows SET "
    + ", ".join(f"{c} = :{c}" for c in rows.FLOW_COLUMNS if c not in _IMMUTABLE)
    + " WHERE id = :id"
)
# Mirrors `transitions.origin_matches` (two parameters: the prefix twice; no LIKE, whose
# wildcards a prefix would have to escape).
_ORIGIN_MATCHES = "(origin IS NOT NULL AND substr(origin, 1, length(?)) = ?)"
# Mirrors `transitions.prunable` (one parameter: the cutoff) and the rule that a child whose
# parent has not ended stays.
_PRUNABLE = (
    "state IN ('completed', 'failed', 'cancelled') AND updated_at < ? AND (parent_id IS NULL "
    "OR NOT EXISTS (SELECT 1 FROM flows p WHERE p.id = f.parent_id "
    "AND p.state NOT IN ('completed', 'failed', 'cancelled')))"
)
_MAX_IDS = 500  # bound parameters per statement, well under SQLite's limit
# Mirrors `transitions.is_runnable` (the index picks the candidates).
_RUNNABLE = (
    "(state = 'pending' OR (state = 'suspended' AND wake_at <= :now) "
    "OR (state = 'running' AND lease_expires_at < :now))"
)

# Mirrors `transitions.depth` (and `depth_bucket`) over the unfinished flows of one version
# (`version IS :v` matches NULL to NULL); `next_wake_at` from the flows not runnable now.
_QUEUE_DEPTH = (
    f"SELECT COUNT(CASE WHEN {_RUNNABLE} THEN 1 END), "
    "COUNT(CASE WHEN state = 'running' AND (lease_expires_at IS NULL "
    "OR lease_expires_at >= :now) THEN 1 END), "
    "COUNT(CASE WHEN state = 'suspended' AND (wake_at IS NULL OR wake_at > :now) THEN 1 END), "
    "MIN(CASE WHEN state = 'suspended' AND wake_at > :now THEN wake_at "
    "WHEN state = 'running' AND lease_expires_at >= :now THEN lease_expires_at END) "
    "FROM flows WHERE state IN ('pending', 'running', 'suspended') AND version IS :v"
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
        self._db = Database(self.path, synchronous=synchronous, busy_timeout=busy_timeout)

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r}, synchronous={self.synchronous!r})"

    async def close(self) -> None:
        await self._db.close()

    async def notifier(self) -> Notifier:
        return await self._db.listen()

    # --- executing ------------------------------------------------------------------------

    async def open_flow(self, new: NewFlow, *, owner: str) -> OpenedFlow:
        def work(conn: sqlite3.Connection) -> OpenedFlow:  # in a write transaction (`commit`)
            now = utcnow()
            flow = _flow(conn, new.id)
            if flow is None:
                flow = transitions.created(new, "running", now)
                conn.execute(_INSERT_FLOW, rows.flow_values(flow, ts))
            if (refusal := transitions.open_refusal(flow, new)) is not None:
                raise refusal
            if flow.is_terminal:
                return OpenedFlow(flow, [], None)
            flow = _put(conn, transitions.take_over(flow, owner, now))
            lease = Lease(new.id, flow.epoch, owner, None)
            return OpenedFlow(flow, _steps(conn, new.id), lease)

        return await self._db.commit(work)

    async def resume_flow(self, lease: Lease) -> OpenedFlow:
        def work(conn: sqlite3.Connection) -> OpenedFlow:
            flow = _flow(conn, lease.flow_id)
            if flow is None or not transitions.resumable(flow, lease.epoch):
                raise FencedError.stale(lease.flow_id, lease.epoch)
            return OpenedFlow(flow, _steps(conn, lease.flow_id), lease)

        return await self._db.run(work)

    async def save_step(
        self, flow_id: str, step: StepRecord, *, epoch: int | None, consumes: int | None = None
    ) -> None:
        values = (flow_id, *rows.step_values(step, ts))

        def work(conn: sqlite3.Connection) -> None:  # in a write transaction (`commit`)
            if epoch is not None:
                if conn.execute(_GUARDED_UPSERT, (*values, flow_id, epoch)).rowcount != 1:
                    _refuse(conn, flow_id, epoch)
            else:
                conn.execute(_PLAIN_UPSERT, values)
            if consumes is not None:
                conn.execute(
                    "UPDATE signals SET consumed_at = ? WHERE seq = ? AND consumed_at IS NULL",
                    (ts(utcnow()), consumes),
                )

        # Without a signal to consume, the checkpoint is one statement (`single`): no savepoint.
        await self._db.commit(work, single=consumes is None)

    async def finish_flow(self, flow_id: str, end: FlowEnd, *, epoch: int | None) -> FlowStatus:
        def work(conn: sqlite3.Connection) -> FlowStatus:  # in a write transaction (`commit`)
            flow = _flow(conn, flow_id)
            if flow is None or not transitions.accepts_end(flow, epoch):
                raise transitions.end_refusal(flow, flow_id, epoch)
            now = utcnow()
            flow = _put(conn, transitions.finish(flow, end, now))
            _wake(conn, transitions.parent_to_wake(flow), now)
            return flow

        flow = await self._db.commit(work)
        self._db.broadcast()  # after the commit: whoever it wakes reads the new state
        return flow

    # --- records ----------------------------------------------------------------------------

    async def create_flow(self, new: NewFlow) -> tuple[FlowStatus, bool]:
        def work(conn: sqlite3.Connection) -> tuple[FlowStatus, bool]:  # in a transaction
            flow = transitions.created(new, new.state, utcnow())
            if conn.execute(_INSERT_FLOW, rows.flow_values(flow, ts)).rowcount == 1:
                return flow, True
            existing = _flow(conn, new.id)
            assert existing is not None
            return existing, False

        flow, created = await self._db.commit(work, probe=False)
        if created:
            self._db.broadcast()
        return flow, created

    async def get_flow(self, flow_id: str) -> FlowStatus | None:
        return await self._db.run(lambda conn: _flow(conn, flow_id))

    async def list_flows(
        self,
        *,
        state: FlowState | None = None,
        flow: str | None = None,
        parent_id: str | None = None,
        origin_prefix: str | None = None,
        limit: int = 100,
    ) -> list[FlowStatus]:
        clauses, params = [], []
        for column, value in (("state", state), ("flow", flow), ("parent_id", parent_id)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if origin_prefix is not None:
            clauses.append(_ORIGIN_MATCHES)
            params += [origin_prefix, origin_prefix]
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = (
            f"SELECT {rows.FLOW_COLUMN_LIST} FROM flows {where} "
            "ORDER BY created_at DESC, id DESC LIMIT ?"
        )

        def work(conn: sqlite3.Connection) -> list[FlowStatus]:
            return [rows.flow_from_row(row, dt) for row in conn.execute(sql, (*params, limit))]

        return await self._db.run(work)

    async def prune_flows(
        self,
        *,
        finished_before: datetime,
        origin_prefix: str | None = None,
        ids: Sequence[str] | None = None,
        dry_run: bool = False,
        limit: int = 1000,
    ) -> list[str]:
        clauses = [_PRUNABLE]
        params: list[object] = [ts(finished_before)]
        if origin_prefix is not None:
            clauses.append(_ORIGIN_MATCHES)
            params += [origin_prefix, origin_prefix]
        where = " AND ".join(clauses)
        wanted = None if ids is None else list(dict.fromkeys(ids))
        # With ids: one query per chunk of ids (bound parameters are limited), oldest first
        # within each chunk.
        chunks: list[list[str] | None] = [None] if wanted is None else [*_chunks(wanted)]

        def work(conn: sqlite3.Connection) -> list[str]:
            doomed: list[str] = []
            with write(conn):
                for chunk in chunks:
                    left = max(0, limit) - len(doomed)
                    if left <= 0:
                        break
                    sql = f"SELECT id FROM flows f WHERE {where}"
                    args = list(params)
                    if chunk is not None:
                        sql += f" AND id IN ({', '.join('?' * len(chunk))})"
                        args += chunk
                    sql += " ORDER BY updated_at, id LIMIT ?"
                    doomed += [row[0] for row in conn.execute(sql, (*args, left))]
                if not dry_run:
                    for part in _chunks(doomed):
                        marks = ", ".join("?" * len(part))
                        conn.execute(f"DELETE FROM steps WHERE flow_id IN ({marks})", part)
                        conn.execute(f"DELETE FROM signals WHERE flow_id IN ({marks})", part)
                        conn.execute(f"DELETE FROM flows WHERE id IN ({marks})", part)
            return doomed

        return await self._db.run(work)

    async def load_steps(self, flow_id: str) -> list[StepRecord]:
        return await self._db.run(lambda conn: _steps(conn, flow_id))

    async def queue_depth(self, *, version: str | None) -> QueueDepth:
        """One aggregate query over the unfinished flows (the state index finds them; ended
        flows are never read), judged by this process's clock as `claim_flows` judges it."""

        def work(conn: sqlite3.Connection) -> QueueDepth:
            row = conn.execute(_QUEUE_DEPTH, {"now": ts(utcnow()), "v": version}).fetchone()
            return QueueDepth(
                runnable=row[0], running=row[1], waiting=row[2], next_wake_at=dt(row[3])
            )

        return await self._db.run(work)

    # --- signals ----------------------------------------------------------------------------

    async def send_signal(
        self, flow_id: str, name: str, payload: str, signal_id: str | None = None
    ) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            with write(conn):
                now = utcnow()
                cursor = conn.execute(
                    "INSERT INTO signals (flow_id, name, signal_id, payload, sent_at) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (flow_id, name, signal_id, payload, ts(now)),
                )
                if cursor.rowcount != 1:
                    return False
                _wake(conn, flow_id, now)
                return True

        sent = await self._db.run(work)
        if sent:
            self._db.broadcast()
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
            return SignalRecord(row[0], flow_id, name, row[1], row[2], dt(row[3]) or utcnow())

        return await self._db.run(work)

    # --- control ----------------------------------------------------------------------------

    async def request_cancel(self, flow_id: str) -> FlowStatus | None:
        def work(conn: sqlite3.Connection) -> FlowStatus | None:
            with write(conn):
                flow = _flow(conn, flow_id)
                if flow is None or flow.is_terminal:
                    return flow
                now = utcnow()
                flow = _put(conn, transitions.cancel(flow, now))
                _wake(conn, transitions.parent_to_wake(flow), now)
                return flow

        flow = await self._db.run(work)
        self._db.broadcast()
        return flow

    async def claim_flows(
        self,
        *,
        owner: str,
        version: str | None,
        lease_seconds: float,
        limit: int,
        exclusive: bool = False,
    ) -> Claimed:
        # Mirrors `transitions.may_claim`.
        if version is None:
            version_filter = "version IS NULL"
        elif exclusive:
            version_filter = "version = :v"
        else:
            version_filter = "(version IS NULL OR version = :v)"

        def work(conn: sqlite3.Connection) -> Claimed:
            now = utcnow()
            params: dict[str, Any] = {"now": ts(now), "v": version, "limit": limit}
            expires = now + timedelta(seconds=lease_seconds)
            claimed = []
            with write(conn):
                due = conn.execute(
                    f"SELECT {rows.FLOW_COLUMN_LIST} FROM flows WHERE {_RUNNABLE} "
                    f"AND {version_filter} ORDER BY updated_at LIMIT :limit",
                    params,
                ).fetchall()
                for row in due:
                    flow = _put(
                        conn, transitions.claim(rows.flow_from_row(row, dt), owner, expires, now)
                    )
                    claimed.append((flow, Lease(flow.id, flow.epoch, owner, expires)))
                row = conn.execute(
                    "SELECT MIN(t) FROM (SELECT MIN(wake_at) AS t FROM flows WHERE "
                    f"state = 'suspended' AND wake_at IS NOT NULL AND {version_filter} "
                    "UNION ALL SELECT MIN(lease_expires_at) FROM flows WHERE state = 'running' "
                    f"AND lease_expires_at IS NOT NULL AND {version_filter})",
                    params,
                ).fetchone()
            return Claimed(claimed, dt(row[0]) if row else None)

        return await self._db.run(work)

    async def renew_leases(
        self, *, owner: str, leases: Sequence[Lease], lease_seconds: float
    ) -> Renewal:
        def work(conn: sqlite3.Connection) -> Renewal:
            renewal = Renewal()
            expires = ts(utcnow() + timedelta(seconds=lease_seconds))
            with write(conn):
                for lease in leases:
                    # Mirrors `transitions.holds`.
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

        return await self._db.run(work)


# --- helpers (run on the store's thread) ------------------------------------------------------


def _flow(conn: sqlite3.Connection, flow_id: str) -> FlowStatus | None:
    row = conn.execute(
        f"SELECT {rows.FLOW_COLUMN_LIST} FROM flows WHERE id = ?", (flow_id,)
    ).fetchone()
    return rows.flow_from_row(row, dt) if row else None


def _put(conn: sqlite3.Connection, flow: FlowStatus) -> FlowStatus:
    """Write a flow's new state (after a transition); returns it."""
    conn.execute(_PUT_FLOW, rows.flow_values(flow, ts))
    return flow


def _wake(conn: sqlite3.Connection, flow_id: str | None, now: datetime) -> None:
    flow = _flow(conn, flow_id) if flow_id is not None else None
    if flow is not None:
        _put(conn, transitions.wake(flow, now))


def _chunks(ids: list[str]) -> list[list[str]]:
    return [ids[start : start + _MAX_IDS] for start in range(0, len(ids), _MAX_IDS)]


def _refuse(conn: sqlite3.Connection, flow_id: str, epoch: int) -> None:
    raise transitions.checkpoint_refusal(_flow(conn, flow_id), flow_id, epoch)


def _steps(conn: sqlite3.Connection, flow_id: str) -> list[StepRecord]:
    cursor = conn.execute(
        f"SELECT {rows.STEP_COLUMN_LIST} FROM steps WHERE flow_id = ?", (flow_id,)
    )
    return rows.steps_from_rows(cursor, dt)
