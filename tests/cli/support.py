"""Running the real `ergon` command in a process, and what its error output must look like."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tests.support.databases import fresh_schema, postgres_database

ROOT = Path(__file__).resolve().parents[2]
ERGON = [sys.executable, "-m", "ergon.cli.main"]
SECRET = "S3cret"
UNREACHABLE_POSTGRES = f"postgresql://user:{SECRET}@127.0.0.1:1/db"
UNREACHABLE_REDIS = f"redis://:{SECRET}@127.0.0.1:1/0"


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(extra or {})}
    env.pop("ERGON_STORE", None)
    return env


def ergon(
    *args: str,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    prelude: str = "",
) -> subprocess.CompletedProcess[str]:
    """`ergon ARGS` in a new process; `prelude` is Python run first (e.g. to hide a driver)."""
    code = f"{prelude}\nimport sys\nfrom ergon.cli.main import main\nsys.argv[0] = 'ergon'\nmain()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env=environment(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(
    result: subprocess.CompletedProcess[str], *expected: str, secret: str = SECRET
) -> str:
    """Exit code 2, exactly one line on stderr starting with `error:`, no traceback, no secret."""
    lines = result.stderr.splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert secret not in result.stderr + result.stdout
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def postgres_url_with_password() -> tuple[str, str]:
    """A URL of the test Postgres (own schema) that carries a password, and the password.

    The test server trusts local connections, so an injected password is simply not checked; a
    server whose DSN already has one keeps it."""
    parts = urlsplit(postgres_database())
    password = parts.password or SECRET
    if parts.password is None:
        user = parts.username or "postgres"
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{user}:{password}@{host}")
    return f"{urlunsplit(parts)}?schema={fresh_schema()}", password
