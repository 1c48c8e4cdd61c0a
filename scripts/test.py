"""The test command (`make test`): everything CI checks, on a fresh machine too.

1. Tools: the real kubectl and helm binaries into .tools/bin.
2. Services: Postgres and Redis reachable at ERGON_TEST_POSTGRES_DSN / ERGON_TEST_REDIS_URL,
   or throwaway servers started from the local binaries.
3. Static checks beside the pytest suites, in parallel: ruff check, ruff format --check,
   mypy --strict over the whole tree (tests, benchmarks, scripts and examples too), import-linter.
4. No test may be skipped: a skipped integration suite fails the run.

Usage: scripts/test.py [--only static|tests] [pytest arguments...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.services import ensure_services  # noqa: E402

BIN = Path(sys.executable).parent
STATIC = [
    [str(BIN / "ruff"), "check", "."],
    [str(BIN / "ruff"), "format", "--check", "."],
    [str(BIN / "mypy")],  # --strict over the whole tree: `files` in pyproject.toml's [tool.mypy]
    [str(BIN / "lint-imports")],
]


def tools_env() -> dict[str, str]:
    tools = ROOT / ".tools" / "bin"
    if (ROOT / "tests" / "cluster" / "tools.py").exists():
        subprocess.run(
            [sys.executable, "-m", "tests.cluster.tools", "--dest", str(tools)],
            cwd=ROOT,
            check=True,
        )
    return {"KUBECTL": str(tools / "kubectl"), "HELM": str(tools / "helm")}


def run_static() -> list[tuple[list[str], subprocess.Popen[bytes]]]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'runtime'}:{ROOT / 'operator'}"}
    return [(cmd, subprocess.Popen(cmd, cwd=ROOT, env=env)) for cmd in STATIC]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--only", choices=["static", "tests"])
    args, pytest_args = parser.parse_known_args()
    started = time.monotonic()
    failures: list[str] = []
    static = run_static() if args.only != "tests" else []
    if args.only != "static":
        env = {**os.environ, **tools_env(), "ERGON_NO_SKIPS": "1"}
        with ensure_services() as services:
            env.update(services)
            print(f"services: {services}", flush=True)
            command = [sys.executable, "-m", "pytest", *(pytest_args or ["tests"])]
            if subprocess.run(command, cwd=ROOT, env=env).returncode != 0:
                failures.append("pytest")
    for cmd, process in static:
        if process.wait() != 0:
            failures.append(" ".join([Path(cmd[0]).name, *cmd[1:]]))
    elapsed = time.monotonic() - started
    if failures:
        print(f"\nFAILED after {elapsed:.0f} s: {', '.join(failures)}", flush=True)
        return 1
    print(f"\nall checks passed in {elapsed:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
