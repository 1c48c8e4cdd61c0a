"""Text in brackets reaches the terminal as written, on every message path (Rich would read
`[bold]`, `[type=…]` or `[postgres]` as markup and drop it)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.cli.support import ERGON, ROOT, SECRET, assert_one_line_error, environment
from tests.cli.support import ergon as run_ergon

ODD_ID = "[bold]id[/bold]:smile:"


def test_errors_keep_brackets() -> None:
    result = run_ergon("run", "no_[bold]such[/bold]:Flow", "--store", "memory://")
    assert_one_line_error(result, "cannot import module 'no_[bold]such[/bold]'")
    hidden = "import sys\nsys.modules['redis'] = None"
    missing = run_ergon("flows", "list", "--store", "redis://127.0.0.1:1/0", prelude=hidden)
    assert_one_line_error(missing, "pip install 'ergon[redis]'")


def test_flow_failures_and_flows_show_keep_brackets(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    failed = run_ergon("run", "tests.cli.flows:Brackets", "--flow-id", ODD_ID, "--store", url)
    assert failed.returncode == 1
    assert f"flow {ODD_ID} on sqlite:///" in failed.stderr
    assert "failed: ValueError: [red]not red[/] [bold]x[/] [type=value_error]" in failed.stderr
    assert SECRET not in failed.stderr

    shown = run_ergon("flows", "show", ODD_ID, "--store", url)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"{ODD_ID}  tests.cli.flows:Brackets  failed")
    assert "error ValueError: [red]not red[/] [bold]x[/] [type=value_error]" in shown.stdout
    assert "boom" in shown.stdout and "postgresql://app:***@db.internal" in shown.stdout
    assert SECRET not in shown.stdout

    listed = run_ergon("flows", "list", "--store", url)
    assert listed.stdout.splitlines()[1].startswith(f"{ODD_ID}  ")


def test_schedule_signal_and_cancel_keep_brackets(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    given = json.dumps({"note": "[i]note[/i]"})
    scheduled = run_ergon(
        "schedule",
        "tests.cli.flows:Brackets",
        "--input",
        given,
        "--flow-id",
        ODD_ID,
        "--store",
        url,
    )
    assert scheduled.stdout.strip() == ODD_ID, scheduled.stderr
    sent = run_ergon("signal", ODD_ID, "[go]", "--payload", '"[payload]"', "--store", url)
    assert sent.stdout.strip() == f"sent '[go]' to {ODD_ID}", sent.stderr
    invalid = run_ergon(
        "schedule", "tests.cli.flows:Brackets", "--input", '{"note": ["[x]"]}', "--store", url
    )
    assert_one_line_error(invalid, "invalid input for flow tests.cli.flows:Brackets: note:")
    cancelled = run_ergon("flows", "cancel", ODD_ID, "--store", url)
    assert cancelled.stdout.strip() == f"cancelled {ODD_ID}"
    ended = run_ergon("signal", ODD_ID, "[go]", "--store", url)
    assert_one_line_error(ended, f"flow '{ODD_ID}' has already ended (cancelled)")


def test_the_worker_banner_keeps_brackets(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    worker = subprocess.Popen(
        [*ERGON, "worker", "--import", "tests.cli.flows", "--name", "[w1]", "--store", url],
        cwd=ROOT,
        env=environment(),
        stderr=subprocess.PIPE,
        text=True,
    )
    assert worker.stderr is not None
    banner = worker.stderr.readline()
    worker.terminate()
    worker.communicate(timeout=30)
    assert banner.startswith("ergon worker [w1] on sqlite:///"), banner
