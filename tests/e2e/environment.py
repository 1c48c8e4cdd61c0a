"""Where the end-to-end suite runs: the test cluster (default) or a real cluster.

- Test cluster (CI, development machines): start `tests.cluster`, create the Secret with a fresh
  Postgres store's DSN, `helm install` the chart from this checkout, and run the operator the way
  the chart's Deployment would — same command, same environment, read back from the installed
  Deployment — as a local process (the test cluster runs Pods, not Deployments).
- Real cluster (`ERGON_E2E_KUBECONFIG` set, e.g. kind via `make kind-e2e`): the chart is already
  installed with its operator running in `ERGON_E2E_NAMESPACE` (default `ergon`).

Both expose the same small interface to the tests: `kubectl`, `flowrun`, `wait_phase`,
`pods`, `kill_pod`, `restart_operator`, `apply`. Fault tests also use `store_outage` (the
operator's connection to Postgres goes through a TCP proxy the test can cut), `health_url`,
`failover` and `event_details`; where a real cluster cannot inject the fault they say so with
`pytest.skip`.

On the test cluster the operator authenticates with a token of the chart's operator
ServiceAccount (`kubectl create token`), so the cluster's request log (`api_requests`) tells its
requests apart by user, as a real API server's audit log would. The e2e session's environment
is also `audited` (tests/e2e/test_zz_security.py reads what it kept): the operator watches a
second namespace (`EXTRA_NAMESPACE`, with a Role of its own), the store DSN carries the password
of a Postgres role made for the session, worker pods' output is kept in files after the pods
are gone, and an `ApiRecorder` keeps every version of the objects that could show the DSN.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from tests.chart.helm import helm_install_args
from tests.cluster.fixtures import TestCluster, scaled, start_cluster, wait_for
from tests.support.databases import fresh_schema, postgres_database
from tests.support.services import free_port
from tests.support.tcpproxy import TcpProxy

ROOT = Path(__file__).resolve().parents[2]
KUBECONFIG_ENV = "ERGON_E2E_KUBECONFIG"
NAMESPACE_ENV = "ERGON_E2E_NAMESPACE"
STORE_SECRET = "ergon-e2e-store"
NAMESPACE = "ergon-e2e"
# A second namespace the audited session's operator watches (operator.watchNamespaces: both).
EXTRA_NAMESPACE = "ergon-e2e-more"
# The worker policy of the e2e install: closed defaults plus what the suite uses (pools run
# ghcr.io/acme images; a fault test names a missing service account on purpose), and an
# allowance per rule so tests/e2e/test_policy.py can show each rule letting through what it
# allows. The admission policy is off so refusals reach the operator (tests/chart and
# tests/cluster check the ValidatingAdmissionPolicy itself). On a real cluster, install the
# chart with these values.
E2E_WORKER_POLICY = {
    "images": ["ghcr.io/ergon-dev/ergon:*", "ghcr.io/acme/ergon-e2e:*"],
    "serviceAccounts": ["no-such-account"],
    "secrets": ["e2e-allowed"],
    "configMaps": ["e2e-allowed"],
    "labelKeys": ["team"],
    "annotationKeys": ["example.com/*"],
    "maxResources": {"cpu": "2", "memory": "1Gi"},
    "admissionPolicy": {"enabled": False},
}


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
        return [reason for _, reason, _ in self.event_details(flowrun)]

    def event_details(self, flowrun: str) -> list[tuple[str, str, str]]:
        """(type, reason, message) of the Events about the object named `flowrun`."""
        out = self.kubectl(
            "get", "events", "--field-selector", f"involvedObject.name={flowrun}", "-o", "json"
        )
        return [
            (e.get("type", ""), e.get("reason", ""), e.get("message", ""))
            for e in json.loads(out.stdout)["items"]
        ]

    def store_secret(self) -> tuple[str, str]:
        """(name, key) of the Secret the worker pods read the store DSN from."""
        deployment = json.loads(
            self.kubectl(
                "get", "deployment", "-l", "app.kubernetes.io/component=operator", "-o", "json"
            ).stdout
        )["items"][0]
        for var in deployment["spec"]["template"]["spec"]["containers"][0].get("env") or []:
            if var["name"] == "ERGON_STORE_SECRET":
                name, _, key = str(var["value"]).partition("/")
                return name, key or "dsn"
        raise AssertionError("the operator Deployment sets no ERGON_STORE_SECRET")

    @property
    def health_url(self) -> str | None:
        """The operator's health server (None where the test cannot reach it)."""
        return None

    @contextlib.contextmanager
    def store_outage(self) -> Iterator[None]:
        """The operator cannot reach Postgres inside the block (connections refused)."""
        pytest.skip("cutting the operator's database connection needs the test cluster")
        yield

    def failover(self) -> None:
        """Start a second operator replica, then SIGKILL the one that was running."""
        raise NotImplementedError

    def kill_pod(self, pod: str) -> None:
        raise NotImplementedError

    def set_operator_env(self, variable: str, value: str) -> None:
        """Change one of the operator's environment variables (a restart applies it)."""
        raise NotImplementedError

    def restart_operator(self, while_down: Callable[[], None] | None = None) -> None:
        raise NotImplementedError

    def debug(self) -> str:
        return ""

    def close(self) -> None:
        pass


