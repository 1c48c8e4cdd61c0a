"""Group commit: the writes of concurrent executions share transactions (SQLite: one
`BEGIN IMMEDIATE ... COMMIT` for a batch), yet each caller sees only its own outcome.

The first tests run on every store (a store that does not batch passes them trivially): a
fenced, cancelled or refused record among many concurrent ones fails its caller alone, and every
record whose `await` returned is durable. The SQLite tests check that batches really formed,
read the file back through a new store, fail a whole batch (the write lock not obtained), and
SIGKILL a process while its batches are in flight.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

import ergon
from ergon.core.errors import CancelRequestedError, FencedError
from ergon.core.records import FlowEnd, NewFlow, OpenedFlow, StepRecord
from ergon.core.store import Store
from tests.stores.group_commit_child import SIGNAL, consumes_signal

ROOT = Path(__file__).resolve().parents[2]
FLOWS = 24


def new(flow_id: str) -> NewFlow:
    return NewFlow(id=flow_id, flow="tests:Flow", input="{}", state="running")


def step(key: str, result: str = "1", *, name: str = "s", attempts: int = 1) -> StepRecord:
    return StepRecord(key=key, name=name, state="completed", result=result, attempts=attempts)


class Steps(ergon.Flow):
    n: int

    @ergon.flow
    async def run(self) -> int:
        return sum([await self.one(i) for i in range(self.n)])

    @ergon.step
    async def one(self, i: int) -> int:
        return i


async def opened(store: Store, flow_id: str) -> int:
    flow = await store.open_flow(new(flow_id), owner="me")
    assert flow.lease is not None
    return flow.lease.epoch


def backend(store: Store) -> str:
    return type(store).__name__.removesuffix("Store").lower()


def writer(store: Store) -> tuple[int, int]:
    """(batches, records in them) of a SQLite store's writer; (0, 0) for other stores."""
    if isinstance(store, ergon.SqliteStore):
        return store._db.batches, store._db.batched
    return 0, 0


# --- every store ---------------------------------------------------------------------------


async def test_a_fenced_cancelled_or_refused_record_fails_only_its_caller(store: Store) -> None:
    ids = [f"f{i}" for i in range(FLOWS)]
    epochs = dict(zip(ids, await asyncio.gather(*(opened(store, i) for i in ids)), strict=True))
    fenced, cancelled, refused, consuming, ending = "f3", "f7", "f11", "f13", "f17"
    await opened(store, fenced)  # taken over: the epoch in `epochs` is stale now
    await store.request_cancel(cancelled)
    assert await store.send_signal(consuming, "go", '"x"')
    sent = await store.next_signal(consuming, "go")
    assert sent is not None
    # An integer over 64 bits: SQLite and Postgres refuse it, memory and Redis hold it.
    refuses = backend(store) in ("sqlite", "postgres")

    async def write(flow_id: str) -> object:
        epoch = epochs[flow_id]
        if flow_id == ending:
            return await store.finish_flow(flow_id, FlowEnd("completed", result='"r"'), epoch=epoch)
        if flow_id == refused:
            await store.save_step(flow_id, step("0", attempts=2**70), epoch=epoch)
        elif flow_id == consuming:
            await store.save_step(flow_id, step("0"), epoch=epoch, consumes=sent.seq)
        else:
            await store.save_step(flow_id, step("0", result=f'"{flow_id}"'), epoch=epoch)
        return None

    before = writer(store)
    results = await asyncio.gather(*(write(i) for i in ids), return_exceptions=True)
    outcomes = dict(zip(ids, results, strict=True))
    assert isinstance(outcomes.pop(fenced), FencedError)
    assert isinstance(outcomes.pop(cancelled), CancelRequestedError)
    refusal = outcomes.pop(refused)
    assert isinstance(refusal, ergon.StoreValueError) if refuses else refusal is None
    ended = outcomes.pop(ending)
    assert isinstance(ended, ergon.FlowStatus) and ended.state == "completed"
    assert outcomes == dict.fromkeys(outcomes)  # every other caller: done, no error
    for flow_id in ids:
        keys = [s.key for s in await store.load_steps(flow_id)]
        written = flow_id not in (fenced, cancelled, ending) and not (
            flow_id == refused and refuses
        )
        assert keys == (["0"] if written else []), flow_id
    assert await store.next_signal(consuming, "go") is None  # consumed with its checkpoint
    if isinstance(store, ergon.SqliteStore):
        batches, records = (a - b for a, b in zip(writer(store), before, strict=True))
        assert records > batches > 0, "the concurrent records were not batched"


