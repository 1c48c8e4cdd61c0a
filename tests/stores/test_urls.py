"""`open_store(url)`: every accepted form, and a clear error for everything else."""

from __future__ import annotations

from pathlib import Path

import pytest

import ergon


def test_memory_url() -> None:
    assert isinstance(ergon.open_store("memory://"), ergon.MemoryStore)


@pytest.mark.parametrize(
    ("url", "path", "synchronous"),
    [
        ("sqlite:///relative.db", Path("relative.db"), "full"),
        ("sqlite:///dir/relative.db", Path("dir/relative.db"), "full"),
        ("sqlite:////abs/path.db", Path("/abs/path.db"), "full"),
        ("sqlite:///x.db?synchronous=normal", Path("x.db"), "normal"),
        ("SQLITE:///x.db?synchronous=EXTRA", Path("x.db"), "extra"),
    ],
)
def test_sqlite_urls(url: str, path: Path, synchronous: str) -> None:
    store = ergon.open_store(url)
    assert isinstance(store, ergon.SqliteStore)
    assert (store.path, store.synchronous) == (path, synchronous)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "empty store URL"),
        ("ergon.db", "has no scheme"),
        ("mysql://localhost/db", "unknown store URL scheme 'mysql'"),
        ("sqlite://relative.db", "three slashes"),
        ("sqlite:///", "names no database file"),
        ("sqlite:///x.db?synchronous=sometimes", "synchronous must be full, normal or extra"),
        ("sqlite:///x.db?journal=off", "unknown options ['journal']"),
    ],
)
def test_bad_urls_say_what_to_fix(url: str, message: str) -> None:
    with pytest.raises(ergon.StoreUrlError) as caught:
        ergon.open_store(url)
    assert message in str(caught.value)
    if url and "://" not in url:
        assert "sqlite:///relative.db" in str(caught.value)


async def test_a_sqlite_file_in_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    store = ergon.open_store(f"sqlite:///{tmp_path}/missing/dir/x.db")
    with pytest.raises(ergon.StoreError, match="does not exist"):
        await store.get_flow("x")


async def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    store = ergon.SqliteStore(junk)
    with pytest.raises(ergon.StoreError, match="cannot open SQLite store"):
        await store.get_flow("x")
    assert junk.read_bytes() == b"this is not sqlite" * 100  # left untouched
