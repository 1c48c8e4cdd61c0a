"""What the whole e2e session shows about the operator's privileges and secrets (issue 17). These
tests run after every other e2e test of the session (tests/e2e/conftest.py orders them last)
and read what the audited environment kept (environment.py):

- the namespaces the operator watches (a list: two) are exactly those it acts in;
- the chart's RBAC grants exactly the API calls the operator made: the test cluster's request
  log, filtered by the operator's ServiceAccount, gives (apiGroup, resource, verb) per
  namespace; they are compared with the Roles the chart installed (the namespaced mode the
  session runs), and with the ClusterRole of the default mode, after a short run of a
  cluster-wide operator. A granted verb no request used fails the test (when the whole e2e
  suite ran), unless listed in `UNREACHED` with the reason; one that a request used and no rule
  grants always fails. `update` on the owners' `finalizers` subresource shows in no request
  (kube-apiserver checks it when an object's ownerReferences set blockOwnerDeletion): it is
  derived from the ownerReferences of the pods and Deployments the operator created;
- no output of the session shows the store DSN or its password: operator logs, worker pods'
  output, Events, and every version of FlowRuns, Signals, WorkerPools, Pods and Deployments.

On a real cluster there is no request log: these tests skip.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.chart.helm import CHART_DIR
from tests.cluster.fixtures import wait_for
from tests.e2e.conftest import E2ESession
from tests.e2e.environment import (
    EXTRA_NAMESPACE,
    STORE_SECRET,
    Environment,
    TestClusterEnvironment,
)
from tests.support.services import free_port

pytestmark = pytest.mark.integration

RELEASE = "ergon"
UNWATCHED = "ergon-e2e-unwatched"
STARTED = "ergon operator started"

Grant = tuple[str, str, str]  # (apiGroup, resource, verb)

# Granted verbs that code paths the e2e suite cannot reach use, each with why. Keep it short:
# anything here is a verb no test shows to be needed.
UNREACHED: dict[Grant, str] = {}


def test_the_operator_acts_in_exactly_its_watched_namespaces(k8s: Environment, name: str) -> None:
    """A FlowRun in the second watched namespace runs (and goes when its TTL runs out: the only
    FlowRun deletion by the operator, which no other e2e test makes it do); one in a namespace
    the operator does not watch (worker ServiceAccount and DSN Secret there too) is never
    touched; and no operator request reached outside its namespaces or across the cluster."""
    env = _test_cluster(k8s)
    assert EXTRA_NAMESPACE in env.watch_namespaces
    account = env.operator_env["ERGON_WORKER_SERVICE_ACCOUNT"]
    env.cluster.kubectl("create", "namespace", UNWATCHED)
    env.cluster.kubectl("-n", UNWATCHED, "create", "serviceaccount", account)
    dsn = f"--from-literal=dsn={env.store_url}"
    env.cluster.kubectl("-n", UNWATCHED, "create", "secret", "generic", STORE_SECRET, dsn)
    try:
        for namespace in (EXTRA_NAMESPACE, UNWATCHED):
            run = _run(name, ttlSecondsAfterFinished=3)
            env.cluster.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(run))
        _kubectl_wait(env, EXTRA_NAMESPACE, name, "--for=jsonpath={.status.phase}=Succeeded")
        _kubectl_wait(env, EXTRA_NAMESPACE, name, "--for=delete")  # by the TTL
        time.sleep(3)  # in all, longer than the operator's resync (5 s) and the TTL
        ignored = json.loads(
            env.cluster.kubectl("-n", UNWATCHED, "get", "flowrun", name, "-o", "json").stdout
        )
        assert not ignored.get("status"), ignored["status"]
        pods = env.cluster.kubectl("-n", UNWATCHED, "get", "pods", "-o", "name").stdout
        assert not pods.strip(), pods
    finally:
        env.cluster.kubectl("delete", "namespace", UNWATCHED, "--wait=false", check=False)
    allowed = {*env.watch_namespaces, env.namespace}  # + the Lease's, the release namespace
    elsewhere = sorted(
        f"{r['verb']} {r['resource']} in {r['namespace'] or 'the whole cluster'}"
        for r in _operator_rows(env)
        if r["namespace"] not in allowed
    )
    assert not elsewhere, f"the operator reached outside its namespaces: {elsewhere}"


def test_namespaced_rbac_grants_exactly_the_calls_the_operator_made(
    k8s: Environment, e2e_session: E2ESession
) -> None:
    env = _test_cluster(k8s)
    docs = _yaml(env.cluster.helm("get", "manifest", RELEASE, "-n", env.namespace).stdout)
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    granted = _grants(docs, env)
    assert set(granted) == {*env.watch_namespaces, env.namespace}, sorted(granted)
    used = _used(_operator_rows(env))
    print(_table("the operator's API calls over the e2e session, per namespace", used))
    owners = _owner_finalizers(env)
    print(_table("derived from ownerReferences (no request)", {"*": set(owners)}))

    missing = [
        f"{verb} {_gr(group, resource)} in {scope or 'the whole cluster'}"
        for scope, grants in used.items()
        for group, resource, verb in sorted(grants - granted.get(scope, set()))
    ]
    missing += [
        f"{verb} {_gr(group, resource)} in {namespace} ({owners[(group, resource, verb)]})"
        for namespace in env.watch_namespaces
        for group, resource, verb in sorted(set(owners) - granted[namespace])
    ]
    assert not missing, "used but not granted:\n  " + "\n  ".join(missing)

    # The same operator Role in every watched namespace (the release namespace's Lease Role
    # apart); a verb counts as used when it was used in any of them.
    roles = {namespace: granted[namespace] - _leases(granted[namespace]) for namespace in granted}
    assert len({frozenset(r) for n, r in roles.items() if n in env.watch_namespaces}) == 1
    needed = set(owners) | {g for scope, grants in used.items() for g in grants}
    all_granted = {g for grants in granted.values() for g in grants}
    _assert_none_unused(all_granted - needed, e2e_session)


def test_cluster_wide_rbac_grants_exactly_the_calls_the_operator_made(
    k8s: Environment, e2e_session: E2ESession, name: str
) -> None:
    """The default install: a ClusterRole. A cluster-wide operator runs a FlowRun (its list and
    watch calls go across the cluster, and kopf follows CRDs); every other call is the same
    code as in the namespaced session, so the ClusterRole must grant what both used."""
    env = _test_cluster(k8s)
    before = _counts(_operator_rows(env))
    with _cluster_wide_operator(env):
        env.apply(_run(name))
        env.wait_phase(name, "Succeeded")
        run = _used(_rows_since(_operator_rows(env), before))
    print(_table("a cluster-wide operator's API calls", run))

    values = json.loads(
        env.cluster.helm("get", "values", RELEASE, "-n", env.namespace, "-o", "json").stdout
    )
    values["operator"]["watchNamespaces"] = []
    values_file = env.home / "cluster-wide-values.json"
    values_file.write_text(json.dumps(values))
    rendered = env.cluster.helm(
        "template", RELEASE, str(CHART_DIR), "-n", env.namespace, "-f", str(values_file)
    ).stdout
    docs = _yaml(rendered)
    assert [d["kind"] for d in docs if d["kind"].startswith("Cluster")] == [
        "ClusterRole",
        "ClusterRoleBinding",
    ]
    granted = _grants(docs, env)
    cluster = granted.get("", set())
    leases = _leases(granted.get(env.namespace, set()))
    session = _used(_operator_rows(env))
    owners = _owner_finalizers(env)
    needed = {g for grants in (*run.values(), *session.values()) for g in grants} | set(owners)
    missing = sorted(needed - cluster - leases)
    assert not missing, f"used but not granted by the ClusterRole: {missing}"
    _assert_none_unused(cluster - needed, e2e_session)


def test_no_output_of_the_session_shows_the_store_dsn(k8s: Environment) -> None:
    env = _test_cluster(k8s)
    assert env.recorder is not None
    dsn = env.store_url or ""
    password = urlsplit(dsn).password or ""
    assert password, "the audited session's DSN has a password (environment.StoreRole)"
    secrets = {
        "the store DSN": dsn,
        "the operator's store DSN": env.operator_env["ERGON_STORE"],
        "the DSN's password": password,
    }
    found: list[str] = []
    looked = Counter[str]()
    for where, text in _outputs(env):
        looked[where.split(":", 1)[0]] += 1
        for what, secret in secrets.items():
            at = text.find(secret)
            if at != -1:
                context = text[max(0, at - 80) : at + len(secret) + 40].replace(secret, "<HERE>")
                found.append(f"{what} in {where}: ...{context}...")
    print(f"looked at: {dict(looked)}")
    assert looked["worker pod log"] and looked["Event"] and looked["operator log"], looked
    assert not found, "the store DSN leaked:\n  " + "\n  ".join(found[:20])


# --- the request log -------------------------------------------------------------------------


def _test_cluster(k8s: Environment) -> TestClusterEnvironment:
    if not isinstance(k8s, TestClusterEnvironment) or not k8s.audited:
        pytest.skip("needs the audited test cluster environment (its request log and records)")
    return k8s


def _operator_rows(env: TestClusterEnvironment) -> list[dict[str, Any]]:
    """The request log's rows of the operator's resource requests (non-resource URLs such as
    discovery are readable by every authenticated user and need no rule)."""
    rows = env.api_requests()["requests"]
    return [r for r in rows if r["user"] == env.operator_user and r["verb"] is not None]


def _key(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[k] for k in ("agent", "method", "group", "namespace", "resource", "watch"))


def _counts(rows: Iterable[dict[str, Any]]) -> Counter[tuple[Any, ...]]:
    return Counter({_key(r): int(r["count"]) for r in rows})


def _rows_since(
    rows: list[dict[str, Any]], before: Counter[tuple[Any, ...]]
) -> list[dict[str, Any]]:
    return [r for r in rows if int(r["count"]) > before[_key(r)]]


def _used(rows: Iterable[dict[str, Any]]) -> dict[str, set[Grant]]:
    """(group, resource, verb) per namespace ("" for cluster-scoped requests)."""
    used: dict[str, set[Grant]] = {}
    for row in rows:
        used.setdefault(row["namespace"], set()).add((row["group"], row["resource"], row["verb"]))
    return used


def _owner_finalizers(env: TestClusterEnvironment) -> dict[Grant, str]:
    """`update` on `<owner plural>/finalizers` for each kind of owner that the pods and
    Deployments the operator created name with blockOwnerDeletion (what the
    OwnerReferencesPermissionEnforcement admission plugin checks), with the evidence."""
    assert env.recorder is not None
    found: dict[Grant, set[str]] = {}
    for resource, label in (("pods", "ergon.dev/flowrun"), ("deployments", "ergon.dev/workerpool")):
        for obj in env.recorder.objects(resource):
            meta = obj.get("metadata") or {}
            if label not in (meta.get("labels") or {}):
                continue
            for ref in meta.get("ownerReferences") or []:
                if ref.get("blockOwnerDeletion"):
                    group = str(ref.get("apiVersion", "")).rpartition("/")[0]
                    plural = f"{str(ref.get('kind', '')).lower()}s/finalizers"
                    found.setdefault((group, plural, "update"), set()).add(resource)
    return {grant: f"blockOwnerDeletion on {', '.join(sorted(of))}" for grant, of in found.items()}


# --- the chart's rules -----------------------------------------------------------------------


def _yaml(text: str) -> list[dict[str, Any]]:
    return [dict(doc) for doc in yaml.safe_load_all(text) if doc]


def _grants(docs: list[dict[str, Any]], env: TestClusterEnvironment) -> dict[str, set[Grant]]:
    """(group, resource, verb) granted to the operator's ServiceAccount, per namespace of the
    binding ("" for ClusterRoleBindings). resourceNames are not told apart (the Lease's)."""
    account = env.operator_user.rsplit(":", 1)[1]
    roles = {
        (d["kind"], (d["metadata"].get("namespace") or ""), d["metadata"]["name"]): d
        for d in docs
        if d["kind"] in ("Role", "ClusterRole")
    }
    granted: dict[str, set[Grant]] = {}
    for binding in docs:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(
            s.get("kind") == "ServiceAccount"
            and s.get("name") == account
            and s.get("namespace") == env.namespace
            for s in binding.get("subjects") or []
        ):
            continue
        scope = binding["metadata"].get("namespace") or ""
        ref = binding["roleRef"]
        role = roles[(ref["kind"], scope if ref["kind"] == "Role" else "", ref["name"])]
        for rule in role.get("rules") or []:
            granted.setdefault(scope, set()).update(
                (group, resource, verb)
                for group in rule.get("apiGroups") or []
                for resource in rule.get("resources") or []
                for verb in rule.get("verbs") or []
            )
    return granted


def _leases(grants: set[Grant]) -> set[Grant]:
    return {g for g in grants if g[:2] == ("coordination.k8s.io", "leases")}


def _assert_none_unused(unused: set[Grant], session: E2ESession) -> None:
    unused -= set(UNREACHED)
    if not session.complete:
        print(f"not the whole e2e suite ran: granted but unused not judged ({sorted(unused)})")
        return
    why = (
        f" ({len(session.failed)} e2e tests failed: calls may be missing)" if session.failed else ""
    )
    assert not unused, f"granted but never used{why}: " + ", ".join(
        f"{verb} {_gr(group, resource)}" for group, resource, verb in sorted(unused)
    )


def _gr(group: str, resource: str) -> str:
    return f"{resource}.{group}" if group else resource


def _table(title: str, used: dict[str, set[Grant]]) -> str:
    verbs: dict[tuple[str, str], set[str]] = {}
    for grants in used.values():
        for group, resource, verb in grants:
            verbs.setdefault((group, resource), set()).add(verb)
    lines = [f"{title}:"]
    lines += [
        f"  {_gr(group, resource):40} {' '.join(sorted(v))}"
        for (group, resource), v in sorted(verbs.items())
    ]
    scopes = ", ".join(sorted(s or "(cluster)" for s in used))
    return "\n".join([*lines, f"  in: {scopes}"])


# --- the cluster-wide operator, and the outputs ----------------------------------------------


@contextlib.contextmanager
def _cluster_wide_operator(env: TestClusterEnvironment) -> Iterator[None]:
    """The session's operator stopped cleanly (it releases the Lease); one watching every
    namespace in its place, with the same identity; then the session's one again."""
    env.stop_operator(hard=False)
    log = env.home / "operator.log"
    started = log.read_text(errors="replace").count(STARTED)
    settings = {
        **env.operator_env,
        "ERGON_WATCH_NAMESPACES": "",
        "ERGON_HEALTH_PORT": str(free_port()),
    }
    process = env._spawn_operator(settings)
    try:
        wait_for(
            lambda: log.read_text(errors="replace").count(STARTED) > started,
            timeout=60,
            message="the cluster-wide operator leads and runs kopf",
        )
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        env.start_operator()


def _outputs(env: TestClusterEnvironment) -> Iterator[tuple[str, str]]:
    """(where, text) of everything the session kept that a user or an admin could read."""
    assert env.recorder is not None
    pod_logs = env.pod_log_dir.resolve()
    for path in sorted(env.home.rglob("*.log")):
        if pod_logs in path.resolve().parents:
            where = f"worker pod log: {path.relative_to(pod_logs)}"
        elif path.name == "server.log":
            where = f"test cluster log: {path.name}"
        else:
            where = f"operator log: {path.name}"
        yield where, path.read_text(errors="replace")
    for resource in ("flowruns", "signals", "workerpools"):
        for obj in env.recorder.objects(resource):
            shown = {"status": obj.get("status"), "metadata": obj.get("metadata")}
            yield f"{_kind(resource)}: {_name(obj)}", json.dumps(shown)
    for resource in ("events", "pods", "deployments"):
        for obj in env.recorder.objects(resource):
            yield f"{_kind(resource)}: {_name(obj)}", json.dumps(obj)


def _kind(resource: str) -> str:
    return {
        "flowruns": "FlowRun",
        "signals": "Signal",
        "workerpools": "WorkerPool",
        "events": "Event",
        "pods": "Pod",
        "deployments": "Deployment",
    }[resource]


def _name(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    version = meta.get("resourceVersion")
    return f"{meta.get('namespace')}/{meta.get('name')} (resourceVersion {version})"


def _run(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "ergon.dev/v1alpha1",
        "kind": "FlowRun",
        "metadata": {"name": name},
        "spec": {
            "flow": "examples.orders:OrderFlow",
            "input": {"order_id": "17", "amount": 1},
            **spec,
        },
    }


def _kubectl_wait(env: TestClusterEnvironment, namespace: str, name: str, condition: str) -> None:
    result = env.cluster.kubectl(
        "-n", namespace, "wait", f"flowrun/{name}", condition, "--timeout=90s", check=False
    )
    assert result.returncode == 0, f"{name} in {namespace}: {result.stderr}\n{env.debug()}"
