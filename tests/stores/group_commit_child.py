"""`python -m tests.stores.group_commit_child DB REPORT FLOWS`: write checkpoints from FLOWS
concurrent tasks into the SQLite store at DB until killed (tests/stores/test_group_commit.py).

Each task opens its flow (taking it over from an earlier, killed child) and writes steps 0, 1,
2, ... after the last one recorded; every fourth step consumes a signal with its checkpoint.
When a checkpoint's `await` returns, the task appends "FLOW KEY" to REPORT; every 10 steps it
appends "# BATCHES RECORDS", the writer's statistics. One `os.write` on an O_APPEND file per
line: once it returns, the line is the kernel's, and a SIGKILL of this process cannot lose it
(an fsync would only matter if the machine lost power, which this test does not simulate).
"""

from __future__ import annotations

import asyncio
import os
import sys

import ergon
from ergon.core.records import NewFlow, StepRecord

SIGNAL = "s"


def consumes_signal(key: int) -> bool:
    return key % 4 == 3


async def run_flow(store: ergon.SqliteStore, flow_id: str, report: int) -> None:
    opened = await store.open_flow(
        NewFlow(id=flow_id, flow="tests:Flow", input="{}", state="running"), owner="child"
    )
    assert opened.lease is not None
    epoch = opened.lease.epoch
    key = len(opened.steps)
    while True:
        step = StepRecord(key=str(key), name="s", state="completed", result=str(key))
        if consumes_signal(key):
            signal = await store.next_signal(flow_id, SIGNAL)
            assert signal is not None, f"{flow_id} ran out of signals"
            await store.save_step(flow_id, step, epoch=epoch, consumes=signal.seq)
        else:
            await store.save_step(flow_id, step, epoch=epoch)
        os.write(report, f"{flow_id} {key}\n".encode())
        if key % 10 == 9:
            stats = store._db
            os.write(report, f"# {stats.batches} {stats.batched}\n".encode())
        key += 1


async def main(path: str, report_path: str, flows: int) -> None:
    report = os.open(report_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    store = ergon.SqliteStore(path)
    await asyncio.gather(*(run_flow(store, f"f{i}", report) for i in range(flows)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
