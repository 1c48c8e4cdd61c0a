"""Values a backend refuses (a NUL or an unpaired surrogate it cannot hold, a number out of
range, a string over its size limit, a `pg_notify` payload over 8,000 bytes) are a
`StoreValueError`: never retried, they fail the flow that produced them (`StoreRefused`) instead
of stopping its execution as an outage would -- which made another worker claim it again,
forever. Outages keep their old treatment (tests/stores/test_faults.py, test_servers.py)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError

import ergon
from ergon.core.records import FlowEnd, FlowStatus, NewFlow, SignalRecord, StepRecord
from ergon.storage.postgres import connection as postgres_connection
from ergon.storage.redis import RedisStore
from ergon.storage.redis import connection as redis_connection
from tests.support.services import start_redis

RAN: Counter[str] = Counter()
# NUL: Postgres text cannot hold it; a lone surrogate: neither UTF-8 text in Postgres nor SQLite.
ODD_NAME = "odd\x00name\ud800"
# Where a step with that name is refused (Redis and memory store its record as escaped JSON).
REFUSES_ODD_NAME = {"postgres", "sqlite"}


@pytest.fixture(autouse=True)
def _reset() -> None:
    RAN.clear()


def backend(store: ergon.Store) -> str:
    return type(store).__name__.removesuffix("Store").lower()


class OddlyNamed(ergon.Flow):
    @ergon.flow
    async def run(self) -> str:
        try:
            return await self.odd()
        except Exception as exc:  # a refusal is not the flow's to handle
            return f"swallowed {type(exc).__name__}"

    @ergon.step(name=ODD_NAME)
    async def odd(self) -> str:
        RAN["odd"] += 1
        return "ran"


class Big(ergon.Flow):
    """Makes a string of `size` characters, as its step's result or (`at_end`) its own."""

    size: int
    at_end: bool = False

    @ergon.flow
    async def run(self) -> str:
        made = await self.make()
        return "x" * self.size if self.at_end else made

    @ergon.step
    async def make(self) -> str:
        RAN["make"] += 1
        return "small" if self.at_end else "x" * self.size


class Plain(ergon.Flow):
    @ergon.flow
    async def run(self) -> int:
        return await self.one()

    @ergon.step
    async def one(self) -> int:
        RAN["plain"] += 1
        return 1


def assert_refused(outcome: ergon.Outcome, *, names: str) -> ergon.ErrorInfo:
    assert isinstance(outcome, ergon.Failed), outcome
    error = outcome.error
    assert error.type == "StoreRefused" and error.retryable is False
    assert names in error.message
    assert error.message.isascii() and error.message.isprintable()
    assert len(error.message) < 1000
    return error


async def assert_ended_for_good(store: ergon.Store, flow_id: str) -> None:
    """Failed, recorded as such, not claimable again, and a normal flow still runs."""
    status = await store.get_flow(flow_id)
    assert status is not None and status.state == "failed"
    assert status.error is not None and status.error.type == "StoreRefused"
    claimed = await store.claim_flows(owner="w", version=None, lease_seconds=30, limit=10)
    assert claimed.flows == []
    assert await ergon.Executor(f"{flow_id}-next", Plain(), store).execute() == ergon.Completed(1)


# --- the stores ------------------------------------------------------------------------------


def refusals(store: ergon.Store, epoch: int) -> dict[str, Callable[[], Awaitable[object]]]:
    """Calls this backend refuses for their values (none on the memory store)."""
    named = StepRecord(key="1", name="a\x00b", state="completed", result="1")
    surrogate = StepRecord(key="1", name="a\ud800b", state="completed", result="1")
    huge = StepRecord(key="1", name="a", state="completed", result="1", attempts=2**70)
    kind = backend(store)
    if kind == "postgres":
        notified = "x" * 9000  # compressed in the index, but over pg_notify's 8,000 bytes
        indexed = secrets.token_hex(2000)  # incompressible: over the btree's row size limit
        return {
            "NUL in text": lambda: store.save_step("f", named, epoch=epoch),
            "surrogate": lambda: store.save_step("f", surrogate, epoch=epoch),
            "int out of range": lambda: store.save_step("f", huge, epoch=epoch),
            "pg_notify": lambda: store.create_flow(NewFlow(id=notified, flow="F", input="{}")),
            "index row": lambda: store.create_flow(NewFlow(id=indexed, flow="F", input="{}")),
            "surrogate name": lambda: store.next_signal("f", "a\ud800"),
        }
    if kind == "sqlite":
        return {
            "surrogate": lambda: store.save_step("f", surrogate, epoch=epoch),
            "int out of range": lambda: store.save_step("f", huge, epoch=epoch),
            "surrogate name": lambda: store.next_signal("f", "a\ud800"),
        }
    if kind == "redis":
        return {
            "surrogate name": lambda: store.next_signal("f", "a\ud800"),
            "surrogate signal": lambda: store.send_signal("f", "a\ud800", "1"),
        }
    return {}


