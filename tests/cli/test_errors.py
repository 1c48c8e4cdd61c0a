"""Every command reports what stops it in one line on stderr, exit code 2, no traceback, and
never a password."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import ergon
from ergon.core.records import NewFlow
from tests.cli.support import (
    ERGON,
    ROOT,
    SECRET,
    UNREACHABLE_POSTGRES,
    UNREACHABLE_REDIS,
    assert_one_line_error,
    environment,
    postgres_url_with_password,
)
from tests.cli.support import ergon as run_ergon

PIPELINE = "tests.processes.flows:Pipeline"

# Every command that opens a store, with the store URL left to append.
STORE_COMMANDS = [
    ["flows", "list"],
    ["flows", "show", "some-id"],
    ["flows", "cancel", "some-id"],
    ["signal", "some-id", "go"],
    ["run", PIPELINE, "--input", '{"log": "/dev/null"}'],
    ["run-flow", "--flow-id", "some-id"],
    ["schedule", PIPELINE, "--input", '{"log": "/dev/null"}'],
    ["demo"],
]


@pytest.mark.parametrize("command", STORE_COMMANDS, ids=lambda c: " ".join(c[:2]))
@pytest.mark.parametrize(
    ("url", "message"),
    [
        (UNREACHABLE_POSTGRES, "cannot reach Postgres at 127.0.0.1:1"),
        (UNREACHABLE_REDIS, "cannot reach Redis at 127.0.0.1:1"),
        ("postgresql://user:S3cret@127.0.0.1:abc/db", "port 'abc' is not a port number"),
        ("redis://:S3cret@127.0.0.1:x1/0", "port 'x1' is not a port number"),
        ("mysql://user:S3cret@db/x", "unknown store URL scheme 'mysql' in 'mysql://user:***@db/x'"),
    ],
    ids=["postgres-unreachable", "redis-unreachable", "pg-port", "redis-port", "scheme"],
)
def test_store_errors_are_one_line(command: list[str], url: str, message: str) -> None:
    started = time.monotonic()
    result = run_ergon(*command, "--store", url, timeout=30)
    assert_one_line_error(result, message)
    assert time.monotonic() - started < 15  # no outage grace for a server never reached


@pytest.mark.parametrize("command", STORE_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_corrupt_sqlite_file_is_one_line(command: list[str], tmp_path: Path) -> None:
    db = tmp_path / "corrupt.db"
    db.write_bytes(b"this is not a database" + os.urandom(4096))
    result = run_ergon(*command, "--store", f"sqlite:///{db}", cwd=tmp_path)
    assert_one_line_error(result, "file is not a database")


def _make_read_only(path: Path) -> None:
    """chmod is enough for a user; root also needs the immutable flag (skip where unavailable)."""
    path.chmod(0o444)
    if os.geteuid() == 0:
        chattr = shutil.which("chattr")
        done = chattr and subprocess.run([chattr, "+i", str(path)], capture_output=True)
        if not done or done.returncode != 0:
            pytest.skip("cannot make a file read-only for root here (no chattr +i)")


@pytest.mark.parametrize(
    "command",
    [["demo"], ["run", PIPELINE, "--input", '{"log": "/dev/null"}'], ["flows", "list"]],
    ids=lambda c: c[0],
)
def test_a_read_only_sqlite_file_is_one_line(command: list[str], tmp_path: Path) -> None:
    db = tmp_path / "ro.db"
    result = run_ergon("flows", "list", "--store", f"sqlite:///{db}")  # creates the file
    assert result.returncode == 0, result.stderr
    for leftover in tmp_path.glob("ro.db-*"):
        leftover.unlink()
    _make_read_only(db)
    try:
        result = run_ergon(*command, "--store", f"sqlite:///{db}", cwd=tmp_path)
        assert_one_line_error(result, "readonly database")
    finally:
        if os.geteuid() == 0 and shutil.which("chattr"):
            subprocess.run(["chattr", "-i", str(db)], capture_output=True)


BAD_MODULES = {
    "syntax_error": ("import ergon\ndef broken(:\n    pass\n", "SyntaxError"),
    "two_entries": (
        "import ergon\n\n"
        "class Twice(ergon.Flow):\n"
        "    @ergon.flow\n    async def one(self) -> None: ...\n\n"
        "    @ergon.flow\n    async def two(self) -> None: ...\n",
        "marks 2 methods with @ergon.flow",
    ),
    "raises": ("raise RuntimeError('[setup] failed at import')\n", "RuntimeError: [setup] failed"),
    "missing_dependency": ("import no_such_dependency_xyz\n", "no_such_dependency_xyz"),
}


@pytest.mark.parametrize("module", sorted(BAD_MODULES))
@pytest.mark.parametrize("command", ["run", "schedule", "worker", "run-flow"])
def test_a_user_module_that_cannot_be_imported_is_one_line(
    module: str, command: str, tmp_path: Path
) -> None:
    source, message = BAD_MODULES[module]
    (tmp_path / f"{module}.py").write_text(source)
    store = f"sqlite:///{tmp_path / 'x.db'}"
    args = {
        "run": ["run", f"{module}:Twice", "--store", store],
        "schedule": ["schedule", f"{module}:Twice", "--store", store],
        "worker": ["worker", "--import", module, "--store", store],
        "run-flow": ["run-flow", "--flow-id", "x", "--import", module, "--store", store],
    }[command]
    result = run_ergon(*args, cwd=tmp_path)
    assert_one_line_error(result, f"cannot import module '{module}'", message)


def test_run_flow_records_a_flow_whose_module_does_not_import(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("def broken(:\n")
    url = f"sqlite:///{tmp_path / 'x.db'}"

    async def record() -> None:
        store = ergon.open_store(url)
        try:
            await store.create_flow(NewFlow("bad-1", "bad:Flow", "{}"))
        finally:
            await store.close()

    asyncio.run(record())
    result = run_ergon("run-flow", "--flow-id", "bad-1", "--store", url, cwd=tmp_path)
    assert_one_line_error(result, "cannot import module 'bad'", "SyntaxError")
    assert json.loads(result.stdout)["error"]["type"] == "InvalidFlow"


def test_a_flow_without_an_entry_point_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "plain.py").write_text("import ergon\nclass Plain(ergon.Flow):\n    x: int = 1\n")
    result = run_ergon("run", "plain:Plain", "--store", "memory://", cwd=tmp_path)
    assert_one_line_error(result, "Plain has no @ergon.flow method")


def test_verbose_prints_the_traceback_without_the_password() -> None:
    result = run_ergon("--verbose", "flows", "list", "--store", UNREACHABLE_POSTGRES)
    assert result.returncode == 2
    assert "Traceback" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: cannot reach Postgres")
    assert SECRET not in result.stderr


def test_a_missing_driver_names_the_extra_to_install() -> None:
    result = run_ergon(
        "flows",
        "list",
        "--store",
        UNREACHABLE_POSTGRES,
        prelude="import sys\nsys.modules['asyncpg'] = None",
    )
    assert_one_line_error(result, "pip install 'ergon[postgres]'")


@pytest.mark.integration
def test_run_and_run_flow_never_print_the_password_of_a_real_store(tmp_path: Path) -> None:
    url, password = postgres_url_with_password()
    missing = run_ergon("run-flow", "--flow-id", "nope", "--store", url)
    line = assert_one_line_error(
        missing, "no flow with id 'nope' in postgresql://", secret=password
    )
    assert ":***@" in line
    result = run_ergon(
        "run", PIPELINE, "--input", json.dumps({"log": str(tmp_path / "log")}), "--store", url
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == "abcd"
    assert ":***@" in result.stderr and password not in result.stderr + result.stdout
    failed = run_ergon("run", "tests.cli.flows:Brackets", "--store", url)
    assert failed.returncode == 1
    assert password not in failed.stderr + failed.stdout
    assert "postgresql://app:***@db.internal" in failed.stderr


def _unused_port() -> int:
    from tests.support.services import free_port

    return free_port()


def test_worker_waits_for_an_unreachable_store_and_stops_cleanly() -> None:
    store = ["--store", f"postgresql://user:{SECRET}@127.0.0.1:{_unused_port()}/db"]
    worker = subprocess.Popen(
        [*ERGON, "worker", "--import", "tests.cli.flows", *store],
        cwd=ROOT,
        env=environment(),
        stderr=subprocess.PIPE,
        text=True,
    )
    assert worker.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + 20
    while len(lines) < 2 and time.monotonic() < deadline:
        line = worker.stderr.readline()
        if not line:
            break
        lines.append(line)
    worker.terminate()
    rest = worker.communicate(timeout=20)[1]
    output = "".join(lines) + rest
    assert worker.returncode == 0, output
    assert "not reachable (attempt 1), retrying in 0.5 s" in lines[0], output
    assert "not reachable (attempt 2), retrying in 1.0 s" in lines[1], output
    assert "Traceback" not in output and SECRET not in output
    assert "user:***@127.0.0.1" in lines[0]


def test_worker_fails_at_once_on_a_corrupt_sqlite_file(tmp_path: Path) -> None:
    db = tmp_path / "corrupt.db"
    db.write_bytes(b"garbage" * 1000)
    result = run_ergon(
        "worker", "--import", "tests.cli.flows", "--store", f"sqlite:///{db}", timeout=20
    )
    assert_one_line_error(result, "file is not a database")
