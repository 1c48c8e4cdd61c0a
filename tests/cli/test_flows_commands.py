"""`ergon schedule`, `flows list|show`, `signal`, and Ctrl-C during `ergon run`."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

import ergon
from tests.cli.support import ERGON, ROOT, assert_one_line_error, environment
from tests.cli.support import ergon as run_ergon

LONG_ID = "order-" + "x" * 120 + "-end"


def _status(url: str, flow_id: str) -> ergon.FlowStatus:
    async def read() -> ergon.FlowStatus:
        store = ergon.open_store(url)
        try:
            return await ergon.Client(store).status(flow_id)
        finally:
            await store.close()

    return asyncio.run(read())


def test_schedule_queues_a_flow_for_workers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    given = json.dumps({"log": str(tmp_path / "log")})
    pipeline = "tests.processes.flows:Pipeline"
    first = run_ergon("schedule", pipeline, "--input", given, "--store", url)
    assert first.returncode == 0, first.stderr
    assert first.stderr == ""
    flow_id = first.stdout.strip()
    assert _status(url, flow_id).state == "pending"

    again = ["--flow-id", LONG_ID, "--version", "1.4.0", "--store", url]
    named = run_ergon("schedule", pipeline, "--input", given, *again)
    assert named.stdout.strip() == LONG_ID
    status = _status(url, LONG_ID)
    assert (status.state, status.version) == ("pending", "1.4.0")
    assert run_ergon("schedule", pipeline, "--input", given, *again).stdout.strip() == LONG_ID


@pytest.mark.parametrize(
    ("input_json", "message"),
    [
        ("{oops", "--input is not valid JSON"),
        ('{"log": 3}', "invalid input for flow tests.processes.flows:Pipeline: log: Input should"),
        ("[1]", "invalid input for flow"),
    ],
)
def test_schedule_refuses_bad_input(input_json: str, message: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    result = run_ergon(
        "schedule", "tests.processes.flows:Pipeline", "--input", input_json, "--store", url
    )
    assert_one_line_error(result, message)


def test_schedule_warns_about_flows_workers_cannot_import(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    result = run_ergon("schedule", "tests.cli.flows:Script", "--store", url)
    assert result.returncode == 0
    assert result.stderr.startswith("warning: the flow's name is '__main__:Script'")
    assert len(result.stderr.splitlines()) == 1
    assert _status(url, result.stdout.strip()).flow == "__main__:Script"


def test_flows_list_prints_full_ids_when_piped(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    given = json.dumps({"log": str(tmp_path / "log")})
    for flow_id in (LONG_ID, "short"):
        result = run_ergon(
            "schedule",
            "tests.processes.flows:Pipeline",
            "--input",
            given,
            "--flow-id",
            flow_id,
            "--store",
            url,
        )
        assert result.returncode == 0, result.stderr
    for extra in ([], ["--wide"]):
        listed = run_ergon("flows", "list", "--store", url, *extra)
        lines = listed.stdout.splitlines()
        assert lines[0].split() == ["ID", "FLOW", "STATE", "ATTEMPTS", "WAITING", "UPDATED"]
        ids = sorted(line.split()[0] for line in lines[1:])
        assert ids == sorted([LONG_ID, "short"])
        assert all("…" not in line for line in lines)
    as_json = run_ergon("flows", "list", "--json", "--store", url)
    assert {json.loads(line)["id"] for line in as_json.stdout.splitlines()} == {LONG_ID, "short"}


def test_flows_show_is_a_timeline_with_durations_and_waits(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    running = subprocess.Popen(
        [*ERGON, "run", "tests.cli.flows:Timeline", "--flow-id", "t1", "--store", url],
        cwd=ROOT,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            shown = run_ergon("flows", "show", "t1", "--store", url)
            if "signal:go" in shown.stdout:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(shown.stdout + shown.stderr)
        rows = _rows(shown.stdout)
        flaky, nap, wait = rows["0"], rows["1"], rows["2"]
        assert (flaky["KIND"], flaky["STATE"], flaky["ATTEMPTS"]) == ("step", "completed", "3")
        assert _seconds(flaky["DURATION"]) >= 0.55  # two 0.3 s backoffs are part of it
        assert nap["KIND"] == "sleep" and _seconds(nap["DURATION"]) >= 0.28
        assert (wait["KIND"], wait["STATE"]) == ("signal", "waiting")
        assert wait["DURATION"].endswith("so far")
        assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d\d\d", flaky["STARTED"])
        sent = run_ergon("signal", "t1", "go", "--payload", '"ok"', "--store", url)
        assert sent.returncode == 0, sent.stderr
        out, err = running.communicate(timeout=30)
        assert running.returncode == 0, err
        assert json.loads(out) == "3 ok"
    finally:
        if running.poll() is None:
            running.kill()
            running.wait()
    done = _rows(run_ergon("flows", "show", "t1", "--store", url).stdout)
    assert done["2"]["STATE"] == "completed" and not done["2"]["DURATION"].endswith("so far")


def _rows(text: str) -> dict[str, dict[str, str]]:
    """The timeline's rows by position, cut at the header's column starts."""
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("POSITION"))
    names = lines[header].split()
    starts = [lines[header].index(name) for name in names]
    rows = {}
    for line in lines[header + 1 :]:
        cells = [
            line[start:end].strip() for start, end in zip(starts, [*starts[1:], None], strict=True)
        ]
        rows[cells[0]] = dict(zip(names, cells, strict=True))
    return rows


def _seconds(text: str) -> float:
    value, unit = text.split()[:2]
    return float(value) / 1000 if unit == "ms" else float(value)


def test_signal_says_when_the_flow_does_not_exist_or_has_ended(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    missing = run_ergon("signal", "later", "go", "--store", url)
    assert_one_line_error(missing, "no flow 'later' exists yet; the signal was not sent")
    queued = run_ergon("signal", "later", "go", "--allow-missing", "--store", url)
    assert queued.returncode == 0
    assert queued.stdout.strip() == "sent 'go' to later"
    assert "no flow 'later' exists yet; the signal waits for it" in queued.stderr

    given = json.dumps({"log": str(tmp_path / "log")})
    ran = run_ergon(
        "run",
        "tests.processes.flows:Pipeline",
        "--input",
        given,
        "--flow-id",
        "done",
        "--store",
        url,
    )
    assert ran.returncode == 0, ran.stderr
    ended = run_ergon("signal", "done", "go", "--store", url)
    assert_one_line_error(ended, "flow 'done' has already ended (completed)")


def test_ctrl_c_during_run_prints_the_command_that_resumes_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'slow.db'}"
    running = subprocess.Popen(
        [*ERGON, "run", "tests.cli.flows:Slow", "--flow-id", "slow-1", "--store", url],
        cwd=ROOT,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell running the suite in the background ignores SIGINT, and its children would
        # inherit that: this one takes Ctrl-C as a terminal user's process does.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert running.stdout is not None
    for _ in range(3):
        assert running.stdout.readline() == "tick\n"
    running.send_signal(signal.SIGINT)
    _, err = running.communicate(timeout=30)
    assert running.returncode == 130, err
    last = err.splitlines()[-1]
    assert last.startswith(
        "interrupted: flow slow-1 stopped at its last checkpoint; resume it with:"
    )
    assert "Traceback" not in err
    command = shlex.split(last.partition("resume it with: ")[2])
    assert command[:2] == ["ergon", "run"]
    resumed = run_ergon(*command[1:])
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout.splitlines()[-1]) == 100
    assert resumed.stdout.count("tick") < 100  # the steps recorded before Ctrl-C did not run again
