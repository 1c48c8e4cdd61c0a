"""`open_store(url)`: a store from a URL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from ergon.core.errors import StoreUrlError
from ergon.core.redaction import redact, redact_url
from ergon.core.store import Store
from ergon.storage.memory import MemoryStore
from ergon.storage.sqlite import SqliteStore, Synchronous

DEFAULT_SQLITE = "ergon.db"
_SYNCHRONOUS: dict[str, Synchronous] = {"full": "full", "normal": "normal", "extra": "extra"}
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
        raise StoreUrlError(f"store URL {_shown(url)} has no scheme; use one of: {SCHEMES}")
    scheme = scheme.lower()
    if scheme == "memory":
        return MemoryStore()
    if scheme == "sqlite":
        return _sqlite(url, rest)
    if scheme in ("postgres", "postgresql"):
        return _postgres(url)
    if scheme in ("redis", "rediss", "unix"):
        return _redis(url)
    raise StoreUrlError(
        f"unknown store URL scheme {scheme!r} in {_shown(url)}; use one of: {SCHEMES}"
    )


def _sqlite(url: str, rest: str) -> SqliteStore:
    if not rest.startswith("/"):
        raise StoreUrlError(
            f"SQLite URL {_shown(url)} needs three slashes: sqlite:///relative.db or "
            "sqlite:////absolute/path.db"
        )
    parts = urlsplit(url)
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path or path.endswith("/"):
        raise StoreUrlError(f"SQLite URL {_shown(url)} names no database file")
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    given = options.pop("synchronous", "full").lower()
    synchronous = _SYNCHRONOUS.get(given)
    if synchronous is None:
        raise StoreUrlError(
            f"SQLite URL {_shown(url)}: synchronous must be full, normal or extra, not {given!r}"
        )
    if options:
        raise StoreUrlError(f"SQLite URL {_shown(url)}: unknown options {sorted(options)}")
    return SqliteStore(Path(path), synchronous=synchronous)


def _postgres(url: str) -> Store:
    _check_ports(url, "Postgres")
    try:
        from ergon.storage.postgres import PostgresStore
    except ImportError as exc:
        raise _missing_extra(url, "Postgres", "postgres", exc) from exc
    try:
        return PostgresStore(url)
    except ValueError as exc:
        raise _refused_url(url, "Postgres", exc) from exc


def _redis(url: str) -> Store:
    _check_ports(url, "Redis")
    try:
        from ergon.storage.redis import RedisStore
    except ImportError as exc:
        raise _missing_extra(url, "Redis", "redis", exc) from exc
    try:
        return RedisStore(url)
    except ValueError as exc:
        raise _refused_url(url, "Redis", exc) from exc


def _missing_extra(url: str, backend: str, extra: str, exc: ImportError) -> StoreUrlError:
    return StoreUrlError(
        f"{_shown(url)} needs the {backend} store: pip install 'ergon[{extra}]' ({exc})"
    )


def _refused_url(url: str, backend: str, exc: ValueError) -> StoreUrlError:
    return StoreUrlError(f"{backend} URL {_shown(url)}: {redact(str(exc))}")


def _check_ports(url: str, backend: str) -> None:
    """Refuse a port that is not a number here, where the URL is at hand, rather than as a
    driver's `ValueError` at the first connect. (Postgres URLs may list several host:port.)"""
    rest = url.partition("://")[2]
    end = min(i for i in (rest.find("?"), rest.find("#"), len(rest)) if i != -1)
    hosts = rest[:end].rpartition("@")[2].partition("/")[0]  # a password may hold "/" or ":"
    for host in hosts.split(","):
        port = host.rpartition("]")[2] if host.startswith("[") else host
        _, colon, digits = port.rpartition(":")
        if colon and digits and not (digits.isdigit() and 0 < int(digits) < 65536):
            raise StoreUrlError(
                f"{backend} URL {_shown(url)}: port {digits!r} is not a port number (1-65535)"
            )


def _shown(url: str) -> str:
    """A URL for a message: quoted, its password hidden."""
    return repr(redact_url(url))
