"""`ergon worker` started before its store is reachable: it waits, then works."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.cli.support import ERGON, ROOT, environment, ergon, postgres_url_with_password
from tests.support.services import free_port

FAST_POLL = ["--poll-interval", "0.2"]


class Forwarder:
    """A TCP port that forwards to another, opened only when the test says so (a server that
    comes up late)."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port, self.target = port, target
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def open(self) -> None:
        asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._forward, "127.0.0.1", self.port), self.loop
        ).result(5)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def late_server() -> Iterator[tuple[str, str, Forwarder]]:
    """A Postgres URL (with a password) on a port where nothing listens until `.open()`."""
    real, password = postgres_url_with_password()
    parts = urlsplit(real)
    port = free_port()
    user_info = parts.netloc.rpartition("@")[0]
    late = urlunsplit(parts._replace(netloc=f"{user_info}@127.0.0.1:{port}"))
    forwarder = Forwarder(port, (parts.hostname or "127.0.0.1", parts.port or 5432))
    try:
        yield late, password, forwarder
    finally:
        forwarder.close()


def _read_until(stream: object, text: str, lines: list[str], timeout: float = 20) -> None:
    assert hasattr(stream, "readline")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        lines.append(line)
        if text in line:
            return
    raise AssertionError(f"{text!r} not seen in:\n{''.join(lines)}")


@pytest.mark.integration
def test_worker_waits_for_the_store_then_runs_flows(
    late_server: tuple[str, str, Forwarder], tmp_path: Path
) -> None:
    url, password, forwarder = late_server
    worker = subprocess.Popen(
        [*ERGON, "worker", "--import", "tests.processes.flows", "--store", url, *FAST_POLL],
        cwd=ROOT,
        env=environment(),
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    try:
        _read_until(worker.stderr, "(attempt 2)", lines)
        forwarder.open()
        _read_until(worker.stderr, "is reachable; starting", lines)
        log = tmp_path / "log"
        scheduled = ergon(
            "schedule",
            "tests.processes.flows:Pipeline",
            "--input",
            json.dumps({"log": str(log)}),
            "--store",
            url,
        )
        assert scheduled.returncode == 0, scheduled.stderr
        flow_id = scheduled.stdout.strip()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            shown = ergon("flows", "show", flow_id, "--store", url)
            if "completed" in shown.stdout.splitlines()[0]:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(shown.stdout + shown.stderr)
    finally:
        worker.send_signal(signal.SIGTERM)
        rest = worker.communicate(timeout=30)[1]
    output = "".join(lines) + rest
    assert worker.returncode == 0, output
    assert password not in output and "Traceback" not in output
    assert ":***@127.0.0.1" in output
