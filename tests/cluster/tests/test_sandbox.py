"""Volumes and readOnlyRootFilesystem: the kubelet runs such containers through sandbox.py.

A container with ``securityContext.readOnlyRootFilesystem`` cannot write outside its volumes
(here as on Kubernetes), its ``emptyDir`` at /tmp is writable and outlives container restarts,
Secrets and ConfigMaps mounted as volumes are read-only files, and a missing Secret keeps the pod
``ContainerCreating`` with ``FailedMount`` Events. Containers without either setting run as
before, with this machine's filesystem writable.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from tests.cluster.fixtures import TestCluster, start_cluster, wait_for
from tests.cluster.kubelet import _NAMESPACES, SANDBOX
from tests.cluster.tools import REPO_ROOT

pytestmark = pytest.mark.integration  # drives the test cluster in a subprocess

READ_ONLY = {"readOnlyRootFilesystem": True}


def pod(
    name: str,
    script: str,
    *,
    volumes: list[dict[str, Any]] | None = None,
    mounts: list[dict[str, Any]] | None = None,
    security: dict[str, Any] | None = None,
    restart: str = "Never",
    env: dict[str, str] | None = None,
) -> str:
    container: dict[str, Any] = {
        "name": "main",
        "image": "local/none:1",
        "command": ["sh", "-c", script],
        "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
    }
    if mounts is not None:
        container["volumeMounts"] = mounts
    if security is not None:
        container["securityContext"] = security
    spec: dict[str, Any] = {"restartPolicy": restart, "containers": [container]}
    if volumes is not None:
        spec["volumes"] = volumes
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})


def apply(cluster: TestCluster, namespace: str, manifest: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest)


def status(cluster: TestCluster, namespace: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "-n", namespace, f"pod/{name}", "-o", "json").stdout
    return cast(dict[str, Any], json.loads(out).get("status", {}))


def wait_phase(cluster: TestCluster, namespace: str, name: str, phase: str) -> dict[str, Any]:
    cluster.kubectl(
        "wait",
        "-n",
        namespace,
        f"pod/{name}",
        "--timeout=30s",
        f"--for=jsonpath={{.status.phase}}={phase}",
    )
    return status(cluster, namespace, name)


def wait_waiting(cluster: TestCluster, namespace: str, name: str, reason: str) -> dict[str, Any]:
    cluster.kubectl(
        "wait",
        "-n",
        namespace,
        f"pod/{name}",
        "--timeout=30s",
        f"--for=jsonpath={{.status.containerStatuses[0].state.waiting.reason}}={reason}",
    )
    state = status(cluster, namespace, name)["containerStatuses"][0]["state"]["waiting"]
    return cast(dict[str, Any], state)


def terminated(pod_status: dict[str, Any]) -> dict[str, Any]:
    return cast(dict[str, Any], pod_status["containerStatuses"][0]["state"]["terminated"])


def logs(cluster: TestCluster, namespace: str, name: str) -> str:
    return cluster.kubectl("logs", "-n", namespace, name).stdout


def events(cluster: TestCluster, namespace: str, name: str) -> list[tuple[str, str, str]]:
    out = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}",
        "-o", "json",
    ).stdout  # fmt: skip
    return [(e["type"], e["reason"], e["message"]) for e in json.loads(out)["items"]]


@pytest.fixture
def repo_probe() -> Iterator[Path]:
    """A file in the repository (the pods' working directory) that no pod should create."""
    path = REPO_ROOT / f".sandbox-probe-{uuid.uuid4().hex[:8]}"
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def test_read_only_root_writes_only_its_tmp_volume(
    test_cluster: TestCluster, cluster_namespace: str, repo_probe: Path
) -> None:
    """The worker pod's shape: a read-only root, an emptyDir at /tmp and TMPDIR=/tmp."""
    ns = cluster_namespace
    marker = f"sandbox-{uuid.uuid4().hex[:8]}"
    script = f"""
        echo scratch > /tmp/{marker} && cat /tmp/{marker}
        python -c 'import tempfile; f = tempfile.NamedTemporaryFile(); print("tempfile", f.name)'
        mount -o remount,rw,bind / 2>/dev/null && echo REMOUNTED
        umount /tmp 2>/dev/null && echo UNMOUNTED
        touch {repo_probe}
    """
    apply(
        test_cluster,
        ns,
        pod(
            "worker",
            script,
            volumes=[{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
            mounts=[{"name": "tmp", "mountPath": "/tmp"}],
            security=READ_ONLY,
            env={"TMPDIR": "/tmp"},
        ),
    )
    done = wait_phase(test_cluster, ns, "worker", "Failed")
    assert terminated(done)["exitCode"] == 1  # touch's
    out = logs(test_cluster, ns, "worker")
    assert out.startswith("scratch\ntempfile /tmp/")
    assert f"touch: cannot touch '{repo_probe}': Read-only file system" in out
    assert "REMOUNTED" not in out and "UNMOUNTED" not in out  # the flags are locked
    assert not repo_probe.exists()
    assert not Path("/tmp", marker).exists()  # written to the volume, not this machine's /tmp


def test_empty_dir_outlives_container_restarts(
    test_cluster: TestCluster, cluster_namespace: str
) -> None:
    ns = cluster_namespace
    script = "test -e /tmp/seen && exit 0; touch /tmp/seen; exit 1"
    apply(
        test_cluster,
        ns,
        pod(
            "again",
            script,
            volumes=[{"name": "tmp", "emptyDir": {}}],
            mounts=[{"name": "tmp", "mountPath": "/tmp"}],
            security=READ_ONLY,
            restart="OnFailure",
        ),
    )
    done = wait_phase(test_cluster, ns, "again", "Succeeded")
    assert done["containerStatuses"][0]["restartCount"] == 1


def test_secret_and_config_map_volumes_are_read_only_files(
    test_cluster: TestCluster, cluster_namespace: str, tmp_path: Path
) -> None:
    ns = cluster_namespace
    test_cluster.kubectl(
        "create", "secret", "generic", "-n", ns, "creds",
        "--from-literal=user=alice", "--from-literal=password=s3cret",
    )  # fmt: skip
    test_cluster.kubectl(
        "create", "configmap", "-n", ns, "settings",
        "--from-literal=mode=fast", "--from-literal=level=debug",
    )  # fmt: skip
    creds, conf = tmp_path / "mnt" / "creds", tmp_path / "mnt" / "conf"  # made for the pod
    script = f"""
        echo "$(cat {creds}/user):$(cat {creds}/password)"
        ls {conf} {conf}/sub
        cat {conf}/sub/mode.txt; echo
        stat -c %a {creds}/user {conf}/sub/mode.txt
        touch {creds}/new || echo secret-read-only
        touch {tmp_path}/outside || echo root-read-only
    """
    apply(
        test_cluster,
        ns,
        pod(
            "reader",
            script,
            volumes=[
                {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400}},
                {
                    "name": "conf",
                    "configMap": {
                        "name": "settings",
                        "items": [{"key": "mode", "path": "sub/mode.txt"}],
                    },
                },
            ],
            mounts=[
                {"name": "creds", "mountPath": str(creds)},
                {"name": "conf", "mountPath": str(conf)},
            ],
            security=READ_ONLY,
        ),
    )
    wait_phase(test_cluster, ns, "reader", "Succeeded")
    out = logs(test_cluster, ns, "reader")
    assert out.startswith("alice:s3cret\n")
    assert f"{conf}:\nsub\n\n{conf}/sub:\nmode.txt\nfast\n400\n644\n" in out
    assert "Read-only file system" in out
    assert "secret-read-only" in out and "root-read-only" in out
    assert not (tmp_path / "outside").exists()
    assert creds.is_dir()  # the mount points exist on this machine while the pod does ...

    test_cluster.kubectl("delete", "-n", ns, "pod/reader", "--timeout=30s")
    wait_for(lambda: not (tmp_path / "mnt").exists(), message="mount points removed")  # ... only


def test_missing_secret_volume_waits_in_container_creating(
    test_cluster: TestCluster, cluster_namespace: str
) -> None:
    """As on a real node: FailedMount Events, not CreateContainerConfigError, until it exists."""
    ns = cluster_namespace
    apply(
        test_cluster,
        ns,
        pod(
            "patient",
            "cat /tmp/creds/token",
            volumes=[
                {"name": "tmp", "emptyDir": {}},
                {"name": "creds", "secret": {"secretName": "later"}},
                {"name": "extra", "secret": {"secretName": "never", "optional": True}},
            ],
            mounts=[
                {"name": "tmp", "mountPath": "/tmp"},
                {"name": "creds", "mountPath": "/tmp/creds"},
                {"name": "extra", "mountPath": "/tmp/extra"},
            ],
            security=READ_ONLY,
        ),
    )
    wait_waiting(test_cluster, ns, "patient", "ContainerCreating")
    assert status(test_cluster, ns, "patient")["phase"] == "Pending"
    wait_for(
        lambda: (
            (
                "Warning",
                "FailedMount",
                'MountVolume.SetUp failed for volume "creds" : secret "later" not found',
            )
            in events(test_cluster, ns, "patient")
        ),
        message="a FailedMount Event",
    )
    test_cluster.kubectl(
        "create", "secret", "generic", "-n", ns, "later", "--from-literal=token=abc"
    )
    wait_phase(test_cluster, ns, "patient", "Succeeded")
    assert logs(test_cluster, ns, "patient") == "abc"


def test_containers_without_the_settings_write_as_before(
    test_cluster: TestCluster, cluster_namespace: str, tmp_path: Path
) -> None:
    ns = cluster_namespace
    apply(test_cluster, ns, pod("plain", f"echo plain > {tmp_path}/plain"))
    # Volumes without readOnlyRootFilesystem: the volume is mounted, the root stays writable.
    apply(
        test_cluster,
        ns,
        pod(
            "mounted",
            f"echo in-volume > {tmp_path}/scratch/file && echo mounted > {tmp_path}/mounted",
            volumes=[{"name": "scratch", "emptyDir": {}}],
            mounts=[{"name": "scratch", "mountPath": str(tmp_path / "scratch")}],
        ),
    )
    wait_phase(test_cluster, ns, "plain", "Succeeded")
    wait_phase(test_cluster, ns, "mounted", "Succeeded")
    assert (tmp_path / "plain").read_text() == "plain\n"
    assert (tmp_path / "mounted").read_text() == "mounted\n"
    assert not (tmp_path / "scratch" / "file").exists()  # it went to the volume


def test_containers_that_cannot_be_set_up_fail_clearly(
    test_cluster: TestCluster, cluster_namespace: str
) -> None:
    ns = cluster_namespace
    apply(
        test_cluster,
        ns,
        pod(
            "host-path",
            "true",
            volumes=[{"name": "data", "hostPath": {"path": "/var/data"}}],
            mounts=[{"name": "data", "mountPath": "/data"}],
        ),
    )
    apply(
        test_cluster,
        ns,
        pod(
            "nowhere",
            "true",
            volumes=[{"name": "tmp", "emptyDir": {}}],
            mounts=[{"name": "tmp", "mountPath": "/proc/ergon-nowhere"}],
            security=READ_ONLY,
        ),
    )
    waiting = wait_waiting(test_cluster, ns, "host-path", "CreateContainerError")
    assert "provides only emptyDir, configMap, secret volumes" in waiting["message"]
    failed = terminated(wait_phase(test_cluster, ns, "nowhere", "Failed"))
    assert (failed["exitCode"], failed["reason"]) == (128, "StartError")
    assert "mountPath /proc/ergon-nowhere does not exist on this machine" in failed["message"]
    assert "cannot be created" in logs(test_cluster, ns, "nowhere")


def test_without_user_namespaces_such_pods_fail_loudly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never a writable root instead: CreateContainerError saying why; other pods still run."""
    monkeypatch.setenv("ERGON_TEST_CLUSTER_UNSHARE", "false")  # `false` fails, as unshare would
    cluster = start_cluster(tmp_path / "cluster")
    try:
        apply(cluster, "default", pod("strict", "true", security=READ_ONLY))
        apply(cluster, "default", pod("plain", "true"))
        waiting = wait_waiting(cluster, "default", "strict", "CreateContainerError")
        assert "need user namespaces, which do not work on this machine" in waiting["message"]
        assert "does not run such a container with a writable root" in waiting["message"]
        wait_phase(cluster, "default", "plain", "Succeeded")
    finally:
        cluster.stop()


def test_a_volume_over_a_parent_of_the_image_keeps_the_image_visible(tmp_path: Path) -> None:
    """The kubelet's working directory and Python stand in for the image: a volume mounted over
    one of their parents (``/tmp`` over a checkout under ``/tmp``) binds them back, read-only
    under a read-only root, while the rest of the volume is the volume's."""
    checkout = tmp_path / "mounted" / "checkout"
    checkout.mkdir(parents=True)
    (checkout / "marker").write_text("image content\n")
    (tmp_path / "mounted" / "hidden").write_text("hidden by the volume\n")
    volume = tmp_path / "volume"
    volume.mkdir()
    spec = {
        "mounts": [{"source": str(volume), "target": str(tmp_path / "mounted")}],
        "readOnlyRoot": True,
        "workingDir": str(checkout),
        "image": [str(checkout)],
    }
    script = (
        "cat marker; test ! -e ../hidden && echo hidden-gone; "
        "touch ../scratch && echo volume-writable; "
        "touch new 2>/dev/null || echo image-read-only"
    )
    sandbox = [sys.executable, "-I", "-S", str(SANDBOX), json.dumps(spec), "--"]
    result = subprocess.run(
        ["unshare", *_NAMESPACES, *sandbox, "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:4] == [
        "image content",
        "hidden-gone",
        "volume-writable",
        "image-read-only",
    ]
    assert (volume / "scratch").exists() and not (checkout / "new").exists()
