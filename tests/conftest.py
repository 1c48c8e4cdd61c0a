"""Fixtures shared by every suite: real stores, one per backend, fresh for each test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import ergon
import pytest

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
