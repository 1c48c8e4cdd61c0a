"""The request log as the operator's RBAC test reads it: who (by ServiceAccount token), which
RBAC verb, group, resource and scope; TokenRequest (`kubectl create token`); and container output
kept in files after the pod is gone (`--pod-log-dir`)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from tests.cluster.authn import ADMIN_TOKEN, ADMIN_USER, service_account_token, user_of
from tests.cluster.fixtures import start_cluster, wait_for
from tests.cluster.requestlog import RequestCounter, ResourcePath, parse_path, verb_of


@pytest.mark.parametrize(
    ("path", "parsed"),
    [
        ("/api/v1/namespaces/ns/pods/p/log", ResourcePath("", "ns", "pods/log", "p")),
        ("/api/v1/pods", ResourcePath("", "", "pods", None)),
        (
            "/apis/apps/v1/namespaces/ns/deployments",
            ResourcePath("apps", "ns", "deployments", None),
        ),
        (
            "/apis/ergon.dev/v1alpha1/namespaces/ns/flowruns/x/status",
            ResourcePath("ergon.dev", "ns", "flowruns/status", "x"),
        ),
        ("/api/v1/namespaces/ns", ResourcePath("", "", "namespaces", "ns")),
        ("/api/v1/namespaces/ns/finalize", ResourcePath("", "", "namespaces/finalize", "ns")),
        ("/api/v1/namespaces", ResourcePath("", "", "namespaces", None)),
        ("/api/v1", None),
        ("/apis", None),
        ("/version", None),
    ],
)
def test_paths_name_group_scope_resource_and_name(path: str, parsed: ResourcePath | None) -> None:
    assert parse_path(path) == parsed


def test_rbac_verbs_of_requests() -> None:
    assert verb_of("GET", watch=False, named=True) == "get"
    assert verb_of("GET", watch=False, named=False) == "list"
    assert verb_of("GET", watch=True, named=False) == "watch"
    assert verb_of("POST", watch=False, named=False) == "create"
    assert verb_of("PUT", watch=False, named=True) == "update"
    assert verb_of("PATCH", watch=False, named=True) == "patch"
    assert verb_of("DELETE", watch=False, named=True) == "delete"
    assert verb_of("DELETE", watch=False, named=False) == "deletecollection"


def test_users_of_tokens() -> None:
    token, _ = service_account_token("ns", "op")
    assert user_of(f"Bearer {token}") == "system:serviceaccount:ns:op"
    assert user_of(f"Bearer {ADMIN_TOKEN}") == ADMIN_USER
    assert user_of(None) == "system:anonymous"
    assert user_of("Bearer not-a-token") == "unknown"
    counter = RequestCounter()
    counter.record(method="GET", path="/apis/g/v1/things", agent="kopf/1", watch=True, user="u")
    counter.record(method="GET", path="/apis/g/v1", agent="kopf/1", watch=False, user="u")
    rows = counter.snapshot()["requests"]
    assert {(r["group"], r["namespace"], r["resource"], r["verb"]) for r in rows} == {
        ("g", "", "things", "watch"),
        ("", "", "discovery", None),
    }


@pytest.mark.integration  # a test cluster in a subprocess
def test_a_service_account_token_names_its_requests_and_pod_output_outlives_the_pod(
    tmp_path: Path,
) -> None:
    logs = tmp_path / "pod-logs"
    cluster = start_cluster(tmp_path / "cluster", extra_args=["--pod-log-dir", str(logs)])
    try:
        cluster.kubectl("create", "namespace", "ns")
        cluster.kubectl("-n", "ns", "create", "serviceaccount", "op")
        token = cluster.kubectl("-n", "ns", "create", "token", "op").stdout.strip()
        request = urllib.request.Request(
            f"{cluster.server}/api/v1/namespaces/ns/pods",
            headers={"Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(request) as response:
            assert json.loads(response.read())["kind"] == "PodList"
        missing = cluster.kubectl("-n", "ns", "create", "token", "nobody", check=False)
        assert missing.returncode != 0 and "not found" in missing.stderr
        rows = cluster.request("GET", "/testing/requests")["requests"]
        mine = [r for r in rows if r["user"] == "system:serviceaccount:ns:op"]
        assert [(r["verb"], r["group"], r["namespace"], r["resource"]) for r in mine] == [
            ("list", "", "ns", "pods")
        ]

        cluster.kubectl(
            "-n", "ns", "run", "p", "--image=x", "--restart=Never", "--command", "--", "echo", "hi"
        )
        wait_for(lambda: list(logs.rglob("*.log")), message="the pod's log file")
        cluster.kubectl("-n", "ns", "delete", "pod", "p")
        (path,) = logs.rglob("*.log")
        wait_for(lambda: path.read_text() == "hi\n", message="the pod's output in its file")
        assert path.parent.name == "p" and path.parent.parent.name.startswith("ns_p_")
    finally:
        cluster.stop()