async def test_a_takeover_and_a_checkpoint_of_the_old_epoch_in_one_batch(store: Store) -> None:
    """Two executions of one flow in one process: the old one's checkpoint and the new one's
    takeover arrive together. Whichever the batch orders first, the outcome is consistent:
    the checkpoint is there exactly when its caller was told it was written."""
    for round_ in range(4):
        flow_id = f"t{round_}"
        old = await opened(store, flow_id)
        others = [f"{flow_id}-{i}" for i in range(8)]
        epochs = await asyncio.gather(*(opened(store, i) for i in others))
        results = await asyncio.gather(
            store.save_step(flow_id, step("0"), epoch=old),
            store.open_flow(new(flow_id), owner="new"),
            *(store.save_step(o, step("0"), epoch=e) for o, e in zip(others, epochs, strict=True)),
            return_exceptions=True,
        )
        saved, taken = results[0], results[1]
        assert isinstance(taken, OpenedFlow) and taken.lease is not None
        assert taken.lease.epoch == old + 1
        assert saved is None or isinstance(saved, FencedError)
        present = [s.key for s in await store.load_steps(flow_id)]
        assert present == (["0"] if saved is None else [])
        assert [s.key for s in taken.steps] == present
        assert results[2:] == [None] * len(others)
        # The new epoch writes; the old one is refused from now on.
        await store.save_step(flow_id, step("1"), epoch=taken.lease.epoch)
        with pytest.raises(FencedError):
            await store.save_step(flow_id, step("2"), epoch=old)


async def test_many_concurrent_checkpoints_are_all_durable(store: Store) -> None:
    ids = [f"m{i}" for i in range(FLOWS)]
    epochs = await asyncio.gather(*(opened(store, i) for i in ids))

    async def steps(flow_id: str, epoch: int) -> None:
        for key in range(10):
            await store.save_step(flow_id, step(str(key), result=str(key)), epoch=epoch)

    await asyncio.gather(*(steps(i, e) for i, e in zip(ids, epochs, strict=True)))
    for flow_id in ids:
        loaded = await store.load_steps(flow_id)
        assert [(s.key, s.result) for s in loaded] == [(str(k), str(k)) for k in range(10)]


# --- SQLite --------------------------------------------------------------------------------


async def test_sqlite_a_lone_flow_writes_inline_and_concurrent_flows_in_batches(
    tmp_path: Path,
) -> None:
    store = ergon.SqliteStore(tmp_path / "g.db")
    try:
        outcome = await ergon.Executor("lone", Steps(n=20), store).execute()
        assert isinstance(outcome, ergon.Completed)
        assert writer(store) == (0, 0)  # open, 20 checkpoints, end: all inline
        await asyncio.sleep(0.02)  # past the overlap window
        outcomes = await asyncio.gather(
            *(ergon.Executor(f"c{i}", Steps(n=20), store).execute() for i in range(16))
        )
        assert all(isinstance(o, ergon.Completed) for o in outcomes)
        batches, records = writer(store)
        assert records >= 16 * 20 and records > 4 * batches
    finally:
        await store.close()


