"""Real processes, really killed: a flow resumes in a new process without re-running steps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ergon
import pytest

from tests.processes.flows import Pipeline, Retrying

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
