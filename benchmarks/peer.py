"""DBOS Transact, the peer: its own virtual environment and subprocesses that report JSON.

The peer is installed with pip into `benchmarks/.peers/dbos` (gitignored) the first time it is
needed and reused after. Its workloads live in `peers/dbos_workloads.py`, which imports only
`dbos` and the standard library, so nothing of Ergon's environment leaks into the peer's numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VENV = HERE / ".peers" / "dbos"
SCRIPT = HERE / "peers" / "dbos_workloads.py"
# Pinned below the next major so a rerun next month measures the same API.
REQUIREMENT = os.environ.get("ERGON_BENCH_DBOS", "dbos>=3,<4")


class PeerUnavailable(RuntimeError):
    """DBOS could not be installed or run here; the report says so instead of failing."""


@dataclass
class Peer:
    """A ready DBOS environment: its interpreter and the version pip gave."""

    python: Path
    version: str
    workers: list[subprocess.Popen[str]] = field(default_factory=list)

    def run(self, mode: str, settings: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
        """Run one workload mode in a fresh process; returns the JSON it reported last."""
        done = subprocess.run(
            [str(self.python), str(SCRIPT), mode, json.dumps(settings)],
            capture_output=True, text=True, timeout=timeout, cwd=HERE,
        )  # fmt: skip
        return _last_json(done.stdout, f"{mode}: exit {done.returncode}\n{done.stderr[-2000:]}")

    def start_worker(self, settings: dict[str, Any]) -> subprocess.Popen[str]:
        """A long-lived queue worker; it exits when its stdin closes (see `stop_workers`)."""
        process = subprocess.Popen(
            [str(self.python), str(SCRIPT), "queue-worker", json.dumps(settings)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, cwd=HERE,
        )  # fmt: skip
        self.workers.append(process)
        return process

    def wait_ready(self, process: subprocess.Popen[str], timeout: float = 120) -> None:
        assert process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                raise PeerUnavailable(f"DBOS worker exited with {process.wait()}")
            if line.startswith("{") and "ready" in json.loads(line):
                return
        raise PeerUnavailable("DBOS worker did not become ready")

    def stop_workers(self) -> None:
        for process in self.workers:
            if process.stdin is not None:
                process.stdin.close()
        for process in self.workers:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.workers.clear()


def _last_json(stdout: str, context: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            value: dict[str, Any] = json.loads(line)
            return value
    raise PeerUnavailable(f"DBOS reported nothing ({context})")


def ensure() -> Peer:
    """Create (first run) or reuse the peer's virtual environment; raises `PeerUnavailable`."""
    python = VENV / "bin" / "python"
    try:
        if not python.exists():
            print(f"installing the peer ({REQUIREMENT}) into {VENV} ...", file=sys.stderr)
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
            subprocess.run(
                [str(python), "-m", "pip", "install", "--quiet", REQUIREMENT],
                check=True, timeout=900,
            )  # fmt: skip
        peer = Peer(python, "")
        peer.version = str(peer.run("version", {}, timeout=120)["version"])
    except (OSError, subprocess.SubprocessError) as exc:
        raise PeerUnavailable(f"could not set up DBOS in {VENV}: {exc}") from exc
    return peer
