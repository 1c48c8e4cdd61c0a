"""Worker processes for the process tests: started with the real `ergon worker` command."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import ergon

ROOT = Path(__file__).resolve().parents[2]


def start_worker(
    url: str,
    name: str,
    *,
    concurrency: int = 8,
    lease_seconds: float = 2.0,
    version: str | None = None,
    log_dir: Path | None = None,
    module: str = "tests.processes.flows",
) -> subprocess.Popen[bytes]:
    """An `ergon worker` process running the flows of `module`; its output goes to
    `<log_dir>/<name>.log` when `log_dir` is given."""
    command = [
        sys.executable, "-m", "ergon.cli.main", "worker",
        "--store", url,
        "--import", module,
        "--name", name,
        "--concurrency", str(concurrency),
        "--lease-seconds", str(lease_seconds),
        "--poll-interval", "0.5",
    ]  # fmt: skip
    if version:
        command += ["--version", version]
    output = (log_dir / f"{name}.log").open("wb") if log_dir else subprocess.DEVNULL
    return subprocess.Popen(
        command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, env={**os.environ}
    )


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()


async def wait_all(store: ergon.Store, ids: list[str], timeout: float) -> list[ergon.Outcome]:
    client = ergon.Client(store)
    return list(await asyncio.gather(*(client.wait(i, timeout=timeout) for i in ids)))