async def test_a_refused_value_raises_store_value_error_at_once(store: ergon.Store) -> None:
    opened = await store.open_flow(NewFlow(id="f", flow="F", input="{}"), owner="me")
    assert opened.lease is not None
    calls = refusals(store, opened.lease.epoch)
    assert calls or backend(store) == "memory"  # the memory store holds any str and int
    for label, call in calls.items():
        began = time.monotonic()
        with pytest.raises(ergon.StoreValueError) as refused:
            await call()
        assert time.monotonic() - began < 2.0, f"{label}: retried like an outage"
        message = str(refused.value)
        assert message.isascii() and message.isprintable(), label
        assert isinstance(refused.value, ergon.StoreError)  # old `except StoreError` still works
        # The connection or transaction that met the refusal is fine for the next call.
        step = StepRecord(key="0", name="fine", state="completed", result="1")
        await store.save_step("f", step, epoch=opened.lease.epoch)
    if calls:
        assert [step.name for step in await store.load_steps("f")] == ["fine"]


def test_outages_are_not_value_errors() -> None:
    pg = postgres_connection.store_error
    exc: BaseException
    for exc in (
        asyncpg.CannotConnectNowError("starting up"),
        asyncpg.AdminShutdownError("terminating"),
        asyncpg.DeadlockDetectedError("deadlock"),
        asyncpg.QueryCanceledError("statement timeout"),
        asyncpg.DiskFullError("no space"),
        asyncpg.UniqueViolationError("duplicate key"),
        ConnectionResetError(),
        TimeoutError(),
    ):
        assert not isinstance(pg(exc, where="pg", what="x"), ergon.StoreValueError), exc
    for exc in (
        asyncpg.CharacterNotInRepertoireError("0x00"),
        asyncpg.InvalidParameterValueError("payload string too long"),
        asyncpg.NumericValueOutOfRangeError("out of range"),
        asyncpg.ProgramLimitExceededError("index row size exceeds maximum"),
        asyncpg.NotNullViolationError("null value"),
    ):
        assert isinstance(pg(exc, where="pg", what="x"), ergon.StoreValueError), exc
    rd = redis_connection.store_error
    for exc in (
        RedisConnectionError("reset"),
        ReadOnlyError("You can't write against a read only replica."),
        OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
        ResponseError("BUSY Redis is busy running a script."),
        ResponseError("MISCONF Redis is configured to save RDB snapshots"),
        ResponseError("Error running script: @user_script:3: -LOADING Redis is loading"),
    ):
        assert not isinstance(rd(exc, where="r", what="x"), ergon.StoreValueError), exc
    for exc in (
        ResponseError("Protocol error: invalid bulk length"),
        ResponseError("string exceeds maximum allowed size (proto-max-bulk-len)"),
        UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
    ):
        assert isinstance(rd(exc, where="r", what="x"), ergon.StoreValueError), exc


# --- the flows -------------------------------------------------------------------------------


async def test_a_refused_checkpoint_fails_the_flow_once(store: ergon.Store) -> None:
    outcome = await ergon.Executor("odd", OddlyNamed(), store, flow_retries=True).execute()
    if backend(store) not in REFUSES_ODD_NAME:
        assert outcome == ergon.Completed("ran")
        return
    error = assert_refused(outcome, names="the checkpoint of step 'odd\\x00name\\ud800'")
    assert "swallowed" not in error.message
    await assert_ended_for_good(store, "odd")
    # Executing it again returns the recorded failure without running the step again.
    assert await ergon.Executor("odd", OddlyNamed(), store).execute() == outcome
    assert RAN == Counter(odd=1, plain=1)


async def test_a_worker_fails_a_refused_flow_instead_of_claiming_it_again(
    store: ergon.Store,
) -> None:
    client = ergon.Client(store)
    odd = await client.schedule(OddlyNamed())
    plain = await client.schedule(Plain())
    handle = ergon.Worker(store, "w", flows=[OddlyNamed, Plain], poll_interval=0.1).start()
    try:
        outcome = await client.wait(odd, timeout=10)
        assert await client.wait(plain, timeout=10) == ergon.Completed(1)
        await asyncio.sleep(0.3)  # time for a (wrong) second claim
    finally:
        await handle.shutdown(timeout=5)
    if backend(store) in REFUSES_ODD_NAME:
        assert_refused(outcome, names="odd")
    else:
        assert outcome == ergon.Completed("ran")
    assert RAN == Counter(odd=1, plain=1)


