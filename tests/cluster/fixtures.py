"""pytest fixtures that run a test cluster in a subprocess, for any suite that needs one.

Import the fixtures into a conftest (``from tests.cluster.fixtures import test_cluster``) and
use the :class:`TestCluster` handle they yield::

    def test_something(test_cluster: TestCluster, cluster_namespace: str) -> None:
        test_cluster.kubectl("apply", "-n", cluster_namespace, "-f", "flowrun.yaml")
        test_cluster.kubectl("wait", "-n", cluster_namespace, "flowrun/x",
                             "--for=jsonpath={.status.phase}=Succeeded", "--timeout=60s")

Fixtures:

- ``test_cluster`` (session): one cluster shared by the session; isolate tests by namespace.
- ``cluster_namespace`` (function): a fresh namespace in ``test_cluster``, deleted afterwards.
- ``fresh_cluster`` (function): a cluster of its own, for tests that disturb global state.

The handle's interface (kept small and stable for the operator's end-to-end suite):
``kubeconfig``, ``server``, ``env``, ``kubectl()``, ``helm()``, ``kill_pod()``, ``compact()``,
``server_log()``, ``stop()``; and :func:`start_cluster` / :func:`wait_for` for custom setups.
Set ``$KUBECTL`` / ``$HELM`` to use other binaries, and ``$ERGON_TEST_CLUSTER_TIMEOUT`` to scale
every default timeout (on slow machines).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from .tools import REPO_ROOT, resolve_tools

T = TypeVar("T")
TIMEOUT_SCALE = float(os.environ.get("ERGON_TEST_CLUSTER_TIMEOUT", "1"))


def scaled(seconds: float) -> float:
    """A timeout stretched by ``$ERGON_TEST_CLUSTER_TIMEOUT`` (default 1)."""
    return seconds * TIMEOUT_SCALE


def wait_for(
    check: Callable[[], T | None],
    *,
    timeout: float = 20.0,
    interval: float = 0.05,
    message: str = "condition",
) -> T:
    """Poll ``check`` until it returns something truthy; fail the test after ``timeout``.

    For state that no watch exposes (a process's side effect, a file); prefer ``kubectl wait``
    for Kubernetes objects.
    """
    deadline = time.monotonic() + scaled(timeout)
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {scaled(timeout):g}s waiting for {message}")
        time.sleep(interval)


@dataclass
class TestCluster:
    """A running test cluster and the tools to drive it."""

    __test__ = False  # not a test class, despite the name

    kubeconfig: Path
    server: str
    kubectl_path: Path
    helm_path: Path
    process: subprocess.Popen[bytes]
    home: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def kubectl(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against the cluster; raise with its output if ``check`` and it fails."""
        return self._run([str(self.kubectl_path), *args], check, input, timeout)

    def helm(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run helm against the cluster (its caches live in a private directory)."""
        return self._run([str(self.helm_path), *args], check, input, timeout)

    def kill_pod(
        self,
        namespace: str,
        name: str,
        mode: str = "kill",
        *,
        reason: str | None = None,
        exit_code: int | None = None,
    ) -> None:
        """End a pod's process abruptly with SIGKILL.

        ``mode``: ``kill`` (exit 137, reason Error: a crash), ``oom`` (137, OOMKilled),
        ``node-lost`` (the pod fails for good with ``status.reason: NodeLost``), ``evict``
        (fails with ``status.reason: Evicted``), ``delete`` (the pod object disappears too, as
        after node loss and pod garbage collection). ``reason`` / ``exit_code`` override what
        the container's terminated state reports. The restart policy applies to kill and oom.
        """
        query = {"mode": mode}
        if reason is not None:
            query["reason"] = reason
        if exit_code is not None:
            query["exitCode"] = str(exit_code)
        self.request("POST", f"/testing/pods/{namespace}/{name}/kill", query=query)

    def compact(self) -> int:
        """Forget watch history, like etcd compaction: older resourceVersions now get 410."""
        answer = self.request("POST", "/testing/compact")
        return int(answer["resourceVersion"])

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """A raw API call; returns the decoded JSON, raises ``urllib.error.HTTPError``."""
        url = self.server + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            url, data=data, method=method, headers={"Content-Type": content_type}
        )
        with urllib.request.urlopen(req, timeout=scaled(30)) as response:
            return json.loads(response.read() or b"null")

    def server_log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM the server (it stops its pods) and wait for it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=scaled(15))
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def _run(
        self, argv: list[str], check: bool, input: str | None, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=scaled(timeout),
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv[1:])} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result


def start_cluster(
    directory: Path,
    *,
    workdir: Path | None = None,
    extra_args: Sequence[str] = (),
    log_level: str = "debug",
    timeout: float = 30.0,
) -> TestCluster:
    """Start ``python -m tests.cluster`` with its files in ``directory``; return when it serves.

    ``workdir`` is where pod processes run (default: the repository root). The server inherits
    this process's environment with the running interpreter's directory first on PATH, so pods
    find the same Python, virtualenv and console scripts as the tests.
    """
    tools = resolve_tools()
    directory.mkdir(parents=True, exist_ok=True)
    kubeconfig = directory / "kubeconfig"
    log_path = directory / "server.log"
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    env["KUBECTL"] = str(tools.kubectl)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    argv = [
        sys.executable,
        "-m",
        "tests.cluster",
        "--kubeconfig",
        str(kubeconfig),
        "--log-level",
        log_level,
        "--workdir",
        str(workdir or REPO_ROOT),
        "--bookmark-interval",
        "1",
        "--restart-backoff",
        "0.5",
        *extra_args,
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
    server = _await_ready(process, log_path, scaled(timeout))
    tool_env = {
        **env,
        "KUBECONFIG": str(kubeconfig),
        "KUBECACHEDIR": str(directory / "kube-cache"),
        "HELM_CACHE_HOME": str(directory / "helm" / "cache"),
        "HELM_CONFIG_HOME": str(directory / "helm" / "config"),
        "HELM_DATA_HOME": str(directory / "helm" / "data"),
    }
    return TestCluster(
        kubeconfig=kubeconfig,
        server=server,
        kubectl_path=tools.kubectl,
        helm_path=tools.helm,
        process=process,
        home=directory,
        log_path=log_path,
        env=tool_env,
    )


def _await_ready(process: subprocess.Popen[bytes], log_path: Path, timeout: float) -> str:
    """Read the server's ``ready <url>`` line; fail with its log if it dies or stalls."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    buffered = b""
    while time.monotonic() < deadline:
        readable, _, _ = select.select([process.stdout], [], [], 0.1)
        if readable:
            chunk = os.read(process.stdout.fileno(), 4096)
            buffered += chunk
            for line in buffered.decode(errors="replace").splitlines():
                if line.startswith("ready "):
                    return line.split(" ", 1)[1].strip()
            if not chunk and process.poll() is not None:
                break
        elif process.poll() is not None:
            break
    process.kill()
    raise RuntimeError(f"test cluster did not start:\n{log_path.read_text(errors='replace')}")


@pytest.fixture(scope="session")
def test_cluster() -> Iterator[TestCluster]:
    """One cluster for the whole session."""
    with tempfile.TemporaryDirectory(prefix="ergon-cluster-") as directory:
        cluster = start_cluster(Path(directory))
        try:
            yield cluster
        finally:
            cluster.stop()


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[TestCluster]:
    """A cluster of the test's own."""
    cluster = start_cluster(tmp_path / "cluster")
    try:
        yield cluster
    finally:
        cluster.stop()


_namespace_numbers = itertools.count(1)


@pytest.fixture
def cluster_namespace(test_cluster: TestCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new namespace named after the test; deleted (without waiting) when the test ends."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name.lower()).strip("-")
    name = f"{base[:50].strip('-')}-{os.getpid() % 1000}-{next(_namespace_numbers)}"
    test_cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        with contextlib.suppress(Exception):
            test_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
