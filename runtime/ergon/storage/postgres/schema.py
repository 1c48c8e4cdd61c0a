"""The Postgres schema, its migrations, and every statement `PostgresStore` sends.

All tables live in one Postgres schema (`ergon` by default), so several independent stores can
share a database and a test can get a fresh store by naming a fresh schema. Statements are
rendered once per store with the schema's quoted name; asyncpg prepares each text once per
connection and reuses it, so the hot path sends only Bind/Execute.

Migrations are numbered by their position in `MIGRATIONS`; `schema_migrations` holds one row per
applied migration. `migrate` runs them under `pg_advisory_xact_lock`, so any number of processes
may start against an empty database at once: the first migrates, the others wait for its commit
and find nothing left to do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import asyncpg

from ergon.core.errors import StoreError
from ergon.storage.rows import FLOW_COLUMN_LIST as FLOW_COLUMNS
from ergon.storage.rows import STEP_COLUMN_LIST as STEP_COLUMNS

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE {s}.flows (
        id               text PRIMARY KEY,
        flow             text NOT NULL,
        input            text NOT NULL,
        state            text NOT NULL,
        version          text,
        parent_id        text,
        result           text,
        error            text,
        waiting_for      text,
        wake_at          timestamptz,
        attempts         integer NOT NULL DEFAULT 1,
        epoch            bigint NOT NULL DEFAULT 0,
        lease_owner      text,
        lease_expires_at timestamptz,
        cancel_requested boolean NOT NULL DEFAULT false,
        events           bigint NOT NULL DEFAULT 0,
        created_at       timestamptz NOT NULL,
        updated_at       timestamptz NOT NULL
    );
    CREATE INDEX flows_by_creation ON {s}.flows (created_at DESC, id DESC);
    CREATE INDEX flows_by_state ON {s}.flows (state, created_at DESC);
    CREATE INDEX flows_by_parent ON {s}.flows (parent_id) WHERE parent_id IS NOT NULL;
    CREATE INDEX flows_pending ON {s}.flows (updated_at) WHERE state = 'pending';
    CREATE INDEX flows_timers ON {s}.flows (wake_at)
        WHERE state = 'suspended' AND wake_at IS NOT NULL;
    CREATE INDEX flows_leases ON {s}.flows (lease_expires_at)
        WHERE state = 'running' AND lease_expires_at IS NOT NULL;
    CREATE TABLE {s}.steps (
        flow_id      text NOT NULL,
        key          text NOT NULL,
        name         text NOT NULL,
        kind         text NOT NULL,
        state        text NOT NULL,
        attempts     integer NOT NULL,
        result       text,
        error        text,
        started_at   timestamptz,
        completed_at timestamptz,
        fire_at      timestamptz,
        flow_attempt integer NOT NULL,
        args_hash    text,
        PRIMARY KEY (flow_id, key)
    );
    CREATE TABLE {s}.signals (
        seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        flow_id     text NOT NULL,
        name        text NOT NULL,
        signal_id   text,
        payload     text NOT NULL,
        sent_at     timestamptz NOT NULL,
        consumed_at timestamptz
    );
    CREATE UNIQUE INDEX signals_by_id ON {s}.signals (flow_id, signal_id)
        WHERE signal_id IS NOT NULL;
    CREATE INDEX signals_waiting ON {s}.signals (flow_id, name, seq) WHERE consumed_at IS NULL;
    """,
    # 2: who asked for a flow (`NewFlow.origin`), and what pruning ended flows reads. Origins
    # are matched by prefix alongside a state or end-time index, so they get none of their own.
    """
    ALTER TABLE {s}.flows ADD COLUMN origin text;
    CREATE INDEX flows_ended ON {s}.flows (updated_at)
        WHERE state IN ('completed', 'failed', 'cancelled');
    CREATE INDEX signals_by_flow ON {s}.signals (flow_id);
    """,
)

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_ROLE = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")


def check_schema_name(schema: str) -> str:
    """The schema name, if it is a plain identifier (no quoting games in generated SQL)."""
    if not isinstance(schema, str) or not _IDENTIFIER.fullmatch(schema):
        raise ValueError(
            f"Postgres schema name {schema!r} must be a plain identifier: letters, digits and "
            "underscores, not starting with a digit, at most 63 characters"
        )
    return schema


