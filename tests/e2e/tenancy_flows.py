"""A flow for tests/e2e/test_tenancy.py: run in a worker pod of one namespace, it tries to read
and write another namespace's tables with the DSN its pod was given (`ERGON_STORE`, from the
namespace's Secret) and returns what Postgres answered to each statement."""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

import ergon

_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class TenantProbeFlow(ergon.Flow):
    other_schema: str

    @ergon.flow
    async def run(self) -> dict[str, str]:
        return await self.probe()

    @ergon.step
    async def probe(self) -> dict[str, str]:
        if not _SCHEMA.fullmatch(self.other_schema):
            raise ValueError("other_schema is a plain identifier")
        parts = urlsplit(os.environ["ERGON_STORE"])
        options = dict(parse_qsl(parts.query))
        own = options.pop("schema")
        conn = await asyncpg.connect(urlunsplit(parts._replace(query=urlencode(options))))
        other = f'"{self.other_schema}"'
        answers = {
            "user": str(await conn.fetchval("SELECT current_user")),
            "own flows": str(await conn.fetchval(f'SELECT count(*) FROM "{own}".flows')),
        }
        statements = {
            "select": f"SELECT count(*) FROM {other}.flows",
            "insert": f"INSERT INTO {other}.signals (flow_id, name, payload, sent_at) "
            "VALUES ('x', 'x', '{}', now())",
            "update": f"UPDATE {other}.flows SET state = 'cancelled'",
            "delete": f"DELETE FROM {other}.steps",
        }
        try:
            for what, sql in statements.items():
                try:
                    await conn.execute(sql)
                except asyncpg.PostgresError as exc:
                    answers[what] = f"{type(exc).__name__}: {exc}"
                else:
                    answers[what] = "allowed"
        finally:
            await conn.close()
        return answers