async def test_sqlite_refused_and_fenced_records_among_a_batchs_checkpoints(
    tmp_path: Path,
) -> None:
    """A batch's plain checkpoints run without savepoints (one statement each, which SQLite
    undoes by itself when it fails), the others in savepoints: a fenced or refused record among
    them fails alone, a refused one changes nothing (its signal stays unconsumed, its flow
    running), and what the callers were told is what a new store finds in the file."""
    path = tmp_path / "b.db"
    store = ergon.SqliteStore(path)
    ids = [f"b{i}" for i in range(40)]
    try:
        epochs = dict(zip(ids, await asyncio.gather(*(opened(store, i) for i in ids)), strict=True))
        await opened(store, "b5")  # fenced from now on
        for flow_id in ("b12", "b13"):
            await store.send_signal(flow_id, "go", '"x"')
        bad = {
            "b9": step("0", name="a\ud800b"),
            "b21": step("0", attempts=2**70),
            "b13": step("0", attempts=2**70),  # with a signal to consume: in a savepoint
        }

        async def write(flow_id: str) -> None:
            epoch = epochs[flow_id]
            if flow_id in ("b30", "b31"):  # ends of executions, the second one refused
                result = '"ok"' if flow_id == "b30" else '"\ud800"'
                await store.finish_flow(flow_id, FlowEnd("completed", result=result), epoch=epoch)
                return
            record = bad.get(flow_id, step("0", result=f'"{flow_id}"'))
            signal = await store.next_signal(flow_id, "go")
            consumes = None if signal is None else signal.seq
            await store.save_step(flow_id, record, epoch=epoch, consumes=consumes)

        before = writer(store)
        outcomes = await asyncio.gather(*(write(i) for i in ids), return_exceptions=True)
        batches, records = (a - b for a, b in zip(writer(store), before, strict=True))
        assert records > batches > 0
    finally:
        await store.close()
    failed = {i: type(o).__name__ for i, o in zip(ids, outcomes, strict=True) if o is not None}
    refused = {i: "StoreValueError" for i in ("b9", "b13", "b21", "b31")}
    assert failed == {"b5": "FencedError", **refused}
    reopened = ergon.SqliteStore(path)
    try:
        for flow_id in ids:
            loaded = await reopened.load_steps(flow_id)
            written = flow_id not in failed and flow_id not in ("b30", "b31")
            expected = [(f'"{flow_id}"', "0")] if written else []
            assert [(s.result, s.key) for s in loaded] == expected, flow_id
        assert await reopened.next_signal("b12", "go") is None
        assert await reopened.next_signal("b13", "go") is not None
        states = {i: (await reopened.get_flow(i)) for i in ("b30", "b31")}
        assert {i: f.state if f else None for i, f in states.items()} == {
            "b30": "completed",
            "b31": "running",
        }
    finally:
        await reopened.close()


async def test_sqlite_a_record_that_fails_after_writing_is_undone_alone(tmp_path: Path) -> None:
    """Inside a batch, a record that wrote and then raised is rolled back to its savepoint:
    its rows are gone, its caller gets its exception, the records around it commit."""
    store = ergon.SqliteStore(tmp_path / "u.db")
    database = store._db

    def insert(name: str, fail: bool) -> Callable[[sqlite3.Connection], str]:
        def work(conn: sqlite3.Connection) -> str:
            conn.execute(
                "INSERT INTO signals (flow_id, name, payload, sent_at) VALUES ('u', ?, '1', 0)",
                (name,),
            )
            if fail:
                raise FencedError.stale("u", 1)
            return name

        return work

    try:
        await store.get_flow("none")  # connected
        names = [f"n{i}" for i in range(12)]
        before = writer(store)
        outcomes = await asyncio.gather(
            *(database.commit(insert(n, fail=n in ("n4", "n9"))) for n in names),
            return_exceptions=True,
        )
        assert writer(store)[0] > before[0]
        assert [type(o).__name__ for o in outcomes] == [
            "FencedError" if n in ("n4", "n9") else "str" for n in names
        ]
        conn = sqlite3.connect(tmp_path / "u.db")
        try:
            stored = [row[0] for row in conn.execute("SELECT name FROM signals ORDER BY seq")]
        finally:
            conn.close()
        assert stored == [n for n in names if n not in ("n4", "n9")]
    finally:
        await store.close()


async def test_sqlite_a_batch_that_cannot_commit_fails_every_caller(tmp_path: Path) -> None:
    """Another process holds the write lock past `busy_timeout`: the batch's BEGIN fails, each
    caller gets a StoreError (as a failed write did before), nothing of the batch is written,
    and the same writes succeed once the lock is free."""
    path = tmp_path / "l.db"
    store = ergon.SqliteStore(path, busy_timeout=0.3)
    ids = [f"l{i}" for i in range(8)]
    try:
        epochs = await asyncio.gather(*(opened(store, i) for i in ids))
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            outcomes = await asyncio.gather(
                *(store.save_step(i, step("0"), epoch=e) for i, e in zip(ids, epochs, strict=True)),
                return_exceptions=True,
            )
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert all(type(o) is ergon.StoreError for o in outcomes), outcomes
        for flow_id in ids:
            assert await store.load_steps(flow_id) == []
        await asyncio.gather(
            *(store.save_step(i, step("0"), epoch=e) for i, e in zip(ids, epochs, strict=True))
        )
        for flow_id in ids:
            assert [s.key for s in await store.load_steps(flow_id)] == ["0"]
    finally:
        await store.close()


async def test_sqlite_batches_wait_for_another_process_holding_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    store = ergon.SqliteStore(path)
    ids = [f"w{i}" for i in range(8)]
    try:
        epochs = await asyncio.gather(*(opened(store, i) for i in ids))
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        writes = asyncio.gather(
            *(store.save_step(i, step("0"), epoch=e) for i, e in zip(ids, epochs, strict=True))
        )
        await asyncio.sleep(0.3)
        assert not writes.done()
        other.execute("COMMIT")
        other.close()
        assert await asyncio.wait_for(writes, 10) == [None] * len(ids)
    finally:
        await store.close()