def check_role_name(role: str) -> str:
    """The role name, if it is a plain identifier (`$` allowed after the first character, as in
    a tenant's owner role `ergon_ns_team_a$owner`)."""
    if not isinstance(role, str) or not _ROLE.fullmatch(role):
        raise ValueError(
            f"Postgres role name {role!r} must be a plain identifier: letters, digits, "
            "underscores and $, not starting with a digit or $, at most 63 characters"
        )
    return role


async def schema_version(conn: asyncpg.Connection, schema: str) -> int:
    """The highest migration applied in `schema` (0 when the schema or its table is missing).
    A missing table is looked up first rather than caught, so that this also works inside a
    transaction (an error would abort it), as when the operator moves a tenant's schema."""
    if not await conn.fetchval(
        "SELECT to_regclass($1) IS NOT NULL", f'"{schema}".schema_migrations'
    ):
        return 0
    try:
        value = await conn.fetchval(f'SELECT max(version) FROM "{schema}".schema_migrations')
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
        return 0
    return int(value or 0)


async def migrate(conn: asyncpg.Connection, schema: str) -> int:
    """Bring `schema` up to date; returns the number of migrations this call applied.

    The version is read first without a lock, so a started system never takes the migration
    lock (nor needs CREATE privileges) again. Behind, it takes a transaction-scoped advisory
    lock keyed by the schema name and re-reads the version under it. The schema is created only
    when missing: a role that owns a schema made for it (a tenant's, `CREATE SCHEMA ...
    AUTHORIZATION`) migrates it without the database-wide CREATE privilege that `CREATE SCHEMA
    IF NOT EXISTS` checks even when the schema exists.
    """
    if await schema_version(conn, schema) == len(MIGRATIONS):
        return 0
    s = f'"{schema}"'
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"ergon:{schema}")
        if not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", schema
        ):
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {s}.schema_migrations ("
            "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = await schema_version(conn, schema)
        if current > len(MIGRATIONS):
            raise StoreError(
                f"Postgres schema {schema!r} is at version {current}, newer than this ergon "
                f"understands ({len(MIGRATIONS)}); upgrade ergon"
            )
        for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
            await conn.execute(script.format(s=s))
            await conn.execute(f"INSERT INTO {s}.schema_migrations (version) VALUES ($1)", number)
        return len(MIGRATIONS) - current


# --- statements ------------------------------------------------------------------------------

_TERMINAL = "('completed', 'failed', 'cancelled')"
_STEP_VALUES = "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13"
_ON_STEP_CONFLICT = (
    "ON CONFLICT (flow_id, key) DO UPDATE SET name = excluded.name, kind = excluded.kind, "
    "state = excluded.state, attempts = excluded.attempts, result = excluded.result, "
    "error = excluded.error, started_at = excluded.started_at, "
    "completed_at = excluded.completed_at, fire_at = excluded.fire_at, "
    "flow_attempt = excluded.flow_attempt, args_hash = excluded.args_hash"
)
# The fence (mirrors `transitions.accepts_checkpoint`): the flow still has this epoch, runs, and
# nobody asked it to stop. FOR SHARE makes a
# concurrent take-over (an UPDATE of the flow row) wait for this checkpoint's commit, and makes
# this statement re-check the row if the take-over committed first, so a stale executor can
# never land a checkpoint after the new one has read the steps.
_HELD = (
    "SELECT 1 FROM {s}.flows WHERE id = $1 AND epoch = $14 AND state = 'running' "
    "AND NOT cancel_requested FOR SHARE"
)
_CONSUME = (
    "UPDATE {s}.signals SET consumed_at = now() "
    "WHERE seq = $15 AND flow_id = $1 AND consumed_at IS NULL"
)
# Makes a suspended flow runnable and moves its event counter (a signal, or a child that ended).
# Mirrors `transitions.wake`.
_WAKE = (
    "UPDATE {s}.flows SET events = events + 1, "
    "wake_at = CASE WHEN state = 'suspended' THEN NULL ELSE wake_at END, "
    "state = CASE WHEN state = 'suspended' THEN 'pending' ELSE state END, updated_at = now() "
    "WHERE id = "
)
# Ends at once (rather than at the next step): nobody runs it, or its runner's lease ran out.
# Mirrors `transitions.ends_on_cancel`.
_ENDS_NOW = (
    "(state IN ('pending', 'suspended') OR (state = 'running' AND lease_expires_at < now()))"
)
# Mirrors `transitions.may_claim`: $4 the worker's version (NULL: only unversioned flows; with
# `exclusive` and a version, only that version's).
_VERSION_OK = "(version IS NULL OR version = $4)"
_VERSION_ONLY = "version = $4"
# Mirrors `transitions.is_runnable`.
_RUNNABLE = (
    "(state = 'pending' OR (state = 'suspended' AND wake_at <= now()) "
    "OR (state = 'running' AND lease_expires_at < now()))"
)


@dataclass(frozen=True, slots=True)
class Statements:
    """Every statement of one store, rendered for its schema."""

    open_flow: str
    get_flow: str
    load_steps: str
    save_step_held: str
    save_step_held_consuming: str
    save_step_free: str
    save_step_free_consuming: str
    finish_flow: str
    create_flow: str
    send_signal: str
    next_signal: str
    request_cancel: str
    claim_flows: str
    claim_flows_exclusive: str
    renew_leases: str
    list_flows: str
    prune_flows: str
    prune_flows_dry: str
    queue_depth: str


def statements(schema: str) -> Statements:
    s = f'"{check_schema_name(schema)}"'
    insert_step = f"INSERT INTO {s}.steps (flow_id, {STEP_COLUMNS})"
    held = _HELD.format(s=s)
    consume = _CONSUME.format(s=s)
    wake = _WAKE.format(s=s)
    return Statements(
        # Mirrors `transitions.created`, `open_refusal` and `take_over`.
        # Creates the flow or takes it over in one statement. `xmax = 0` tells a fresh insert
        # from an update; no row comes back when the flow ended or has another flow name.
        open_flow=(
            f"INSERT INTO {s}.flows AS f (id, flow, input, state, version, parent_id, epoch, "
            "lease_owner, origin, created_at, updated_at) "
            "VALUES ($1, $2, $3, 'running', $4, $5, 1, $6, $7, now(), now()) "
            "ON CONFLICT (id) DO UPDATE SET state = 'running', epoch = f.epoch + 1, "
            "lease_owner = excluded.lease_owner, lease_expires_at = NULL, waiting_for = NULL, "
            "wake_at = NULL, updated_at = excluded.updated_at "
            f"WHERE f.flow = excluded.flow AND f.state NOT IN {_TERMINAL} "
            f"RETURNING {FLOW_COLUMNS}, (xmax::text = '0') AS inserted"
        ),
        get_flow=f"SELECT {FLOW_COLUMNS} FROM {s}.flows WHERE id = $1",
        load_steps=f"SELECT {STEP_COLUMNS} FROM {s}.steps WHERE flow_id = $1",
        save_step_held=(
            f"{insert_step} SELECT {_STEP_VALUES} WHERE EXISTS ({held}) {_ON_STEP_CONFLICT}"
        ),
        save_step_held_consuming=(
            f"WITH held AS ({held}), "
            f"saved AS ({insert_step} SELECT {_STEP_VALUES} FROM held {_ON_STEP_CONFLICT} "
            "RETURNING 1), "
            f"consumed AS ({consume} AND EXISTS (SELECT 1 FROM held)) "
            "SELECT count(*) FROM saved"
        ),
        save_step_free=f"{insert_step} VALUES ({_STEP_VALUES}) {_ON_STEP_CONFLICT}",
        save_step_free_consuming=(
            f"WITH saved AS ({insert_step} VALUES ({_STEP_VALUES}) {_ON_STEP_CONFLICT} "
            f"RETURNING 1), consumed AS ({consume.replace('$15', '$14')}) "
            "SELECT count(*) FROM saved"
        ),
        # $2 state, $8 events seen, $9 whether the state is terminal, $10 epoch (NULL: unfenced),
        # $11 the notification channel. A suspension that raced an event becomes pending.
        # Mirrors `transitions.accepts_end`, `settle` (the race rule), `finish` and
        # `parent_to_wake`.
        finish_flow=(
            f"WITH done AS (UPDATE {s}.flows SET "
            "state = CASE WHEN $2::text = 'suspended' AND events > $8::bigint THEN 'pending' "
            "ELSE $2::text END, result = COALESCE($3::text, result), "
            "error = COALESCE($4::text, error), waiting_for = $5::text, "
            "wake_at = CASE WHEN $2::text = 'suspended' AND events > $8::bigint THEN NULL "
            "ELSE $6::timestamptz END, attempts = COALESCE($7::integer, attempts), "
            "lease_owner = NULL, lease_expires_at = NULL, "
            "cancel_requested = cancel_requested AND NOT $9::boolean, updated_at = now() "
            f"WHERE id = $1 AND ($10::bigint IS NULL OR epoch = $10) RETURNING {FLOW_COLUMNS}), "
            f"parent AS ({wake}(SELECT parent_id FROM done WHERE $9::boolean)) "
            f"SELECT {FLOW_COLUMNS}, pg_notify($11, $1) FROM done"
        ),
        create_flow=(
            f"INSERT INTO {s}.flows (id, flow, input, state, version, parent_id, origin, "
            "created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $8, now(), now()) "
            f"ON CONFLICT (id) DO NOTHING RETURNING {FLOW_COLUMNS}, pg_notify($7, $1)"
        ),
        send_signal=(
            f"WITH sent AS (INSERT INTO {s}.signals (flow_id, name, signal_id, payload, sent_at) "
            "VALUES ($1, $2, $3, $4, now()) ON CONFLICT DO NOTHING RETURNING seq), "
            f"woken AS ({wake}$1 AND EXISTS (SELECT 1 FROM sent)) "
            "SELECT seq, pg_notify($5, $1) FROM sent"
        ),
        next_signal=(
            f"SELECT seq, payload, signal_id, sent_at FROM {s}.signals "
            "WHERE flow_id = $1 AND name = $2 AND consumed_at IS NULL ORDER BY seq LIMIT 1"
        ),
        # Mirrors `transitions.cancel` (and `parent_to_wake`).
        request_cancel=(
            f"WITH ended AS (UPDATE {s}.flows SET "
            f"state = CASE WHEN {_ENDS_NOW} THEN 'cancelled' ELSE state END, "
            f"cancel_requested = CASE WHEN {_ENDS_NOW} THEN cancel_requested ELSE true END, "
            f"waiting_for = CASE WHEN {_ENDS_NOW} THEN NULL ELSE waiting_for END, "
            f"wake_at = CASE WHEN {_ENDS_NOW} THEN NULL ELSE wake_at END, "
            f"lease_owner = CASE WHEN {_ENDS_NOW} THEN NULL ELSE lease_owner END, "
            f"lease_expires_at = CASE WHEN {_ENDS_NOW} THEN NULL ELSE lease_expires_at END, "
            f"updated_at = now() WHERE id = $1 AND state NOT IN {_TERMINAL} "
            f"RETURNING {FLOW_COLUMNS}), "
            f"parent AS ({wake}(SELECT parent_id FROM ended WHERE state = 'cancelled')) "
            f"SELECT {FLOW_COLUMNS}, pg_notify($2, $1) FROM ended"
        ),
        claim_flows=_claim_flows(s, _VERSION_OK),
        claim_flows_exclusive=_claim_flows(s, _VERSION_ONLY),
        # Mirrors `transitions.holds`.
        renew_leases=(
            f"UPDATE {s}.flows f SET lease_expires_at = now() + make_interval(secs => $3) "
            "FROM unnest($1::text[], $2::bigint[]) AS l(id, epoch) "
            "WHERE f.id = l.id AND f.epoch = l.epoch AND f.state = 'running' "
            "RETURNING f.id, f.cancel_requested"
        ),
        list_flows=f"SELECT {FLOW_COLUMNS} FROM {s}.flows",
        # $1 cutoff, $2 origin prefix (NULL: any), $3 ids (NULL: any), $4 limit.
        prune_flows=(
            f"WITH doomed AS ({_prunable(s)} FOR UPDATE SKIP LOCKED), "
            f"steps AS (DELETE FROM {s}.steps WHERE flow_id IN (SELECT id FROM doomed)), "
            f"signals AS (DELETE FROM {s}.signals WHERE flow_id IN (SELECT id FROM doomed)), "
            f"gone AS (DELETE FROM {s}.flows WHERE id IN (SELECT id FROM doomed) RETURNING id) "
            "SELECT id FROM gone"
        ),
        prune_flows_dry=_prunable(s),
        # Mirrors `transitions.depth` (and `depth_bucket`). $1 the version (NULL: unversioned
        # flows). The state index finds the unfinished flows; ended ones are never read.
        queue_depth=(
            f"SELECT count(*) FILTER (WHERE {_RUNNABLE}), "
            "count(*) FILTER (WHERE state = 'running' AND (lease_expires_at IS NULL "
            "OR lease_expires_at >= now())), "
            "count(*) FILTER (WHERE state = 'suspended' AND (wake_at IS NULL "
            "OR wake_at > now())), "
            "LEAST(min(wake_at) FILTER (WHERE state = 'suspended' AND wake_at > now()), "
            "min(lease_expires_at) FILTER (WHERE state = 'running' "
            "AND lease_expires_at >= now())) "
            f"FROM {s}.flows WHERE state IN ('pending', 'running', 'suspended') "
            "AND version IS NOT DISTINCT FROM $1::text"
        ),
    )


def _claim_flows(s: str, version_ok: str) -> str:
    """The claim. Mirrors `transitions.is_runnable`, `may_claim` (`version_ok`) and `claim`.
    $1 owner, $2 lease seconds, $3 limit, $4 version. One row always comes back: the next time
    a flow it may claim becomes runnable by time alone, beside each claimed flow (if any)."""
    return (
        f"WITH picked AS (SELECT id FROM {s}.flows WHERE {_RUNNABLE} "
        f"AND {version_ok} ORDER BY updated_at LIMIT $3 FOR UPDATE SKIP LOCKED), "
        f"claimed AS (UPDATE {s}.flows f SET state = 'running', epoch = f.epoch + 1, "
        "lease_owner = $1, lease_expires_at = now() + make_interval(secs => $2), "
        "updated_at = now() FROM picked WHERE f.id = picked.id "
        f"RETURNING {', '.join('f.' + c for c in FLOW_COLUMNS.split(', '))}), "
        "upcoming AS (SELECT LEAST("
        f"(SELECT min(wake_at) FROM {s}.flows WHERE state = 'suspended' AND wake_at > now() "
        f"AND {version_ok}), "
        f"(SELECT min(lease_expires_at) FROM {s}.flows WHERE state = 'running' "
        f"AND lease_expires_at >= now() AND {version_ok})) AS at) "
        f"SELECT {', '.join('claimed.' + c for c in FLOW_COLUMNS.split(', '))}, upcoming.at "
        "FROM upcoming LEFT JOIN claimed ON true"
    )


def _prunable(s: str) -> str:
    """The ids `prune_flows` takes, oldest end first. Mirrors `transitions.prunable` and
    `origin_matches` (a prefix compared with `left`, not LIKE, whose wildcards a prefix would
    have to escape) and the rule that a child whose parent has not ended stays."""
    return (
        f"SELECT id FROM {s}.flows f WHERE state IN {_TERMINAL} AND updated_at < $1 "
        "AND ($2::text IS NULL OR (origin IS NOT NULL "
        "AND left(origin, length($2::text)) = $2::text)) "
        "AND ($3::text[] IS NULL OR id = ANY($3::text[])) "
        f"AND (parent_id IS NULL OR NOT EXISTS (SELECT 1 FROM {s}.flows p "
        f"WHERE p.id = f.parent_id AND p.state NOT IN {_TERMINAL})) "
        "ORDER BY updated_at, id LIMIT $4"
    )
