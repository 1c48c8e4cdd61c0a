"""The worker pod of a FlowRun: what the operator creates to run (or resume) a flow.

The pod runs the runtime's own single-flow entry point, `ergon run-flow --flow-id <uid>`, with
the store DSN from a Secret. It satisfies the `restricted` Pod Security profile, never restarts
in place (the operator decides about retries), and is owned by its FlowRun, so deleting the
FlowRun garbage-collects it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ergon_operator.policy import TMP_VOLUME, clamp_resources
from ergon_operator.resources import (
    API_VERSION,
    ATTEMPT_LABEL,
    FLOWRUN_LABEL,
    SEQUENCE_LABEL,
    FlowRun,
)
from ergon_operator.settings import Settings

WORKER_UID = 10001
MAX_NAME = 253  # a pod name is a DNS subdomain
MAX_LABEL = 63  # a label value


def uid_tag(run: FlowRun) -> str:
    """Six hex characters derived from the FlowRun's uid: what keeps shortened names of two
    FlowRuns with a common prefix apart."""
    return hashlib.sha256(run.uid.encode()).hexdigest()[:6]


def pod_name(run: FlowRun, sequence: int) -> str:
    """`<flowrun>-<sequence>`; when that is longer than a pod name may be, the FlowRun's name is
    cut and followed by a uid-derived tag (`<cut>-<tag>-<sequence>`), so names never collide."""
    suffix = f"-{sequence}"
    if len(run.name) + len(suffix) <= MAX_NAME:
        return run.name + suffix
    suffix = f"-{uid_tag(run)}{suffix}"
    return run.name[: MAX_NAME - len(suffix)].rstrip("-.") + suffix


def flowrun_label(run: FlowRun) -> str:
    """The `ergon.dev/flowrun` label value: the FlowRun's name, or for names longer than a label
    value may be, its start and a uid-derived tag. For people and selectors only: the operator
    finds a run's pods by their owner reference's uid."""
    if len(run.name) <= MAX_LABEL:
        return run.name
    tag = f"-{uid_tag(run)}"
    return run.name[: MAX_LABEL - len(tag)].rstrip("-.") + tag


def worker_image(run: FlowRun, settings: Settings) -> str:
    """The image of the run's next pod: the one its first pod ran (`status.image`), so that an
    upgrade of the operator's default image never changes the code under a run in flight;
    for a run's first pod, `spec.image` or the operator's default."""
    return run.status.image or run.image or settings.worker_image


def worker_pod(run: FlowRun, settings: Settings, *, sequence: int, attempt: int) -> dict[str, Any]:
    """The manifest of worker pod number `sequence` (pod-level attempt `attempt`)."""
    image = worker_image(run, settings)
    template = run.pod_template
    labels = {
        **dict(template.get("labels") or {}),
        "app.kubernetes.io/name": "ergon",
        "app.kubernetes.io/component": "worker",
        "app.kubernetes.io/managed-by": "ergon-operator",
        FLOWRUN_LABEL: flowrun_label(run),
        ATTEMPT_LABEL: str(attempt),
        SEQUENCE_LABEL: str(sequence),
    }
    annotations = {**dict(template.get("annotations") or {}), "ergon.dev/flow-id": run.uid}
    env: list[dict[str, Any]] = [
        {
            "name": "ERGON_STORE",
            "valueFrom": {
                "secretKeyRef": {"name": settings.store_secret, "key": settings.store_secret_key}
            },
        },
        {"name": "ERGON_FLOWRUN", "value": run.name},
        {"name": "ERGON_POD_ATTEMPT", "value": str(attempt)},
        *list(template.get("env") or []),
    ]
    container = restricted_container(
        image=image,
        command=["ergon", "run-flow", "--flow-id", run.uid],
        env=env,
        template=template,
        settings=settings,
    )
    spec = restricted_pod_spec(container, template=template, settings=settings)
    spec["restartPolicy"] = "Never"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(run, sequence),
            "namespace": run.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "FlowRun",
                    "name": run.name,
                    "uid": run.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }


def restricted_container(
    *,
    image: str,
    command: list[str],
    env: list[dict[str, Any]],
    template: dict[str, Any],
    settings: Settings,
) -> dict[str, Any]:
    """The worker container: the `restricted` Pod Security profile's container settings, a
    read-only root filesystem with a writable `/tmp` (`TMPDIR`), the template's volume mounts,
    and the template's resources with limits up to the policy's maximum."""
    container: dict[str, Any] = {
        "name": "worker",
        "image": image,
        "command": command,
        "env": [*env, {"name": "TMPDIR", "value": "/tmp"}],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
        },
        "volumeMounts": [
            {"name": TMP_VOLUME, "mountPath": "/tmp"},
            *[dict(m) for m in template.get("volumeMounts") or []],
        ],
    }
    resources = clamp_resources(settings.policy, template.get("resources") or {})
    if resources.get("limits") or resources.get("requests"):
        container["resources"] = resources
    return container


def restricted_pod_spec(
    container: dict[str, Any], *, template: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    """A worker pod's spec around `container`: non-root, no service account token, the
    RuntimeDefault seccomp profile, an `emptyDir` for `/tmp` (size from the policy), the
    template's volumes, service account, node selector and tolerations."""
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": WORKER_UID,
            "runAsGroup": WORKER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": settings.policy.tmp_size_limit}},
            *[dict(v) for v in template.get("volumes") or []],
        ],
    }
    account = template.get("serviceAccountName") or settings.worker_service_account
    if account:
        spec["serviceAccountName"] = account
    for key in ("nodeSelector", "tolerations"):
        if template.get(key):
            spec[key] = template[key]
    return spec
