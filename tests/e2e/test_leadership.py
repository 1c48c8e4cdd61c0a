"""Two operator replicas with leader election on the test cluster: only the Lease holder acts,
a SIGKILLed leader is replaced within 30 s with its run still completing, a clean shutdown hands
over at once; and the probes: /healthz never depends on Postgres, /readyz reports it.

The replicas are local processes started like the session's operator (the chart's environment,
`ERGON_LEADER_ELECTION=true`), each with its own POD_NAME; the session's operator is stopped
cleanly first (it releases the Lease) and restarted afterwards.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.fixtures import wait_for
from tests.e2e.environment import ROOT, Environment, TestClusterEnvironment
from tests.support.services import free_port
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.integration

LEASE = "ergon-operator"
STARTED = "ergon operator started"  # handlers.start: kopf is running and reconciling


class Replica:
    """One operator process of the pair, with its own identity, health port and log."""

    def __init__(
        self, k8s: TestClusterEnvironment, identity: str, kubeconfig: Path | None = None
    ) -> None:
        self.identity = identity
        self.port = free_port()
        self.log_path = Path(k8s.home) / f"{identity}.log"
        env = {
            **k8s.operator_env,
            "ERGON_LEADER_ELECTION": "true",
            "POD_NAME": identity,
            "POD_NAMESPACE": k8s.namespace,
            "ERGON_HEALTH_PORT": str(self.port),
            **({"KUBECONFIG": str(kubeconfig)} if kubeconfig else {}),
        }
        self.lease = env.get("ERGON_LEASE_NAME", LEASE)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ergon_operator"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(lambda: self.get("/healthz")[0] == 200, timeout=30, message=f"{identity} up")

    def get(self, path: str, timeout: float = 5) -> tuple[int, dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return int(response.status), json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), json.loads(exc.read() or b"{}")
        except OSError:
            return 0, {}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                raise AssertionError(
                    f"{self.identity} did not stop:\n{self.log()[-4000:]}"
                ) from None


def holder(k8s: Environment, lease: str = LEASE) -> str:
    result = k8s.kubectl("get", "lease", lease, "-o", "json", check=False)
    if result.returncode != 0:
        return ""
    return str(json.loads(result.stdout)["spec"].get("holderIdentity") or "")


@pytest.fixture
def cluster_env(k8s: Environment) -> Iterator[TestClusterEnvironment]:
    """The test cluster with the session's operator stopped (cleanly: it releases the Lease)
    for the duration of the test, and started again afterwards."""
    if not isinstance(k8s, TestClusterEnvironment):
        pytest.skip("running two operator processes needs the test cluster")
    k8s.stop_operator(hard=False)
    try:
        yield k8s
    finally:
        k8s.start_operator()
        # Leave the session's operator leading (it may have to wait for a lease left behind).
        me = k8s.operator_env.get("POD_NAME", "")
        lease = k8s.operator_env.get("ERGON_LEASE_NAME", LEASE)
        wait_for(lambda: holder(k8s, lease) == me, timeout=30, message="the operator leads")


def batch(name: str, items: list[str], seconds: float) -> dict[str, Any]:
    return {
        "apiVersion": "ergon.dev/v1alpha1",
        "kind": "FlowRun",
        "metadata": {"name": name},
        "spec": {
            "flow": "examples.batch:BatchFlow",
            "input": {"items": items, "seconds_per_item": seconds},
        },
    }


def test_only_the_leader_acts_and_a_killed_leader_is_replaced(
    cluster_env: TestClusterEnvironment, name: str
) -> None:
    k8s = cluster_env
    first = Replica(k8s, f"{name}-a")
    second: Replica | None = None
    try:
        wait_for(lambda: holder(k8s) == first.identity, timeout=20, message="a leads")
        wait_for(lambda: STARTED in first.log(), timeout=30, message="a starts kopf")
        second = Replica(k8s, f"{name}-b")
        # The standby answers both probes (ready: the store answers) but does nothing else.
        assert second.get("/healthz") == (200, {"status": "ok", "leader": False})
        wait_for(lambda: second.get("/readyz")[0] == 200, timeout=15, message="b ready")
        k8s.apply(batch(name, ["a", "b", "c", "d", "e", "f"], 2.0))
        wait_for(lambda: k8s.status(name).get("phase") == "Running", timeout=60, message="run")
        time.sleep(3)
        assert STARTED not in second.log() and "standing by" in second.log(), second.log()
        assert "flowruns" not in second.log().lower()
        assert holder(k8s) == first.identity and first.get("/healthz")[1]["leader"] is True

        first.stop(signal.SIGKILL)  # its Lease is left to expire
        killed = time.monotonic()
        wait_for(lambda: holder(k8s) == second.identity, timeout=30, message="b takes over")
        took = time.monotonic() - killed
        print(f"takeover after SIGKILL: {took:.1f}s")
        assert took < 30, took
        wait_for(lambda: STARTED in second.log(), timeout=30, message="b starts kopf")
        status = k8s.wait_phase(name, "Succeeded", timeout=120)
        assert status["result"] == {"processed": 6, "last": "f:ok"}
        assert status["attempts"] == 1, status  # the run was not restarted by the failover

        # A clean shutdown releases the Lease: a new standby takes over at once.
        third = Replica(k8s, f"{name}-c")
        try:
            time.sleep(3)
            assert holder(k8s) == second.identity
            second.stop(signal.SIGTERM)
            stopped = time.monotonic()
            wait_for(lambda: holder(k8s) == third.identity, timeout=10, message="c takes over")
            print(f"takeover after a clean shutdown: {time.monotonic() - stopped:.1f}s")
            assert second.process.returncode == 0, second.log()[-3000:]
            # A standby told to stop does not wait to lead first.
            standby = Replica(k8s, f"{name}-d")
            stopping = time.monotonic()
            standby.stop(signal.SIGTERM)
            assert standby.process.returncode == 0 and time.monotonic() - stopping < 5
            assert holder(k8s) == third.identity
        finally:
            third.stop()
    finally:
        first.stop(signal.SIGKILL)
        if second is not None:
            second.stop()


def test_healthz_ignores_the_store_and_readyz_reports_it(
    cluster_env: TestClusterEnvironment,
) -> None:
    k8s = cluster_env
    replica = Replica(k8s, "ergon-operator-probes")
    try:
        wait_for(lambda: replica.get("/readyz")[0] == 200, timeout=30, message="ready")
        with k8s.store_outage():
            status, body = 0, dict[str, Any]()

            def not_ready() -> bool:
                nonlocal status, body
                status, body = replica.get("/readyz")
                return status == 503

            wait_for(not_ready, timeout=20, message="/readyz reports the store down")
            assert body["ready"] is False and body["store"], body
            for _ in range(10):
                started = time.monotonic()
                assert replica.get("/healthz", timeout=5)[0] == 200
                assert time.monotonic() - started < 1
                time.sleep(0.5)
        wait_for(lambda: replica.get("/readyz")[0] == 200, timeout=30, message="ready again")
        assert replica.process.poll() is None
    finally:
        replica.stop()


def test_a_leader_cut_off_from_the_api_server_stops_before_its_lease_expires(
    cluster_env: TestClusterEnvironment, name: str
) -> None:
    """The leader's API connection goes through a proxy the test cuts: unable to renew, it exits
    (status 3) within the renew deadline, before a standby could take the Lease over."""
    k8s = cluster_env
    config = json.loads(k8s.cluster.kubeconfig.read_text())
    server = config["clusters"][0]["cluster"]["server"]
    proxy = TcpProxy.for_url(server)
    try:
        config["clusters"][0]["cluster"]["server"] = proxy.url(server)
        kubeconfig = Path(k8s.home) / f"{name}-kubeconfig"
        kubeconfig.write_text(json.dumps(config))
        leader = Replica(k8s, f"{name}-a", kubeconfig=kubeconfig)
        try:
            wait_for(lambda: holder(k8s) == leader.identity, timeout=20, message="a leads")
            wait_for(lambda: STARTED in leader.log(), timeout=30, message="a starts kopf")
            proxy.cut()
            cut = time.monotonic()
            leader.process.wait(timeout=30)
            took = time.monotonic() - cut
            print(f"leader cut off from the API server exited after {took:.1f}s")
            assert leader.process.returncode == 3, leader.log()[-3000:]
            assert "lost the lease" in leader.log()
            assert took < 15, took  # renew deadline 10 s + one retry; the lease lasts 15 s
        finally:
            leader.stop(signal.SIGKILL)
    finally:
        proxy.close()