class TestClusterEnvironment(Environment):
    __test__ = False

    def __init__(
        self,
        home: Path,
        *,
        store_url: str | None = None,
        operator_env: dict[str, str] | None = None,
        audited: bool = False,
    ) -> None:
        self.home = home
        self.audited = audited
        self.pod_log_dir = home / "pod-logs"
        extra_args = ["--pod-log-dir", str(self.pod_log_dir)] if audited else []
        self.cluster: TestCluster = start_cluster(home / "cluster", extra_args=extra_args)
        self.kubectl_path = str(self.cluster.kubectl_path)
        self.kubectl_env = self.cluster.env
        self.namespace = NAMESPACE
        self.watch_namespaces = (NAMESPACE, EXTRA_NAMESPACE) if audited else (NAMESPACE,)
        self.recorder = ApiRecorder(self.cluster.server, home / "recorded") if audited else None
        self.operator: subprocess.Popen[bytes] | None = None
        self.store_role: StoreRole | None = None
        if store_url is None:
            database = postgres_database()
            if audited:  # a password of its own, which no output may show
                self.store_role = StoreRole.create(database)
                database = self.store_role.dsn
            store_url = f"{database}?schema={fresh_schema()}"
        self.store_url = store_url
        self.store_proxy = TcpProxy.for_url(self.store_url)
        self.operator_starts = 0
        for namespace in self.watch_namespaces:
            self.cluster.kubectl("create", "namespace", namespace)
            self.cluster.kubectl(
                "-n",
                namespace,
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
                # The operator runs as a local process (below), from the Deployment's own
                # command and environment; the chart's Deployment itself starts no replica.
                values={
                    "operator.watchNamespaces": list(self.watch_namespaces),
                    "image.tag": "dev",
                    "operator.replicas": 0,
                    "workerPolicy": E2E_WORKER_POLICY,
                },
            ),
            timeout=180,
        )
        self.operator_env = {**self._operator_env(), **(operator_env or {})}
        self.start_operator()

    def _operator_env(self) -> dict[str, str]:
        """The environment the chart gives the operator container, secrets resolved."""
        deployment = json.loads(
            self.kubectl(
                "get", "deployment", "-l", "app.kubernetes.io/component=operator", "-o", "json"
            ).stdout
        )["items"][0]
        pod_spec = deployment["spec"]["template"]["spec"]
        container = pod_spec["containers"][0]
        assert container["command"] == ["ergon-operator"], container["command"]
        env = {**os.environ, "KUBECONFIG": str(self._operator_kubeconfig(pod_spec))}
        for var in container.get("env") or []:
            if "value" in var:
                env[var["name"]] = var["value"]
            elif "secretKeyRef" in (var.get("valueFrom") or {}):
                ref = var["valueFrom"]["secretKeyRef"]
                secret = json.loads(self.kubectl("get", "secret", ref["name"], "-o", "json").stdout)
                env[var["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
            elif "fieldRef" in (var.get("valueFrom") or {}):  # POD_NAME, POD_NAMESPACE
                field = var["valueFrom"]["fieldRef"]["fieldPath"]
                pod = {
                    "metadata.name": "ergon-operator-local-1",
                    "metadata.namespace": self.namespace,
                }
                env[var["name"]] = pod[field]
        env["ERGON_HEALTH_PORT"] = str(free_port())
        env["ERGON_RESYNC_SECONDS"] = "5"
        env["ERGON_STORE"] = self.store_proxy.url(env["ERGON_STORE"])  # cut by store_outage
        return env

    def _operator_kubeconfig(self, pod_spec: dict[str, Any]) -> Path:
        """A kubeconfig with a token of the operator pod's ServiceAccount, as its pod would
        have mounted: the cluster's request log then names the operator's requests."""
        account = str(pod_spec.get("serviceAccountName") or "default")
        self.operator_user = f"system:serviceaccount:{self.namespace}:{account}"
        token = self.kubectl("create", "token", account).stdout.strip()
        config = json.loads(self.cluster.kubeconfig.read_text())
        for user in config["users"]:
            user["user"] = {"token": token}
        path = self.home / "operator-kubeconfig"
        path.write_text(json.dumps(config, indent=2))
        return path

    def start_operator(self) -> None:
        self.operator = self._spawn_operator(self.operator_env)

    def _spawn_operator(self, env: dict[str, str]) -> subprocess.Popen[bytes]:
        self.operator_starts += 1
        log = (self.home / "operator.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "ergon_operator"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        port = env["ERGON_HEALTH_PORT"]
        wait_for(lambda: _healthy(port), timeout=30, message="the operator's /healthz")
        return process

    @property
    def health_url(self) -> str | None:
        return f"http://127.0.0.1:{self.operator_env['ERGON_HEALTH_PORT']}"

    @contextlib.contextmanager
    def store_outage(self) -> Iterator[None]:
        with self.store_proxy.outage():
            yield

    def failover(self) -> None:
        standby_env = {
            **self.operator_env,
            "ERGON_HEALTH_PORT": str(free_port()),
            # Another replica is another pod: its own identity for the leader Lease.
            "POD_NAME": f"ergon-operator-local-{self.operator_starts + 1}",
        }
        standby = self._spawn_operator(standby_env)
        time.sleep(2)  # let the standby settle as a follower before the leader dies
        self.stop_operator(hard=True)
        self.operator, self.operator_env = standby, standby_env

    def api_requests(self, *, reset: bool = False) -> dict[str, Any]:
        """The test cluster's request counts (tests/cluster/requestlog.py)."""
        query = {"reset": "true"} if reset else None
        return dict(self.cluster.request("GET", "/testing/requests", query=query))

    def stop_operator(self, hard: bool = True) -> None:
        if self.operator is not None and self.operator.poll() is None:
            self.operator.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
            try:
                self.operator.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.operator.kill()
                self.operator.wait(timeout=30)
                raise AssertionError(
                    f"the operator did not stop within 30 s of SIGTERM\n{self.debug()}"
                ) from None

    def restart_operator(self, while_down: Callable[[], None] | None = None) -> None:
        self.stop_operator(hard=True)
        if while_down is not None:
            while_down()
        self.start_operator()

    def kill_pod(self, pod: str) -> None:
        self.cluster.kill_pod(self.namespace, pod, mode="kill")

    def set_operator_env(self, variable: str, value: str) -> None:
        self.operator_env[variable] = value
        self.restart_operator()

    def debug(self) -> str:
        log = self.home / "operator.log"
        tail = log.read_text(errors="replace")[-6000:] if log.exists() else ""
        return f"--- operator log (tail) ---\n{tail}"

    def close(self) -> None:
        self.stop_operator(hard=False)
        if self.recorder is not None:
            self.recorder.stop()
        self.cluster.stop()
        self.store_proxy.close()
        if self.store_role is not None:
            self.store_role.drop()


class RealClusterEnvironment(Environment):
    """A real cluster where `make kind-install` (or the chart, by hand) installed Ergon."""

    def __init__(self, kubeconfig: str) -> None:
        self.kubectl_path = os.environ.get("KUBECTL", "kubectl")
        self.kubectl_env = {**os.environ, "KUBECONFIG": kubeconfig}
        self.namespace = os.environ.get(NAMESPACE_ENV, "ergon")

    def kill_pod(self, pod: str) -> None:
        self.kubectl("delete", "pod", pod, "--grace-period=0", "--force", "--wait=false")

    def set_operator_env(self, variable: str, value: str) -> None:
        selector = "app.kubernetes.io/component=operator"
        self.kubectl("set", "env", "deployment", "-l", selector, f"{variable}={value}")
        deployment = self.kubectl("get", "deployment", "-l", selector, "-o", "name").stdout.strip()
        self.kubectl("rollout", "status", deployment, "--timeout=180s")
        time.sleep(2)

    def failover(self) -> None:
        selector = "app.kubernetes.io/component=operator"
        pods = json.loads(self.kubectl("get", "pods", "-l", selector, "-o", "json").stdout)
        if len(pods["items"]) < 2:
            pytest.skip("failover needs the chart's operator running with 2 replicas")
        holder = pods["items"][0]["metadata"]["name"]
        self.kubectl("delete", "pod", holder, "--grace-period=0", "--force", "--wait=false")

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


class StoreRole:
    """A Postgres login role with a random password, owning what the store creates in the
    test database: the audited session's DSN then holds a secret worth looking for."""

    def __init__(self, admin_dsn: str, name: str, password: str) -> None:
        self.admin_dsn, self.name, self.password = admin_dsn, name, password
        parts = urlsplit(admin_dsn)
        host = parts.hostname or "127.0.0.1"
        netloc = f"{name}:{password}@{host}" + (f":{parts.port}" if parts.port else "")
        self.dsn = urlunsplit(parts._replace(netloc=netloc))

    @classmethod
    def create(cls, admin_dsn: str) -> StoreRole:
        role = cls(admin_dsn, f"ergon_e2e_{secrets.token_hex(4)}", secrets.token_urlsafe(18))
        database = urlsplit(admin_dsn).path.lstrip("/")
        role._admin(
            f"CREATE ROLE \"{role.name}\" LOGIN PASSWORD '{role.password}'",
            f'GRANT ALL ON DATABASE "{database}" TO "{role.name}"',
        )
        return role

    def drop(self) -> None:
        with contextlib.suppress(Exception):
            self._admin(f'DROP OWNED BY "{self.name}"', f'DROP ROLE "{self.name}"')

    def _admin(self, *statements: str) -> None:
        async def run() -> None:
            conn = await asyncpg.connect(self.admin_dsn, timeout=10)
            try:
                for statement in statements:
                    await conn.execute(statement)
            finally:
                await conn.close()

        asyncio.run(run())


class ApiRecorder:
    """Every version of the objects an API client can read that could show the store DSN
    (FlowRuns, Signals, WorkerPools, Events, Pods, Deployments; never Secrets): a list, then a
    watch, per resource across all namespaces, appended to `<directory>/<resource>.jsonl`."""

    PATHS = {
        "flowruns": "/apis/ergon.dev/v1alpha1/flowruns",
        "signals": "/apis/ergon.dev/v1alpha1/signals",
        "workerpools": "/apis/ergon.dev/v1alpha1/workerpools",
        "events": "/api/v1/events",
        "pods": "/api/v1/pods",
        "deployments": "/apis/apps/v1/deployments",
    }

    def __init__(self, server: str, directory: Path) -> None:
        self.server, self.directory = server, directory
        directory.mkdir(parents=True, exist_ok=True)
        self._stopping = threading.Event()
        for resource, path in self.PATHS.items():
            threading.Thread(
                target=self._follow, args=(resource, path), name=f"record-{resource}", daemon=True
            ).start()

    def objects(self, resource: str) -> Iterator[dict[str, Any]]:
        """Every version of `resource`'s objects recorded so far."""
        path = self.directory / f"{resource}.jsonl"
        if path.exists():
            for line in path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    yield json.loads(line)

    def stop(self) -> None:
        self._stopping.set()

    def _follow(self, resource: str, path: str) -> None:
        version: str | None = None
        with (self.directory / f"{resource}.jsonl").open("a") as out:
            while not self._stopping.is_set():
                try:
                    if version is None:
                        with self._get(path, {}, 30) as response:
                            listing = json.loads(response.read())
                        for item in listing.get("items") or []:
                            out.write(json.dumps(item) + "\n")
                        out.flush()
                        version = str(listing["metadata"].get("resourceVersion") or "")
                    query = {
                        "watch": "true",
                        "resourceVersion": version,
                        "allowWatchBookmarks": "true",
                        "timeoutSeconds": "20",
                    }
                    with self._get(path, query, 40) as response:
                        for line in response:
                            event = json.loads(line)
                            obj = event.get("object") or {}
                            if event.get("type") == "ERROR":  # 410 Gone: list again
                                version = None
                                break
                            version = str((obj.get("metadata") or {}).get("resourceVersion"))
                            if event.get("type") != "BOOKMARK":
                                out.write(json.dumps(obj) + "\n")
                                out.flush()
                            if self._stopping.is_set():
                                return
                except (OSError, ValueError, KeyError):  # no CRDs yet, or the server stopped
                    time.sleep(0.5)

    def _get(self, path: str, query: dict[str, str], timeout: float) -> Any:
        url = f"{self.server}{path}?{urllib.parse.urlencode(query)}"
        return urllib.request.urlopen(url, timeout=timeout)


def flow_state(k8s: Environment, flow_id: str) -> str | None:
    """The state of a flow as the store records it (None: no such flow)."""
    import asyncio

    import ergon

    async def state() -> str | None:
        assert k8s.store_url is not None
        store = ergon.open_store(k8s.store_url)
        try:
            flow = await store.get_flow(flow_id)
            return flow.state if flow else None
        finally:
            await store.close()

    return asyncio.run(state())


def _healthy(port: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def open_environment(home: Path, *, audited: bool = False) -> Environment:
    kubeconfig = os.environ.get(KUBECONFIG_ENV)
    if kubeconfig:
        return RealClusterEnvironment(kubeconfig)
    return TestClusterEnvironment(home, audited=audited)
