"""Every pod the chart runs meets the `restricted` Pod Security profile (so the chart installs into
a namespace that enforces it, as the kind scripts do)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.helm import DEPLOY_POSTGRES, one, render
from tests.chart.schemas import restricted_violations

POD_OWNERS = [("Deployment", "ergon-operator"), ("StatefulSet", "ergon-postgres")]


def _pod_spec(kind: str, name: str, values: dict[str, Any] = DEPLOY_POSTGRES) -> dict[str, Any]:
    return dict(one(render(values), kind, name)["spec"]["template"]["spec"])


@pytest.mark.parametrize(("kind", "name"), POD_OWNERS)
def test_pods_meet_the_restricted_profile(kind: str, name: str) -> None:
    assert restricted_violations(_pod_spec(kind, name)) == []


@pytest.mark.parametrize(("kind", "name"), POD_OWNERS)
def test_pods_stay_restricted_with_scheduling_values(kind: str, name: str) -> None:
    prefix = "operator" if kind == "Deployment" else "postgres"
    values = {
        **DEPLOY_POSTGRES,
        f"{prefix}.nodeSelector": {"pool": "system"},
        f"{prefix}.tolerations": [{"key": "dedicated", "operator": "Exists"}],
        "postgres.persistence.enabled": False,
    }
    assert restricted_violations(_pod_spec(kind, name, values)) == []


def test_operator_runs_as_10001_with_a_read_only_root() -> None:
    pod = _pod_spec("Deployment", "ergon-operator")
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert mounts == {"/tmp"}


def test_postgres_writes_only_to_its_volumes() -> None:
    pod = _pod_spec("StatefulSet", "ergon-postgres")
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsUser"] != 0
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    assert set(mounts) == {
        "/var/lib/postgresql/data",
        "/var/run/postgresql",
        "/tmp",
        "/docker-entrypoint-initdb.d",
    }
    assert mounts["/docker-entrypoint-initdb.d"]["readOnly"] is True  # the init script's ConfigMap


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"hostNetwork": True}, "hostNetwork"),
        ({"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}, "hostPath"),
        ({"securityContext": {"runAsNonRoot": True, "runAsUser": 1}}, "seccompProfile"),
        (
            {"containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": True}}]},
            "allowPrivilegeEscalation",
        ),
        (
            {
                "containers": [
                    {
                        "name": "c",
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]},
                        },
                    }
                ]
            },
            "adds capabilities",
        ),
        (
            {
                "containers": [
                    {
                        "name": "c",
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "runAsNonRoot": False,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }
                ]
            },
            "runAsNonRoot",
        ),
    ],
)
def test_the_profile_check_catches_violations(change: dict[str, Any], complaint: str) -> None:
    pod = {**_pod_spec("Deployment", "ergon-operator"), **change}
    assert any(complaint in problem for problem in restricted_violations(pod))