class Nul(ergon.Flow):
    text: str

    @ergon.flow
    async def run(self) -> str:
        signal = await ergon.wait_for_signal("text", str)
        return await self.echo(self.text + signal)

    @ergon.step
    async def echo(self, text: str) -> str:
        return text


async def test_nul_inside_payloads_is_not_refused(store: ergon.Store) -> None:
    """Payloads are JSON text, where NUL is written as an escape: every store holds it."""
    await ergon.Client(store).signal("n", "text", "c\x00d")
    outcome = await ergon.Executor("n", Nul(text="a\x00b"), store).execute()
    assert outcome == ergon.Completed("a\x00bc\x00d")


# --- size limits -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def small_store(kind: str, tmp_path: Path) -> AsyncIterator[ergon.Store]:
    """A store whose backend refuses strings over about 1 MB: SQLite with a lowered length
    limit, or a private Redis server with `proto-max-bulk-len` at its minimum (1 MB)."""
    if kind == "sqlite":
        sqlite_store = ergon.SqliteStore(tmp_path / "small.db")
        await sqlite_store.get_flow("none")  # opens the connections
        for conn in (sqlite_store._db.inline, sqlite_store._db.waiting):
            assert conn is not None
            conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 1_000_000)
        try:
            yield sqlite_store
        finally:
            await sqlite_store.close()
        return
    server = start_redis()
    try:
        admin = redis.asyncio.Redis.from_url(server.url)
        await admin.config_set("proto-max-bulk-len", "1mb")
        await admin.aclose()
        redis_store = RedisStore(server.url, outage_grace=1.0)
        try:
            yield redis_store
        finally:
            await redis_store.close()
    finally:
        server.destroy()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
@pytest.mark.parametrize("size", [2_000_000, 50_000_000])
async def test_a_step_result_over_the_size_limit_fails_the_flow(
    kind: str, size: int, tmp_path: Path
) -> None:
    """Just over its limit, Redis answers with an error; far over it, it resets the connection
    while the value is still being sent: a refusal all the same, not an outage."""
    async with small_store(kind, tmp_path) as store:
        outcome = await ergon.Executor("big", Big(size=size), store).execute()
        assert_refused(outcome, names="the checkpoint of step 'make'")
        await assert_ended_for_good(store, "big")
        assert await ergon.Executor("big", Big(size=size), store).execute() == outcome
        assert RAN == Counter(make=1, plain=1)


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_a_flow_result_over_the_size_limit_fails_the_flow(kind: str, tmp_path: Path) -> None:
    async with small_store(kind, tmp_path) as store:
        flow = Big(size=2_000_000, at_end=True)
        outcome = await ergon.Executor("big", flow, store).execute()
        assert_refused(outcome, names="the end of flow big (completed)")
        await assert_ended_for_good(store, "big")
        assert RAN == Counter(make=1, plain=1)


# --- the core, with a store that refuses on demand ------------------------------------------


class Refusing(ergon.MemoryStore):
    """A memory store that refuses what `refuse` names, as a backend refuses a value."""

    refuse: set[str]

    def __init__(self, *refuse: str) -> None:
        super().__init__()
        self.refuse = set(refuse)

    async def next_signal(self, flow_id: str, name: str) -> SignalRecord | None:
        if "signal" in self.refuse:
            raise ergon.StoreValueError(f"cannot hold signal name {name!r}")
        return await super().next_signal(flow_id, name)

    async def finish_flow(self, flow_id: str, end: FlowEnd, *, epoch: int | None) -> FlowStatus:
        if end.state in self.refuse:
            raise ergon.StoreValueError(f"cannot hold the {end.state} end of {flow_id}")
        return await super().finish_flow(flow_id, end, epoch=epoch)


class Waits(ergon.Flow):
    @ergon.flow
    async def run(self) -> object:
        try:
            return await ergon.wait_for_signal("go")
        except Exception as exc:
            return f"swallowed {type(exc).__name__}"


async def test_a_refused_read_inside_the_flow_fails_it() -> None:
    store = Refusing("signal")
    outcome = await ergon.Executor("w", Waits(), store, flow_retries=True).execute()
    error = assert_refused(outcome, names="an operation of flow w")
    assert "cannot hold signal name 'go'" in error.message
    await assert_ended_for_good(store, "w")


async def test_a_flow_whose_failure_cannot_be_recorded_either_raises_to_the_caller() -> None:
    store = Refusing("completed", "failed")
    with pytest.raises(ergon.StoreValueError, match="failed end"):
        await ergon.Executor("p", Plain(), store).execute()
    status = await store.get_flow("p")
    assert status is not None and status.state == "running"  # nothing recorded, no loop here