async def test_sqlite_close_lets_the_batch_in_flight_commit(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    store = ergon.SqliteStore(path)
    ids = [f"c{i}" for i in range(16)]
    epochs = await asyncio.gather(*(opened(store, i) for i in ids))
    writes = [
        asyncio.ensure_future(store.save_step(i, step("0"), epoch=e))
        for i, e in zip(ids, epochs, strict=True)
    ]
    await asyncio.sleep(0)  # queued, not yet committed
    await store.close()
    assert all(w.done() and w.exception() is None for w in writes)
    reopened = ergon.SqliteStore(path)
    try:
        for flow_id in ids:
            assert [s.key for s in await reopened.load_steps(flow_id)] == ["0"]
    finally:
        await reopened.close()


# --- SQLite: SIGKILL while batches are in flight ---------------------------------------------


def reported(path: Path) -> tuple[dict[str, set[int]], list[tuple[int, int]]]:
    steps: dict[str, set[int]] = defaultdict(set)
    stats = []
    for line in path.read_text().splitlines():
        first, second = line.split()[-2:]
        if line.startswith("#"):
            stats.append((int(first), int(second)))
        else:
            steps[first].add(int(second))
    return steps, stats


def returned_count(path: Path) -> int:
    return sum(len(keys) for keys in reported(path)[0].values())


def check_after_kill(db: Path, report: Path, flows: int) -> int:
    """Every checkpoint whose await returned is there; each checkpoint is all there (its
    result, and its signal consumed) or absent; a flow's checkpoints are 0..n without a gap
    (its steps ran one after another). Returns the number of checkpoints."""
    returned, _ = reported(report)
    conn = sqlite3.connect(db)
    try:
        total = 0
        for i in range(flows):
            flow_id = f"f{i}"
            rows = conn.execute(
                "SELECT key, result FROM steps WHERE flow_id = ?", (flow_id,)
            ).fetchall()
            keys = sorted(int(key) for key, _ in rows)
            assert keys == list(range(len(keys))), f"{flow_id}: a gap in {keys}"
            assert all(result == key for key, result in rows), flow_id
            assert returned[flow_id] <= set(keys), f"{flow_id}: a returned checkpoint is lost"
            # Written but not reported: at most the one checkpoint each task had in flight.
            assert len(keys) <= max(returned[flow_id], default=-1) + 2, flow_id
            (consumed,) = conn.execute(
                "SELECT COUNT(*) FROM signals WHERE flow_id = ? AND consumed_at IS NOT NULL",
                (flow_id,),
            ).fetchone()
            assert consumed == sum(1 for key in keys if consumes_signal(key)), flow_id
            total += len(keys)
        return total
    finally:
        conn.close()


async def send_signals(db: Path, flows: int, each: int) -> None:
    store = ergon.SqliteStore(db, synchronous="normal")  # the setup only
    try:
        for i in range(flows):
            for _ in range(each):
                await store.send_signal(f"f{i}", SIGNAL, '"x"')
    finally:
        await store.close()


@pytest.mark.integration
def test_sqlite_sigkill_mid_batch_keeps_every_returned_checkpoint(tmp_path: Path) -> None:
    """A child process writes checkpoints of 32 flows (one batch holds most of them) and is
    SIGKILLed at a random moment, three times over (each child takes the flows over from the
    one before): after each kill, the file holds every checkpoint whose await returned, and
    each checkpoint in full (with the signal it consumed) or not at all."""
    db, report, flows = tmp_path / "k.db", tmp_path / "report", 32
    asyncio.run(send_signals(db, flows, 100))
    rng = random.Random(18)
    total = 0
    for _ in range(3):
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.stores.group_commit_child", str(db), str(report),
             str(flows)],
            cwd=ROOT,
        )  # fmt: skip
        try:
            wanted = total + 200 + rng.randrange(200)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and child.poll() is None:
                if report.exists() and returned_count(report) >= wanted:
                    break
                time.sleep(0.005)
            assert child.poll() is None, "the child ended before it was killed"
            time.sleep(rng.random() * 0.02)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        assert child.returncode == -signal.SIGKILL
        written = check_after_kill(db, report, flows)
        assert written > total
        total = written
    _, stats = reported(report)
    assert any(records > batches > 0 for batches, records in stats), "no batch formed"
