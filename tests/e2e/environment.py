"""Where the end-to-end suite runs: the test cluster (default) or a real cluster.

- Test cluster (CI, development machines): start `tests.cluster`, create the Secret with a fresh
  Postgres store's DSN, `helm install` the chart from this checkout, and run the operator the way
  the chart's Deployment would — same command, same environment, read back from the installed
  Deployment — as a local process (the test cluster runs Pods, not Deployments).
- Real cluster (`ERGON_E2E_KUBECONFIG` set, e.g. kind via `make kind-e2e`): the chart is already
  installed with its operator running in `ERGON_E2E_NAMESPACE` (default `ergon`).

Both expose the same small interface to the tests: `kubectl`, `flowrun`, `wait_phase`,
`pods`, `kill_pod`, `restart_operator`, `apply`.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.chart.helm import helm_install_args
from tests.cluster.fixtures import TestCluster, scaled, start_cluster, wait_for
from tests.support.databases import fresh_schema, postgres_database
from tests.support.services import free_port

ROOT = Path(__file__).resolve().parents[2]
KUBECONFIG_ENV = "ERGON_E2E_KUBECONFIG"
NAMESPACE_ENV = "ERGON_E2E_NAMESPACE"
STORE_SECRET = "ergon-e2e-store"


class Environment:
    """A cluster with the chart installed and the operator running, in `namespace`."""

    namespace: str
    kubectl_env: dict[str, str]
    kubectl_path: str
    store_url: str | None = None

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.kubectl_path, "-n", self.namespace, *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.kubectl_env,
            timeout=scaled(timeout),
            check=False,
        )
        if check and result.returncode != 0:
            command = " ".join(args)
            raise AssertionError(
                f"kubectl {command} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result

    def apply(self, manifest: dict[str, Any] | str) -> None:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        self.kubectl("apply", "-f", "-", input=text)

    def flowrun(self, name: str) -> dict[str, Any]:
        return dict(json.loads(self.kubectl("get", "flowrun", name, "-o", "json").stdout))

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.flowrun(name).get("status") or {})

    def wait_phase(self, name: str, phase: str, timeout: float = 60.0) -> dict[str, Any]:
        """Wait (with `kubectl wait`, i.e. a watch) until the FlowRun reaches `phase`."""
        result = self.kubectl(
            "wait",
            f"flowrun/{name}",
            f"--for=jsonpath={{.status.phase}}={phase}",
            f"--timeout={int(scaled(timeout))}s",
            check=False,
            timeout=timeout + 30,
        )
        if result.returncode != 0:
            raise AssertionError(
                f"FlowRun {name} did not reach {phase}: {json.dumps(self.status(name), indent=1)}\n"
                f"{self.debug()}"
            )
        return self.status(name)

    def pods(self, flowrun: str) -> list[dict[str, Any]]:
        out = self.kubectl("get", "pods", "-l", f"ergon.dev/flowrun={flowrun}", "-o", "json")
        items = json.loads(out.stdout)["items"]
        return sorted(items, key=lambda p: int(p["metadata"]["labels"]["ergon.dev/pod-sequence"]))

    def logs(self, pod: str) -> str:
        return self.kubectl("logs", pod).stdout

    def events(self, flowrun: str) -> list[str]:
        out = self.kubectl(
            "get", "events", "--field-selector", f"involvedObject.name={flowrun}", "-o", "json"
        )
        return [e.get("reason", "") for e in json.loads(out.stdout)["items"]]

    def kill_pod(self, pod: str) -> None:
        raise NotImplementedError

    def restart_operator(self, while_down: Callable[[], None] | None = None) -> None:
        raise NotImplementedError

    def debug(self) -> str:
        return ""

    def close(self) -> None:
        pass


class TestClusterEnvironment(Environment):
    __test__ = False

    def __init__(self, home: Path) -> None:
        self.home = home
        self.cluster: TestCluster = start_cluster(home / "cluster")
        self.kubectl_path = str(self.cluster.kubectl_path)
        self.kubectl_env = self.cluster.env
        self.namespace = "ergon-e2e"
        self.operator: subprocess.Popen[bytes] | None = None
        self.store_url = f"{postgres_database()}?schema={fresh_schema()}"
        self.cluster.kubectl("create", "namespace", self.namespace)
        self.cluster.kubectl(
            "-n",
            self.namespace,
            "create",
            "secret",
            "generic",
            STORE_SECRET,
            f"--from-literal=dsn={self.store_url}",
        )
        self.cluster.helm(
            *helm_install_args(
                namespace=self.namespace,
                store_secret=STORE_SECRET,
                values={"operator.watchNamespace": self.namespace, "image.tag": "dev"},
            ),
            timeout=180,
        )
        self.operator_env = self._operator_env()
        self.start_operator()

    def _operator_env(self) -> dict[str, str]:
        """The environment the chart gives the operator container, secrets resolved."""
        deployment = json.loads(
            self.kubectl(
                "get", "deployment", "-l", "app.kubernetes.io/component=operator", "-o", "json"
            ).stdout
        )["items"][0]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == ["ergon-operator"], container["command"]
        env = {**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig)}
        for var in container.get("env") or []:
            if "value" in var:
                env[var["name"]] = var["value"]
            elif "secretKeyRef" in (var.get("valueFrom") or {}):
                ref = var["valueFrom"]["secretKeyRef"]
                secret = json.loads(self.kubectl("get", "secret", ref["name"], "-o", "json").stdout)
                env[var["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
        env["ERGON_HEALTH_PORT"] = str(free_port())
        env["ERGON_RESYNC_SECONDS"] = "5"
        return env

    def start_operator(self) -> None:
        log = (self.home / "operator.log").open("ab")
        self.operator = subprocess.Popen(
            [sys.executable, "-m", "ergon_operator"],
            cwd=ROOT,
            env=self.operator_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        port = self.operator_env["ERGON_HEALTH_PORT"]
        wait_for(lambda: _healthy(port), timeout=30, message="the operator's /healthz")

    def stop_operator(self, hard: bool = True) -> None:
        if self.operator is not None and self.operator.poll() is None:
            self.operator.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
            self.operator.wait(timeout=30)

    def restart_operator(self, while_down: Callable[[], None] | None = None) -> None:
        self.stop_operator(hard=True)
        if while_down is not None:
            while_down()
        self.start_operator()

    def kill_pod(self, pod: str) -> None:
        self.cluster.kill_pod(self.namespace, pod, mode="kill")

    def debug(self) -> str:
        log = self.home / "operator.log"
        tail = log.read_text(errors="replace")[-6000:] if log.exists() else ""
        return f"--- operator log (tail) ---\n{tail}"

    def close(self) -> None:
        self.stop_operator(hard=False)
        self.cluster.stop()


class RealClusterEnvironment(Environment):
    """A real cluster where `make kind-install` (or the chart, by hand) installed Ergon."""

    def __init__(self, kubeconfig: str) -> None:
        self.kubectl_path = os.environ.get("KUBECTL", "kubectl")
        self.kubectl_env = {**os.environ, "KUBECONFIG": kubeconfig}
        self.namespace = os.environ.get(NAMESPACE_ENV, "ergon")

    def kill_pod(self, pod: str) -> None:
        self.kubectl("delete", "pod", pod, "--grace-period=0", "--force", "--wait=false")

    def restart_operator(self, while_down: Callable[[], None] | None = None) -> None:
        selector = "app.kubernetes.io/component=operator"
        self.kubectl("scale", "deployment", "-l", selector, "--replicas=0")
        self.kubectl("wait", "pod", "-l", selector, "--for=delete", "--timeout=120s", check=False)
        if while_down is not None:
            while_down()
        self.kubectl("scale", "deployment", "-l", selector, "--replicas=1")
        deployment = self.kubectl("get", "deployment", "-l", selector, "-o", "name").stdout.strip()
        self.kubectl("rollout", "status", deployment, "--timeout=180s")
        time.sleep(2)


def _healthy(port: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def open_environment(home: Path) -> Environment:
    kubeconfig = os.environ.get(KUBECONFIG_ENV)
    if kubeconfig:
        return RealClusterEnvironment(kubeconfig)
    return TestClusterEnvironment(home)
