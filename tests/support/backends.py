"""The store backends the suites run against, and how a test gets a fresh one."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import ergon

BACKENDS = ["memory", "sqlite"]


@contextlib.asynccontextmanager
async def open_backend(kind: str, tmp_path: Path) -> AsyncIterator[ergon.Store]:
    """A fresh, empty store of `kind`, closed afterwards."""
    store: ergon.Store
    if kind == "memory":
        store = ergon.MemoryStore()
    elif kind == "sqlite":
        store = ergon.SqliteStore(tmp_path / "ergon.db")
    else:
        raise ValueError(f"unknown backend {kind}")
    try:
        yield store
    finally:
        await store.close()


def backend_url(kind: str, tmp_path: Path) -> str:
    """A URL for a store other processes can share (memory stores cannot be shared)."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'ergon.db'}"
    raise ValueError(f"backend {kind} cannot be shared across processes")
