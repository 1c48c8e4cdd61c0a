"""`open_store(url)`: a store from a URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from ergon.core.errors import StoreUrlError
from ergon.core.store import Store
from ergon.storage.memory import MemoryStore
from ergon.storage.sqlite import SqliteStore, Synchronous

DEFAULT_SQLITE = "ergon.db"
SCHEMES = "memory://, sqlite:///relative.db, sqlite:////absolute.db, postgresql://…, redis://…"


def open_store(url: str) -> Store:
    """A store for `url`: `memory://`, `sqlite:///relative.db`, `sqlite:////abs.db`,
    `postgresql://…` or `redis://…`. Stores connect lazily, on first use.
    """
    if not isinstance(url, str) or not url.strip():
        raise StoreUrlError(f"empty store URL; use one of: {SCHEMES}")
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise StoreUrlError(f"store URL {url!r} has no scheme; use one of: {SCHEMES}")
    scheme = scheme.lower()
    if scheme == "memory":
        return MemoryStore()
    if scheme == "sqlite":
        return _sqlite(url, rest)
    if scheme in ("postgres", "postgresql"):
        return _postgres(url)
    if scheme in ("redis", "rediss", "unix"):
        return _redis(url)
    raise StoreUrlError(f"unknown store URL scheme {scheme!r} in {url!r}; use one of: {SCHEMES}")


def _sqlite(url: str, rest: str) -> SqliteStore:
    if not rest.startswith("/"):
        raise StoreUrlError(
            f"SQLite URL {url!r} needs three slashes: sqlite:///relative.db or "
            "sqlite:////absolute/path.db"
        )
    parts = urlsplit(url)
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path or path.endswith("/"):
        raise StoreUrlError(f"SQLite URL {url!r} names no database file")
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    synchronous = options.pop("synchronous", "full").lower()
    if synchronous not in ("full", "normal", "extra"):
        raise StoreUrlError(
            f"SQLite URL {url!r}: synchronous must be full, normal or extra, not {synchronous!r}"
        )
    if options:
        raise StoreUrlError(f"SQLite URL {url!r}: unknown options {sorted(options)}")
    return SqliteStore(Path(path), synchronous=cast(Synchronous, synchronous))


def _postgres(url: str) -> Store:
    try:
        from ergon.storage.postgres import PostgresStore
    except ImportError as exc:
        raise StoreUrlError(
            f"{url!r} needs the Postgres store: pip install 'ergon[postgres]' ({exc})"
        ) from exc
    try:
        store: Any = PostgresStore(url)
    except ValueError as exc:
        raise StoreUrlError(f"Postgres URL {url!r}: {exc}") from exc
    return cast(Store, store)


def _redis(url: str) -> Store:
    try:
        from ergon.storage.redis import RedisStore
    except ImportError as exc:
        raise StoreUrlError(
            f"{url!r} needs the Redis store: pip install 'ergon[redis]' ({exc})"
        ) from exc
    try:
        store: Any = RedisStore(url)
    except ValueError as exc:
        raise StoreUrlError(f"Redis URL {url!r}: {exc}") from exc
    return cast(Store, store)
