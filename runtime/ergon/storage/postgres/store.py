"""`PostgresStore`: flows, checkpoints and signals in Postgres, through asyncpg.

Round trips. A step checkpoint is one statement (one round trip, autocommit): an upsert whose
`SELECT ... WHERE EXISTS` holds the epoch fence, with the signal it consumes marked in the same
statement through a CTE. Only a refused checkpoint costs a second query, to tell a fenced
executor from a cancelled flow. Recorded steps load in one query. `open_flow` is one statement
for a new flow and two for a resumed one (take over, then read the steps: the read must come
after the take-over so that no checkpoint of the fenced executor can slip in unseen). Every
other operation is one statement; state changes that others may wait for carry their
`pg_notify` in that statement, so it is sent exactly when the change commits.

Payloads are TEXT, not JSONB, on purpose: they are JSON text produced by pydantic and read back
byte for byte (JSONB would re-serialize them, reordering keys and dropping duplicates, and would
parse every checkpoint on the hot path for nothing; the store never looks inside a payload).
`result::jsonb` works in ad-hoc queries all the same. Times are `timestamptz`, from the server's
clock (`now()`), so leases and due timers are judged by one clock whatever the workers' clocks.

Durability: a call returns after Postgres committed it, at the server's `synchronous_commit`
(default `on`: flushed to the WAL on disk). Isolation is READ COMMITTED; the statements lock the
rows they decide on (`FOR SHARE` fences, `FOR UPDATE SKIP LOCKED` claims), so concurrent
executors and workers serialize per flow without blocking each other across flows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from ergon.core.errors import FencedError, StoreError
from ergon.core.records import (
    TERMINAL_STATES,
    FlowEnd,
    FlowState,
    FlowStatus,
    Lease,
    NewFlow,
    OpenedFlow,
    QueueDepth,
    SignalRecord,
    StepRecord,
)
from ergon.core.store import Claimed, Notifier, Renewal
from ergon.storage import rows, transitions
from ergon.storage.base import StoreLifecycle
from ergon.storage.postgres.connection import Connections, Listener, split_dsn
from ergon.storage.postgres.schema import check_role_name, check_schema_name, migrate, statements

DEFAULT_SCHEMA = "ergon"


class PostgresStore(StoreLifecycle):
    """A `Store` in a Postgres database (tables in `schema`, created on first use).

    `dsn` is a `postgresql://user:password@host:port/database` URL; its query may name the
    schema (`?schema=orders`), other query options go to asyncpg. Nothing connects until the
    first call. A server that cannot be reached is a `StoreError` at once, except that a step
    checkpoint or the end of an execution waits up to `outage_grace` seconds for a server that
    was reachable before (a restart), rather than make the step run again.

    `migrate_as` names a role the schema's migrations run as (`SET ROLE`): an administrator's
    connection (a member of that role) then creates tables the role owns, as for a tenant's
    schema, owned by a role no login role can become (the tenant's login role gets only the
    privileges to read and write rows).
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        migrate_as: str | None = None,
        max_connections: int = 10,
        connect_timeout: float = 10.0,
        command_timeout: float | None = 60.0,
        outage_grace: float = 10.0,
    ) -> None:
        if not isinstance(dsn, str) or not dsn.startswith(("postgres://", "postgresql://")):
            raise ValueError(f"PostgresStore needs a postgresql:// URL, got {dsn!r}")
        base, url_schema = split_dsn(dsn)
        self.schema = check_schema_name(schema or url_schema or DEFAULT_SCHEMA)
        self._sql = statements(self.schema)
        self._channel = f"ergon.{self.schema}"
        self._db = Connections(
            base,
            schema=self.schema,
            migrate_as=check_role_name(migrate_as) if migrate_as is not None else None,
            max_size=max_connections,
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
            outage_grace=outage_grace,
        )
        self._notifier = Notifier()
        self._listener = Listener(self._db, self._channel, self._notifier)

    def __repr__(self) -> str:
        return f"PostgresStore({self._db.where}, schema={self.schema!r})"

    async def notifier(self) -> Notifier:
        await self._listener.start()
        return self._notifier

    async def close(self) -> None:
        await self._listener.close()
        await self._db.close()

    @staticmethod
    async def migrate_schema(conn: asyncpg.Connection, schema: str) -> int:
        """Bring `schema` up to date on the caller's own connection, inside its transaction if
        one is open (as the role the connection is set to); the number of migrations applied.
        What a store does on first use, for a caller that must migrate as part of a transaction
        of its own (the operator moving a tenant's schema)."""
        return await migrate(conn, check_schema_name(schema))

    # --- executing ------------------------------------------------------------------------

    async def open_flow(self, new: NewFlow, *, owner: str) -> OpenedFlow:
        sql = self._sql

        async def work(conn: asyncpg.Connection) -> OpenedFlow:
            row = await conn.fetchrow(
                sql.open_flow,
                new.id,
                new.flow,
                new.input,
                new.version,
                new.parent_id,
                owner,
                new.origin,
            )
            if row is None:
                flow = _flow_or_none(await conn.fetchrow(sql.get_flow, new.id))
                if flow is None:
                    raise StoreError(f"flow {new.id} vanished while being opened")
                if (refusal := transitions.open_refusal(flow, new)) is not None:
                    raise refusal
                return OpenedFlow(flow, [], None)
            flow = rows.flow_from_row(row)
            steps = [] if row["inserted"] else _steps(await conn.fetch(sql.load_steps, new.id))
            return OpenedFlow(flow, steps, Lease(new.id, flow.epoch, owner, None))

        # Idempotent enough: a take-over repeated after an unseen commit moves the epoch once more.
        return await self._db.run(f"open flow {new.id}", work, idempotent=True)

    async def resume_flow(self, lease: Lease) -> OpenedFlow:
        sql = self._sql

        async def work(conn: asyncpg.Connection) -> OpenedFlow:
            flow = _flow_or_none(await conn.fetchrow(sql.get_flow, lease.flow_id))
            if flow is None or not transitions.resumable(flow, lease.epoch):
                raise FencedError.stale(lease.flow_id, lease.epoch)
            return OpenedFlow(flow, _steps(await conn.fetch(sql.load_steps, lease.flow_id)), lease)

        return await self._db.run(f"resume flow {lease.flow_id}", work, idempotent=True)

    async def save_step(
        self, flow_id: str, step: StepRecord, *, epoch: int | None, consumes: int | None = None
    ) -> None:
        sql = self._sql
        args: list[object] = [flow_id, *rows.step_values(step)]
        if epoch is not None:
            args.append(epoch)
        if consumes is not None:
            args.append(consumes)
        if consumes is None:
            query = sql.save_step_free if epoch is None else sql.save_step_held
        else:
            query = sql.save_step_free_consuming if epoch is None else sql.save_step_held_consuming

        async def work(conn: asyncpg.Connection) -> None:
            if consumes is None:
                saved = await conn.execute(query, *args) == "INSERT 0 1"
            else:
                saved = await conn.fetchval(query, *args) == 1
            if not saved and epoch is not None:
                await _refuse(conn, sql.get_flow, flow_id, epoch)

        # Idempotent: the upsert writes the same record again, the fence passes again.
        await self._db.run(
            f"checkpoint step {step.key} of flow {flow_id}",
            work,
            idempotent=True,
            ride_through=True,
        )

    async def finish_flow(self, flow_id: str, end: FlowEnd, *, epoch: int | None) -> FlowStatus:
        terminal = end.state in TERMINAL_STATES
        args = (
            flow_id,
            end.state,
            end.result,
            rows.error_to_json(end.error),
            None if terminal else rows.reason_to_json(end.waiting_for),
            end.wake_at if end.state == "suspended" else None,
            end.attempts,
            end.seen_events,
            terminal,
            epoch,
            self._channel,
        )
        sql = self._sql

        async def work(conn: asyncpg.Connection) -> FlowStatus:
            row = await conn.fetchrow(sql.finish_flow, *args)
            if row is None:
                flow = _flow_or_none(await conn.fetchrow(sql.get_flow, flow_id))
                raise transitions.end_refusal(flow, flow_id, epoch)
            return rows.flow_from_row(row)

        # Idempotent enough: the same end recorded again (a parent may be woken twice).
        flow = await self._db.run(
            f"finish flow {flow_id}", work, idempotent=True, ride_through=True
        )
        self._notifier.notify()
        return flow

    # --- records ----------------------------------------------------------------------------

    async def create_flow(self, new: NewFlow) -> tuple[FlowStatus, bool]:
        sql = self._sql
        args = (
            new.id,
            new.flow,
            new.input,
            new.state,
            new.version,
            new.parent_id,
            self._channel,
            new.origin,
        )

        async def work(conn: asyncpg.Connection) -> tuple[FlowStatus, bool]:
            row = await conn.fetchrow(sql.create_flow, *args)
            if row is not None:
                return rows.flow_from_row(row), True
            existing = _flow_or_none(await conn.fetchrow(sql.get_flow, new.id))
            if existing is None:
                raise StoreError(f"flow {new.id} neither created nor found")
            return existing, False

        flow, created = await self._db.run(f"create flow {new.id}", work, idempotent=False)
        if created:
            self._notifier.notify()
        return flow, created

    async def get_flow(self, flow_id: str) -> FlowStatus | None:
        query = self._sql.get_flow

        async def work(conn: asyncpg.Connection) -> FlowStatus | None:
            return _flow_or_none(await conn.fetchrow(query, flow_id))

        return await self._db.run(f"read flow {flow_id}", work, idempotent=True)

    async def list_flows(
        self,
        *,
        state: FlowState | None = None,
        flow: str | None = None,
        parent_id: str | None = None,
        origin_prefix: str | None = None,
        limit: int = 100,
    ) -> list[FlowStatus]:
        # One statement text per combination of filters (each prepared once), so every
        # combination gets a plan that uses its index.
        clauses: list[str] = []
        args: list[object] = []
        for column, value in (("state", state), ("flow", flow), ("parent_id", parent_id)):
            if value is not None:
                args.append(value)
                clauses.append(f"{column} = ${len(args)}")
        if origin_prefix is not None:
            # Mirrors `transitions.origin_matches`.
            args.append(origin_prefix)
            n = len(args)
            clauses.append(f"origin IS NOT NULL AND left(origin, length(${n}::text)) = ${n}::text")
        args.append(limit)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        order = f"ORDER BY created_at DESC, id DESC LIMIT ${len(args)}"
        query = f"{self._sql.list_flows}{where} {order}"

        async def work(conn: asyncpg.Connection) -> list[FlowStatus]:
            return [rows.flow_from_row(row) for row in await conn.fetch(query, *args)]

        return await self._db.run("list flows", work, idempotent=True)

    async def prune_flows(
        self,
        *,
        finished_before: datetime,
        origin_prefix: str | None = None,
        ids: Sequence[str] | None = None,
        dry_run: bool = False,
        limit: int = 1000,
    ) -> list[str]:
        query = self._sql.prune_flows_dry if dry_run else self._sql.prune_flows
        args = (
            finished_before,
            origin_prefix,
            None if ids is None else list(dict.fromkeys(ids)),
            max(0, limit),
        )

        async def work(conn: asyncpg.Connection) -> list[str]:
            return [row[0] for row in await conn.fetch(query, *args)]

        # Idempotent: a repeated prune finds what the first one left.
        return await self._db.run("prune flows", work, idempotent=True)

    async def load_steps(self, flow_id: str) -> list[StepRecord]:
        query = self._sql.load_steps

        async def work(conn: asyncpg.Connection) -> list[StepRecord]:
            return _steps(await conn.fetch(query, flow_id))

        return await self._db.run(f"load the steps of flow {flow_id}", work, idempotent=True)

    async def queue_depth(self, *, version: str | None) -> QueueDepth:
        """One aggregate statement over the unfinished flows (found through the state index),
        judged by the server's clock (`now()`) as `claim_flows` judges it."""
        query = self._sql.queue_depth

        async def work(conn: asyncpg.Connection) -> QueueDepth:
            row = await conn.fetchrow(query, version)
            assert row is not None  # an aggregate without GROUP BY always returns one row
            return QueueDepth(runnable=row[0], running=row[1], waiting=row[2], next_wake_at=row[3])

        return await self._db.run("read the queue depth", work, idempotent=True)

    # --- signals ----------------------------------------------------------------------------

    async def send_signal(
        self, flow_id: str, name: str, payload: str, signal_id: str | None = None
    ) -> bool:
        args = (flow_id, name, signal_id, payload, self._channel)
        query = self._sql.send_signal

        async def work(conn: asyncpg.Connection) -> bool:
            return await conn.fetchrow(query, *args) is not None

        # Not retried: without a signal_id a retry after an unseen commit would queue it twice.
        sent = await self._db.run(
            f"send signal {name!r} to flow {flow_id}", work, idempotent=signal_id is not None
        )
        if sent:
            self._notifier.notify()
        return sent

    async def next_signal(self, flow_id: str, name: str) -> SignalRecord | None:
        query = self._sql.next_signal

        async def work(conn: asyncpg.Connection) -> SignalRecord | None:
            row = await conn.fetchrow(query, flow_id, name)
            if row is None:
                return None
            return SignalRecord(row[0], flow_id, name, row[1], row[2], row[3])

        return await self._db.run(f"read signal {name!r} of flow {flow_id}", work, idempotent=True)

    # --- control ----------------------------------------------------------------------------

    async def request_cancel(self, flow_id: str) -> FlowStatus | None:
        sql, channel = self._sql, self._channel

        async def work(conn: asyncpg.Connection) -> FlowStatus | None:
            row = await conn.fetchrow(sql.request_cancel, flow_id, channel)
            if row is not None:
                return rows.flow_from_row(row)
            return _flow_or_none(await conn.fetchrow(sql.get_flow, flow_id))

        flow = await self._db.run(f"cancel flow {flow_id}", work, idempotent=True)
        self._notifier.notify()
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
        only_version = exclusive and version is not None
        query = self._sql.claim_flows_exclusive if only_version else self._sql.claim_flows

        async def work(conn: asyncpg.Connection) -> Claimed:
            found = await conn.fetch(query, owner, float(lease_seconds), limit, version)
            claimed = []
            for row in found:
                if row[0] is None:  # the one row of an empty claim: only `upcoming`
                    continue
                flow = rows.flow_from_row(row)
                claimed.append((flow, Lease(flow.id, flow.epoch, owner, flow.lease_expires_at)))
            next_wake: datetime | None = found[0][-1] if found else None
            return Claimed(claimed, next_wake)

        # Not retried: a claim whose commit went unseen holds its flows until the leases expire.
        return await self._db.run("claim flows", work, idempotent=False)

    async def renew_leases(
        self, *, owner: str, leases: Sequence[Lease], lease_seconds: float
    ) -> Renewal:
        if not leases:
            return Renewal()
        ids = [lease.flow_id for lease in leases]
        epochs = [lease.epoch for lease in leases]
        query = self._sql.renew_leases

        async def work(conn: asyncpg.Connection) -> Renewal:
            renewed = await conn.fetch(query, ids, epochs, float(lease_seconds))
            held = {row[0] for row in renewed}
            return Renewal(
                lost=set(ids) - held, cancel_requested={row[0] for row in renewed if row[1]}
            )

        return await self._db.run("renew leases", work, idempotent=True)


# --- rows ----------------------------------------------------------------------------------


async def _refuse(conn: asyncpg.Connection, get_flow: str, flow_id: str, epoch: int) -> None:
    """Why a fenced checkpoint was refused (the second query, only on refusal)."""
    flow = _flow_or_none(await conn.fetchrow(get_flow, flow_id))
    raise transitions.checkpoint_refusal(flow, flow_id, epoch)


def _flow_or_none(row: asyncpg.Record | None) -> FlowStatus | None:
    return None if row is None else rows.flow_from_row(row)


def _steps(records: Sequence[asyncpg.Record]) -> list[StepRecord]:
    return rows.steps_from_rows(records)
