"""The SQLite schema and its migrations, applied in order inside one write transaction."""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE flows (
        id               TEXT PRIMARY KEY,
        flow             TEXT NOT NULL,
        input            TEXT NOT NULL,
        state            TEXT NOT NULL,
        version          TEXT,
        parent_id        TEXT,
        result           TEXT,
        error            TEXT,
        waiting_for      TEXT,
        wake_at          REAL,
        attempts         INTEGER NOT NULL DEFAULT 1,
        epoch            INTEGER NOT NULL DEFAULT 0,
        lease_owner      TEXT,
        lease_expires_at REAL,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        events           INTEGER NOT NULL DEFAULT 0,
        created_at       REAL NOT NULL,
        updated_at       REAL NOT NULL
    );
    CREATE INDEX flows_by_state ON flows (state, updated_at);
    CREATE INDEX flows_by_parent ON flows (parent_id) WHERE parent_id IS NOT NULL;
    CREATE TABLE steps (
        flow_id      TEXT NOT NULL,
        key          TEXT NOT NULL,
        name         TEXT NOT NULL,
        kind         TEXT NOT NULL,
        state        TEXT NOT NULL,
        attempts     INTEGER NOT NULL,
        result       TEXT,
        error        TEXT,
        started_at   REAL,
        completed_at REAL,
        fire_at      REAL,
        flow_attempt INTEGER NOT NULL,
        args_hash    TEXT,
        PRIMARY KEY (flow_id, key)
    ) WITHOUT ROWID;
    CREATE TABLE signals (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        flow_id     TEXT NOT NULL,
        name        TEXT NOT NULL,
        signal_id   TEXT,
        payload     TEXT NOT NULL,
        sent_at     REAL NOT NULL,
        consumed_at REAL
    );
    CREATE UNIQUE INDEX signals_by_id ON signals (flow_id, signal_id) WHERE signal_id IS NOT NULL;
    CREATE INDEX signals_waiting ON signals (flow_id, name, seq) WHERE consumed_at IS NULL;
    """,
    # 2: who asked for a flow (`NewFlow.origin`), and what pruning ended flows reads. Origins
    # are matched by prefix alongside the state index, so they get none of their own.
    """
    ALTER TABLE flows ADD COLUMN origin TEXT;
    CREATE INDEX signals_by_flow ON signals (flow_id);
    """,
)
