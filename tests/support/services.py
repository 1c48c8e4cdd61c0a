"""Postgres and Redis servers for the test suites: the machine's own when reachable, else
throwaway servers started from the local binaries (and stopped afterwards).

Used by `scripts/test.py` (once per run) and by fault tests that restart a server.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

POSTGRES_ENV = "ERGON_TEST_POSTGRES_DSN"
REDIS_ENV = "ERGON_TEST_REDIS_URL"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def postgres_dsn() -> str:
    return os.environ.get(POSTGRES_ENV, DEFAULT_POSTGRES)


def redis_url() -> str:
    return os.environ.get(REDIS_ENV, DEFAULT_REDIS)


def reachable(url: str, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections at the URL's host and port."""
    parts = urlsplit(url)
    default = 6379 if parts.scheme.startswith("redis") else 5432
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default), timeout
        ):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reachable(f"tcp://127.0.0.1:{port}"):
            return
        time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not start within {timeout} s")


@dataclass
class Server:
    """A throwaway server this process started."""

    url: str
    process: subprocess.Popen[bytes]
    directory: Path
    start_command: list[str]
    user: str | None = None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def restart(self) -> None:
        """Stop and start again on the same port and data directory (fault tests)."""
        self.stop()
        self.process = subprocess.Popen(
            self.start_command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_port(urlsplit(self.url).port or 0)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def _postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name) or ""]
    if not found[-1]:
        raise RuntimeError(f"cannot find the Postgres binary {name!r} to start a test server")
    return found[-1]


def _as_user(command: list[str], user: str | None) -> list[str]:
    return ["runuser", "-u", user, "--", *command] if user else command


def start_postgres() -> Server:
    """initdb a fresh cluster in a temporary directory and start it on a free port."""
    user = "postgres" if os.geteuid() == 0 else None  # initdb refuses to run as root
    directory = Path(tempfile.mkdtemp(prefix="ergon-pg-"))
    data = directory / "data"
    if user:
        shutil.chown(directory, user)
    subprocess.run(
        _as_user([_postgres_bin("initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"], user),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    port = free_port()
    command = _as_user(
        [
            _postgres_bin("postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-k",
            str(directory),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "max_connections=300",
            "-c",
            "fsync=on",
        ],
        user,
    )
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_port(port)
    return Server(
        f"postgresql://postgres@127.0.0.1:{port}/postgres", process, directory, command, user
    )


def start_redis() -> Server:
    directory = Path(tempfile.mkdtemp(prefix="ergon-redis-"))
    port = free_port()
    command = [
        shutil.which("redis-server") or "redis-server",
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(directory),
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_port(port)
    return Server(f"redis://127.0.0.1:{port}/0", process, directory, command)


@contextlib.contextmanager
def ensure_services() -> Iterator[dict[str, str]]:
    """Environment pointing the suites at reachable Postgres and Redis servers, starting
    throwaway ones for whichever is not reachable."""
    started: list[Server] = []
    env = {POSTGRES_ENV: postgres_dsn(), REDIS_ENV: redis_url()}
    try:
        if not reachable(env[POSTGRES_ENV]):
            server = start_postgres()
            started.append(server)
            env[POSTGRES_ENV] = server.url
        if not reachable(env[REDIS_ENV]):
            server = start_redis()
            started.append(server)
            env[REDIS_ENV] = server.url
        yield env
    finally:
        for server in started:
            server.destroy()
