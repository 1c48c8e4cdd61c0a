"""Fixtures shared by every suite: real stores, one per backend, fresh for each test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import ergon
from tests.support.backends import BACKENDS, open_backend


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ergon.Store]:
    """A fresh store of every backend (parametrized)."""
    async with open_backend(request.param, tmp_path) as opened:
        yield opened


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[ergon.SqliteStore]:
    store = ergon.SqliteStore(tmp_path / "ergon.db")
    try:
        yield store
    finally:
        await store.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With ERGON_NO_SKIPS set (the test command sets it), a skipped test fails the run:
    an integration suite that silently did not run does not count."""
    if not os.environ.get("ERGON_NO_SKIPS"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if not isinstance(reporter, pytest.TerminalReporter):
        return
    skipped = reporter.stats.get("skipped", [])
    if skipped and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        names = ", ".join(getattr(report, "nodeid", "?") for report in skipped[:10])
        reporter.write_line(
            f"ERGON_NO_SKIPS: {len(skipped)} skipped tests fail the run: {names}", red=True
        )
