"""`RedisStore`: flows, checkpoints and signals in Redis, through redis.asyncio.

Every operation is one round trip: a Lua script for anything that reads and then writes (claims,
leases, fencing, signals, state changes -- atomic because Redis runs a script alone), a plain
HGETALL for reads. A step checkpoint is one EVALSHA that checks the epoch fence and writes the
record (and consumes its signal) together. The key layout is in `ergon.storage.redis.scripts`.
Nothing carries a TTL, so no live, suspended or finished flow ever expires.

Durability depends on the server's persistence settings; the store's guarantees (a checkpoint
that returned is never lost, a consumed signal is never delivered again, a fenced executor never
writes) assume:

* `appendonly yes` with `appendfsync always`: every script's writes are fsynced to the AOF
  before the reply. Equal to the SQL stores (SQLite `synchronous=FULL`, Postgres
  `synchronous_commit=on`).
* With `appendfsync everysec` (Redis' default when AOF is on) a crash of Redis alone loses
  nothing acknowledged, but a crash of the machine or power loss loses up to about a second of
  acknowledged writes: finished steps run again, signals may be delivered again, a flow may go
  back to an earlier state. With `appendfsync no` the kernel decides, typically ~30 s.
* Without AOF (RDB snapshots only, or no persistence) a restart of Redis loses everything since
  the last snapshot -- or everything.
* `maxmemory-policy noeviction` (or a `volatile-*` policy: no key has a TTL): an `allkeys-*`
  policy may evict live flows. The store logs a warning when it sees one.
* Replication is asynchronous: a failover to a replica can lose the last acknowledged writes.

What stays: ended flows and their checkpoints (as in the SQL stores) and the ids of delivered
signals (for idempotent sends); a consumed signal is deleted (the checkpoint that consumed it
holds its payload). Redis keeps all of it in memory: size it for the flows you keep.

Times come from the server's clock (`TIME`), so all workers judge leases by one clock. One
Redis server (with replicas or Sentinel) is supported, not Redis Cluster: scripts touch keys of
several flows (a parent, the indexes).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from ergon.core.errors import CancelRequestedError, FencedError
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
    utcnow,
)
from ergon.core.store import Claimed, Notifier, Renewal
from ergon.storage import rows, transitions
from ergon.storage.base import StoreLifecycle
from ergon.storage.redis.connection import Connection, Subscriber, split_url
from ergon.storage.redis.scripts import FLOW_FIELDS, events_channel, flow_key, steps_key

DEFAULT_PREFIX = "ergon:"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class RedisStore(StoreLifecycle):
    """A `Store` in Redis, all keys under `prefix` (several stores can share a database).

    `url` is a `redis://[:password@]host:port/db`, `rediss://…` or `unix:///path?db=n` URL; its
    query may set the prefix (`?prefix=orders:`). Nothing connects until the first call. A
    server that cannot be reached is a `StoreError` at once, except that a step checkpoint or
    the end of an execution waits up to `outage_grace` seconds for a server that was reachable
    before (a restart), rather than make the step run again.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str | None = None,
        max_connections: int = 50,
        connect_timeout: float = 10.0,
        command_timeout: float | None = 60.0,
        outage_grace: float = 10.0,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"RedisStore needs a redis://, rediss:// or unix:// URL, got {url!r}")
        base, url_prefix = split_url(url)
        self.prefix = prefix if prefix is not None else (url_prefix or DEFAULT_PREFIX)
        if not self.prefix:
            raise ValueError("the Redis key prefix cannot be empty")
        self._redis = Connection(
            base,
            prefix=self.prefix,
            max_connections=max_connections,
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
            outage_grace=outage_grace,
        )
        self._notifier = Notifier()
        self._subscriber = Subscriber(self._redis, events_channel(self.prefix), self._notifier)

    def __repr__(self) -> str:
        return f"RedisStore({self._redis.where}, prefix={self.prefix!r})"

    async def notifier(self) -> Notifier:
        await self._redis.pool()
        await self._subscriber.start()
        return self._notifier

    async def close(self) -> None:
        await self._subscriber.close()
        await self._redis.close()

    # --- executing ------------------------------------------------------------------------

    async def open_flow(self, new: NewFlow, *, owner: str) -> OpenedFlow:
        outcome, fields, steps = await self._redis.call(
            f"open flow {new.id}",
            "open_flow",
            [
                new.id,
                new.flow,
                new.input,
                new.version or "",
                new.parent_id or "",
                owner,
                new.origin or "",
            ],
            idempotent=True,  # a repeated take-over only moves the epoch once more
        )
        flow = _flow(fields)
        if outcome == "mismatch" and (refusal := transitions.open_refusal(flow, new)) is not None:
            raise refusal
        if outcome == "ended":
            return OpenedFlow(flow, [], None)
        return OpenedFlow(flow, _steps(steps), Lease(new.id, flow.epoch, owner, None))

    async def resume_flow(self, lease: Lease) -> OpenedFlow:
        found = await self._redis.call(
            f"resume flow {lease.flow_id}",
            "resume_flow",
            [lease.flow_id, lease.epoch],
            idempotent=True,
        )
        if found is None:
            raise FencedError.stale(lease.flow_id, lease.epoch)
        return OpenedFlow(_flow(found[0]), _steps(found[1]), lease)

    async def save_step(
        self, flow_id: str, step: StepRecord, *, epoch: int | None, consumes: int | None = None
    ) -> None:
        record = json.dumps(rows.step_values(step, _us)[1:], separators=(",", ":"))
        refused = await self._redis.call(
            f"checkpoint step {step.key} of flow {flow_id}",
            "save_step",
            [flow_id, step.key, record, _opt(epoch), _opt(consumes)],
            idempotent=True,  # the same record written again; the fence passes again
            ride_through=True,
        )
        if refused == 2:
            raise CancelRequestedError.requested(flow_id)
        if refused:
            raise FencedError.stale(flow_id, epoch)

    async def finish_flow(self, flow_id: str, end: FlowEnd, *, epoch: int | None) -> FlowStatus:
        terminal = end.state in TERMINAL_STATES
        reply = await self._redis.call(
            f"finish flow {flow_id}",
            "finish_flow",
            [
                flow_id,
                _opt(epoch),
                end.state,
                end.result or "",
                rows.error_to_json(end.error) or "",
                "" if terminal else (rows.reason_to_json(end.waiting_for) or ""),
                _opt(_us(end.wake_at)) if end.state == "suspended" else "",
                end.seen_events,
                _opt(end.attempts),
            ],
            idempotent=True,  # the same end recorded again (a parent may be woken twice)
            ride_through=True,
        )
        if reply[0] == 2:
            raise FencedError.missing(flow_id)
        if reply[0]:
            raise FencedError.stale(flow_id, epoch)
        self._notifier.notify()
        return _flow(reply[1])

    # --- records ----------------------------------------------------------------------------

    async def create_flow(self, new: NewFlow) -> tuple[FlowStatus, bool]:
        created, fields = await self._redis.call(
            f"create flow {new.id}",
            "create_flow",
            [
                new.id,
                new.flow,
                new.input,
                new.state,
                new.version or "",
                new.parent_id or "",
                new.origin or "",
            ],
            idempotent=False,  # a retry would report an unseen creation as "already there"
        )
        if created:
            self._notifier.notify()
        return _flow(fields), bool(created)

    async def get_flow(self, flow_id: str) -> FlowStatus | None:
        fields = await self._redis.read(
            f"read flow {flow_id}", "HGETALL", flow_key(self.prefix, flow_id)
        )
        return _flow(fields) if fields else None

    async def list_flows(
        self,
        *,
        state: FlowState | None = None,
        flow: str | None = None,
        parent_id: str | None = None,
        origin_prefix: str | None = None,
        limit: int = 100,
    ) -> list[FlowStatus]:
        found = await self._redis.call(
            "list flows",
            "list_flows",
            [state or "", flow or "", parent_id or "", max(0, limit), _prefix(origin_prefix)],
            idempotent=True,
        )
        return [_flow(fields) for fields in found]

    async def prune_flows(
        self,
        *,
        finished_before: datetime,
        origin_prefix: str | None = None,
        ids: Sequence[str] | None = None,
        dry_run: bool = False,
        limit: int = 1000,
    ) -> list[str]:
        wanted = "" if ids is None else "=" + json.dumps(list(dict.fromkeys(ids)))
        found = await self._redis.call(
            "prune flows",
            "prune_flows",
            [
                _us(finished_before),
                _prefix(origin_prefix),
                "1" if dry_run else "",
                max(0, limit),
                wanted,
            ],
            idempotent=True,  # a repeated prune finds what the first one left
        )
        return [str(flow_id) for flow_id in found]

    async def load_steps(self, flow_id: str) -> list[StepRecord]:
        fields = await self._redis.read(
            f"load the steps of flow {flow_id}", "HGETALL", steps_key(self.prefix, flow_id)
        )
        return _steps(fields)

    async def queue_depth(self, *, version: str | None) -> QueueDepth:
        """One script, judged by the server's clock (`TIME`) as `claim_flows` judges it. The
        runnable count is an index count; finding the running and waiting flows walks the
        running and suspended flows of every version (O(running + suspended flows)), since a
        flow without a lease or a wake-up time is in no per-version index."""
        runnable, running, waiting, next_wake = await self._redis.call(
            "read the queue depth", "queue_depth", [version or ""], idempotent=True
        )
        return QueueDepth(
            runnable=int(runnable),
            running=int(running),
            waiting=int(waiting),
            next_wake_at=_dt(next_wake) if next_wake else None,
        )

    # --- signals ----------------------------------------------------------------------------

    async def send_signal(
        self, flow_id: str, name: str, payload: str, signal_id: str | None = None
    ) -> bool:
        record = json.dumps([name, payload, signal_id, _us(utcnow())], separators=(",", ":"))
        seq = await self._redis.call(
            f"send signal {name!r} to flow {flow_id}",
            "send_signal",
            [flow_id, name, record, signal_id or ""],
            # Without a signal_id a retry after an unseen success would queue it twice.
            idempotent=signal_id is not None,
        )
        if seq:
            self._notifier.notify()
        return bool(seq)

    async def next_signal(self, flow_id: str, name: str) -> SignalRecord | None:
        found = await self._redis.call(
            f"read signal {name!r} of flow {flow_id}",
            "next_signal",
            [flow_id, name],
            idempotent=True,
        )
        if found is None:
            return None
        _, payload, signal_id, sent = json.loads(found[1])
        return SignalRecord(int(found[0]), flow_id, name, payload, signal_id, _dt(sent))

    # --- control ----------------------------------------------------------------------------

    async def request_cancel(self, flow_id: str) -> FlowStatus | None:
        reply = await self._redis.call(
            f"cancel flow {flow_id}", "request_cancel", [flow_id], idempotent=True
        )
        if not reply:
            return None
        self._notifier.notify()
        return _flow(reply[0])

    async def claim_flows(
        self,
        *,
        owner: str,
        version: str | None,
        lease_seconds: float,
        limit: int,
        exclusive: bool = False,
    ) -> Claimed:
        reply = await self._redis.call(
            "claim flows",
            "claim_flows",
            [
                owner,
                version or "",
                round(lease_seconds * 1e6),
                max(0, limit),
                "1" if exclusive else "",
            ],
            # A claim whose reply was lost holds its flows until the leases run out.
            idempotent=False,
        )
        claimed = []
        for fields in reply[1:]:
            flow = _flow(fields)
            claimed.append((flow, Lease(flow.id, flow.epoch, owner, flow.lease_expires_at)))
        return Claimed(claimed, _dt(int(reply[0])) if reply[0] else None)

    async def renew_leases(
        self, *, owner: str, leases: Sequence[Lease], lease_seconds: float
    ) -> Renewal:
        if not leases:
            return Renewal()
        args: list[Any] = [round(lease_seconds * 1e6)]
        for lease in leases:
            args += [lease.flow_id, lease.epoch]
        lost, cancelling = await self._redis.call(
            "renew leases", "renew_leases", args, idempotent=True
        )
        return Renewal(lost=set(lost), cancel_requested=set(cancelling))


