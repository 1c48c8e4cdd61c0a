"""The `ergon` command line, run as a real process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def ergon(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    import os

    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    full_env.pop("ERGON_STORE", None)
    return subprocess.run(
        [sys.executable, "-m", "ergon.cli.main", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.integration
def test_demo_kills_its_worker_and_shows_replayed_steps(tmp_path: Path) -> None:
    result = ergon("demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = result.stderr
    assert "SIGKILL" in text
    assert "replayed from checkpoint" in text
    assert "order A-1042 shipped" in text
    assert (tmp_path / "ergon.db").exists()  # the embedded SQLite default


def test_run_prints_the_result(tmp_path: Path) -> None:
    result = ergon(
        "run",
        "tests.processes.flows:Pipeline",
        "--input",
        json.dumps({"log": str(tmp_path / "log")}),
        "--store",
        f"sqlite:///{tmp_path / 'r.db'}",
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == "abcd"


def test_run_shows_invalid_input_plainly(tmp_path: Path) -> None:
    result = ergon(
        "run",
        "tests.processes.flows:Retrying",
        "--input",
        '{"fail_attempts": "x"}',
        cwd=ROOT,
        env={"ERGON_STORE": f"sqlite:///{tmp_path / 'r.db'}"},
    )
    assert result.returncode == 2
    assert "invalid input for flow tests.processes.flows:Retrying" in result.stderr
    assert "log: Field required" in result.stderr
    assert "fail_attempts: Input should be a valid integer" in result.stderr
    assert not (tmp_path / "r.db").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "nope"], "must look like 'package.module:FlowClass'"),
        (["run", "no_such_module:Flow"], "cannot import module 'no_such_module'"),
        (
            ["run", "tests.processes.flows:Pipeline", "--input", "{oops"],
            "--input is not valid JSON",
        ),
        (
            ["run", "tests.processes.flows:Pipeline", "--input", "{}", "--store", "mysql://x"],
            "unknown store URL scheme",
        ),
        (
            ["run", "tests.processes.flows:Pipeline", "--input", "{}", "--store", "sqlite://x.db"],
            "three slashes",
        ),
        (
            [
                "run",
                "tests.processes.flows:Pipeline",
                "--input",
                "{}",
                "--store",
                "sqlite:////no/such/dir/x.db",
            ],
            "directory /no/such/dir does not exist",
        ),
    ],
)
def test_bad_input_is_a_clear_error(args: list[str], message: str, tmp_path: Path) -> None:
    if "--input" in args and args[args.index("--input") + 1] == "{}":
        args = [
            *args[: args.index("--input") + 1],
            json.dumps({"log": str(tmp_path / "log")}),
            *args[args.index("--input") + 2 :],
        ]
    result = ergon(*args, cwd=ROOT)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_failed_flow_exits_1(tmp_path: Path) -> None:
    result = ergon(
        "run",
        "tests.processes.flows:Retrying",
        "--input",
        json.dumps({"log": str(tmp_path / "log"), "fail_attempts": 9}),
        "--store",
        "memory://",
        cwd=ROOT,
    )
    assert result.returncode == 1
    assert "failed: ConnectionError: attempt 5 failed" in result.stderr


def test_run_flow_executes_a_recorded_flow(tmp_path: Path) -> None:
    import asyncio

    import ergon as lib
    from tests.processes.flows import Pipeline

    url = f"sqlite:///{tmp_path / 'rf.db'}"

    async def schedule() -> str:
        store = lib.open_store(url)
        try:
            return await lib.Client(store).schedule(
                Pipeline(log=str(tmp_path / "log")), flow_id="rf-1"
            )
        finally:
            await store.close()

    asyncio.run(schedule())
    result = ergon("run-flow", "--flow-id", "rf-1", "--store", url, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"outcome": "completed", "result": "abcd"}
    missing = ergon("run-flow", "--flow-id", "nope", "--store", url, cwd=ROOT)
    assert missing.returncode == 2 and "no flow with id 'nope'" in missing.stderr


@pytest.mark.parametrize(
    ("flow", "input_json", "kind", "message"),
    [
        ("tests.processes.flows:Missing", "{}", "InvalidFlow", "has no attribute 'Missing'"),
        ("no.such.module:Flow", "{}", "InvalidFlow", "cannot import module 'no.such.module'"),
        (
            "tests.processes.flows:Retrying",
            '{"fail_attempts": 1}',
            "InvalidInput",
            "log: Field required",
        ),
    ],
)
def test_run_flow_records_flows_that_cannot_run(
    tmp_path: Path, flow: str, input_json: str, kind: str, message: str
) -> None:
    import asyncio

    import ergon as lib
    from ergon.core.records import NewFlow

    url = f"sqlite:///{tmp_path / 'bad.db'}"

    async def record() -> None:
        store = lib.open_store(url)
        try:
            await store.create_flow(NewFlow("bad-1", flow, input_json))
        finally:
            await store.close()

    async def status() -> lib.FlowStatus:
        store = lib.open_store(url)
        try:
            return await lib.Client(store).status("bad-1")
        finally:
            await store.close()

    asyncio.run(record())
    result = ergon("run-flow", "--flow-id", "bad-1", "--store", url, cwd=ROOT)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    recorded = asyncio.run(status())
    assert recorded.state == "failed" and recorded.error is not None
    assert (recorded.error.type, recorded.error.retryable) == (kind, False)
    assert message in recorded.error.message
