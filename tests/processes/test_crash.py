"""Real processes, really killed: a flow resumes in a new process without re-running steps."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ergon
from tests.processes.flows import Nap, Pipeline, Retrying, Wave

ROOT = Path(__file__).resolve().parents[2]


def start(
    url: str, flow_id: str, flow: ergon.Flow, crash_at: str | None = None
) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "ERGON_TEST_CRASH_AT"}
    if crash_at:
        env["ERGON_TEST_CRASH_AT"] = crash_at
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.processes.run_flow",
            url,
            flow_id,
            type(flow).flow_name(),
            flow.model_dump_json(),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, dict[str, object] | None]:
    out, _ = process.communicate(timeout=60)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    return process.returncode, json.loads(lines[-1]) if lines else None


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


@pytest.mark.integration
def test_os_exit_mid_flow_resumes_in_a_new_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    flow = Pipeline(log=str(tmp_path / "log"))
    code, outcome = finish(start(url, "p-1", flow, crash_at="c"))
    assert code == 137 and outcome is None
    assert lines(tmp_path / "log") == ["a", "b", "c"]
    code, outcome = finish(start(url, "p-1", flow))
    assert code == 0
    assert outcome == {"outcome": "completed", "result": "abcd"}
    # a and b came back from their checkpoints; c was interrupted before its checkpoint.
    assert lines(tmp_path / "log") == ["a", "b", "c", "c", "d"]


@pytest.mark.integration
def test_sigkill_between_attempts_does_not_reset_the_attempt_count(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'retry.db'}"
    log = tmp_path / "log"
    flow = Retrying(log=str(log), fail_attempts=2)
    first = start(url, "r-1", flow)
    deadline = time.monotonic() + 30
    while lines(log) != ["attempt", "1"] and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # attempt 1 failed and its retry was recorded; now in the 1 s backoff
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = time.monotonic()
    code, outcome = finish(start(url, "r-1", flow))
    assert code == 0 and outcome == {"outcome": "completed", "result": 3}
    assert " ".join(lines(log)) == "attempt 1 attempt 2 attempt 3"
    # Only the rest of the first backoff was waited, plus the full second one.
    assert time.monotonic() - killed_at < 1.0 + 1.0 + 1.5


@pytest.mark.integration
@pytest.mark.parametrize("use_dag", [False, True], ids=["gather", "dag"])
def test_parallel_wave_resumes_after_a_crash_in_its_middle(tmp_path: Path, use_dag: bool) -> None:
    url = f"sqlite:///{tmp_path / 'wave.db'}"
    log = tmp_path / "log"
    flow = Wave(log=str(log), use_dag=use_dag)
    code, _ = finish(start(url, "w-1", flow, crash_at="part3"))
    assert code == 137
    assert sorted(lines(log)) == ["part0", "part1", "part2", "part3"]
    code, outcome = finish(start(url, "w-1", flow))
    assert code == 0
    expected = [60] if use_dag else [0, 10, 20, 30]
    assert outcome == {"outcome": "completed", "result": expected}
    # Only the step that was in flight when the process died ran again.
    rerun = lines(log)[4:]
    assert rerun == (["part3", "total"] if use_dag else ["part3"])


@pytest.mark.integration
def test_timer_survives_a_process_crash_and_only_the_rest_is_waited(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nap.db'}"
    log = tmp_path / "log"
    flow = Nap(log=str(log), seconds=1.5)
    command = [
        sys.executable,
        "-m",
        "ergon.cli.main",
        "run",
        type(flow).flow_name(),
        "--input",
        flow.model_dump_json(),
        "--store",
        url,
        "--flow-id",
        "nap-1",
    ]
    first = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 30
    while lines(log) != ["before"] and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)  # sleeping durably now
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = time.time()
    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout) == "rested"
    assert lines(log) == ["before", "after"]
    steps = asyncio.run(recorded_steps(url, "nap-1"))
    sleep, after = steps[1], steps[2]
    assert sleep.fire_at is not None and after.started_at is not None
    # The wake-up time is the one the killed process recorded (about 1 s after the kill), and the
    # new process resumed at it rather than starting a fresh 1.5 s wait.
    assert sleep.fire_at.timestamp() < killed_at + 1.5
    assert sleep.fire_at <= after.started_at
    assert (after.started_at - sleep.fire_at).total_seconds() < 0.5


async def recorded_steps(url: str, flow_id: str) -> list[ergon.StepRecord]:
    store = ergon.open_store(url)
    try:
        return await store.load_steps(flow_id)
    finally:
        await store.close()