# --- encoding ------------------------------------------------------------------------------


def _prefix(prefix: str | None) -> str:
    """An optional prefix as a script argument: '' for none, '=' before a given one (which may
    itself be empty)."""
    return "" if prefix is None else "=" + prefix


def _opt(value: object) -> object:
    return "" if value is None else value


def _us(value: datetime | None) -> int | None:
    return None if value is None else (value - _EPOCH) // _MICROSECOND


def _dt(value: int | str) -> datetime:
    return _EPOCH + timedelta(microseconds=int(value))


def _dt_or_none(value: str | int | None) -> datetime | None:
    return None if value is None else _dt(value)


def _fields(raw: Sequence[str] | dict[str, str]) -> dict[str, str]:
    """A hash as a dict, from HGETALL (a dict) or from a script (a flat list)."""
    if isinstance(raw, dict):
        return raw
    return dict(zip(raw[::2], raw[1::2], strict=True))


def _flow(raw: Sequence[str] | dict[str, str]) -> FlowStatus:
    fields = _fields(raw)
    return rows.flow_from_row([fields.get(name) for name in FLOW_FIELDS], _dt_or_none)


def _steps(raw: Sequence[str] | dict[str, str]) -> list[StepRecord]:
    records = ((key, *json.loads(text)) for key, text in _fields(raw).items())
    return rows.steps_from_rows(records, _dt_or_none)
