"""`ergon flows prune`: a dry run prints and deletes nothing, a real run deletes only flows that
ended longer ago than --finished-before, a malformed duration is one line and exit 2."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

import ergon
from ergon.core.records import FlowEnd
from tests.cli.support import assert_one_line_error
from tests.cli.support import ergon as run_ergon

DAY = 86400.0


def _prepare(path: Path) -> str:
    """old-done and old-failed ended ten days ago, recent-done just now, waiting never ended
    (and was created ten days ago)."""
    url = f"sqlite:///{path}"

    async def fill() -> None:
        async with ergon.SqliteStore(path) as store:
            client = ergon.Client(store)
            for flow_id in ("old-done", "old-failed", "recent-done", "waiting"):
                await client.schedule_by_name(
                    "tests:Flow", {}, flow_id=flow_id, origin=f"flowrun:ns/{flow_id}/u"
                )
            ends: list[tuple[str, ergon.FlowState]] = [
                ("old-done", "completed"),
                ("old-failed", "failed"),
                ("recent-done", "completed"),
            ]
            for flow_id, state in ends:
                opened = await store.open_flow(
                    ergon.storage.NewFlow(flow_id, "tests:Flow", "{}"), owner="me"
                )
                assert opened.lease is not None
                await store.finish_flow(flow_id, FlowEnd(state), epoch=opened.lease.epoch)

    asyncio.run(fill())
    conn = sqlite3.connect(path)
    try:
        conn.execute(
            "UPDATE flows SET created_at = created_at - ?, updated_at = updated_at - ? "
            "WHERE id IN ('old-done', 'old-failed', 'waiting')",
            (10 * DAY, 10 * DAY),
        )
        conn.commit()
    finally:
        conn.close()
    return url


def _ids(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {row[0] for row in conn.execute("SELECT id FROM flows")}
    finally:
        conn.close()


def test_a_dry_run_prints_what_it_would_delete_and_deletes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    url = _prepare(path)
    result = run_ergon("flows", "prune", "--finished-before", "7d", "--dry-run", "--store", url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["would delete old-done", "would delete old-failed"]
    assert lines[2].startswith("would delete 2 flows that ended before ")
    assert _ids(path) == {"old-done", "old-failed", "recent-done", "waiting"}


def test_prune_deletes_only_flows_that_ended_long_enough_ago(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    url = _prepare(path)
    result = run_ergon("flows", "prune", "--finished-before", "7d", "--store", url)
    assert result.returncode == 0, result.stderr
    assert "deleted old-done" in result.stdout and "deleted old-failed" in result.stdout
    assert "deleted 2 flows that ended before" in result.stdout
    assert _ids(path) == {"recent-done", "waiting"}
    again = run_ergon("flows", "prune", "--finished-before", "12h", "--store", url)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[-1].startswith("deleted 0 flows")
    narrowed = run_ergon(
        "flows", "prune", "--finished-before", "0s", "--origin-prefix", "x:", "--store", url
    )
    assert narrowed.stdout.splitlines()[-1].startswith("deleted 0 flows")
    everything = run_ergon("flows", "prune", "--finished-before", "0s", "--store", url)
    assert "deleted recent-done" in everything.stdout
    assert _ids(path) == {"waiting"}  # never a flow that has not ended


def test_show_prints_the_origin_and_list_filters_by_it(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    url = _prepare(path)
    result = run_ergon("flows", "show", "waiting", "--store", url)
    assert result.returncode == 0, result.stderr
    assert "origin flowrun:ns/waiting/u" in result.stdout
    listed = run_ergon("flows", "list", "--origin-prefix", "flowrun:ns/old-", "--store", url)
    assert listed.returncode == 0, listed.stderr
    ids = [line.split()[0] for line in listed.stdout.splitlines()[1:]]
    assert sorted(ids) == ["old-done", "old-failed"]


@pytest.mark.parametrize("duration", ["7", "1w", "soon", "-3d", ""])
def test_a_bad_duration_is_one_line_and_exit_2(duration: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    result = run_ergon("flows", "prune", "--finished-before", duration, "--store", url)
    assert_one_line_error(result, "--finished-before", "not a duration")
    assert not (tmp_path / "s.db").exists()
