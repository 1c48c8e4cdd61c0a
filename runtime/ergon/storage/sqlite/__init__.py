"""The SQLite store: `store` (the `Store` methods), `database` (connections, locking, errors),
`schema` (tables and migrations), `channel` (wake-ups between processes)."""

from ergon.storage.sqlite.database import Synchronous
from ergon.storage.sqlite.store import SqliteStore

__all__ = ["SqliteStore", "Synchronous"]
