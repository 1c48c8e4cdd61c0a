"""`ergon-operator` as a command: help without a cluster, a plain hint without its extra."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def operator(*args: str, hide: str | None = None) -> subprocess.CompletedProcess[str]:
    prelude = f"import sys; sys.modules[{hide!r}] = None\n" if hide else ""
    code = f"{prelude}from ergon_operator.__main__ import main\nmain()"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'runtime'}:{ROOT / 'operator'}"}
    for name in ("ERGON_STORE", "ERGON_STORE_SECRET", "KUBECONFIG"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_help_needs_no_cluster_and_no_settings() -> None:
    result = operator("--help")
    assert result.returncode == 0, result.stderr
    assert "ERGON_STORE" in result.stdout and "ERGON_STORE_SECRET" in result.stdout


def test_help_works_without_the_operator_extra() -> None:
    assert operator("--help", hide="kopf").returncode == 0


def test_without_the_operator_extra_it_says_what_to_install() -> None:
    for missing in ("kopf", "kubernetes"):
        result = operator(hide=missing)
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert "pip install 'ergon[operator]'" in result.stderr


def test_missing_settings_are_one_line() -> None:
    result = operator()
    assert result.returncode == 2
    assert result.stderr.startswith("ergon-operator: ERGON_STORE is not set")
    assert result.stderr.count("\n") == 1
