"""Offline checks of Kubernetes manifests: built-in kinds against the Kubernetes JSON schemas
(kubernetes-validate, strict), custom resources against our CRDs' openAPIV3Schema, and the
``restricted`` Pod Security profile.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]

from tests.chart.helm import load_crd

KUBERNETES_VERSION = "1.33"

Schema = dict[str, Any]


def validate_builtin(manifest: dict[str, Any]) -> None:
    """Raises if ``manifest`` does not match its kind's schema (unknown fields are errors)."""
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def walk(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    """Every schema node with its path, e.g. ``.spec.flow``, ``.spec.signals.*``,
    ``.status.conditions[]``."""
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    additional = schema.get("additionalProperties")
    if isinstance(additional, dict):
        yield from walk(additional, f"{path}.*")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")


def openapi_schema(kind: str) -> Schema:
    (version,) = load_crd(kind)["spec"]["versions"]
    return dict(version["schema"]["openAPIV3Schema"])


def to_json_schema(openapi: Schema) -> Schema:
    """A JSON Schema that accepts what the API server accepts for ``openapi``, and rejects
    unknown fields as ``kubectl apply`` does (field validation Strict) instead of pruning them.
    """
    schema = copy.deepcopy(openapi)
    for _, node in walk(schema):
        for key in [key for key in node if key.startswith("x-kubernetes-")]:
            if key == "x-kubernetes-preserve-unknown-fields":
                continue
            del node[key]
        if (
            node.get("type") == "object"
            and "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        node.pop("x-kubernetes-preserve-unknown-fields", None)
    return schema


def validate_custom(resource: dict[str, Any]) -> None:
    """Raises ``jsonschema.ValidationError`` if ``resource`` does not match its CRD."""
    assert resource["apiVersion"] == "ergon.dev/v1alpha1", resource["apiVersion"]
    schema = to_json_schema(openapi_schema(resource["kind"]))
    jsonschema.Draft7Validator(
        schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    ).validate(resource)


# The `restricted` Pod Security Standard, which includes `baseline`
# (kubernetes.io/docs/concepts/security/pod-security-standards).
_RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
_SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}


def restricted_violations(pod_spec: dict[str, Any]) -> list[str]:
    """What in ``pod_spec`` breaks the ``restricted`` profile; empty when it complies."""
    problems: list[str] = []
    pod_sc = pod_spec.get("securityContext", {})
    containers = [
        *pod_spec.get("initContainers", []),
        *pod_spec.get("containers", []),
        *pod_spec.get("ephemeralContainers", []),
    ]
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(field):
            problems.append(f"{field} is set")
    for volume in pod_spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= _RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']} has type {sorted(kinds)}")
    for sysctl in pod_sc.get("sysctls", []):
        if sysctl["name"] not in _SAFE_SYSCTLS:
            problems.append(f"unsafe sysctl {sysctl['name']}")
    if pod_sc.get("runAsUser") == 0:
        problems.append("pod runAsUser is 0")
    pod_seccomp = pod_sc.get("seccompProfile", {}).get("type")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        problems.append(f"pod seccompProfile is {pod_seccomp}")
    for container in containers:
        name = container["name"]
        sc = container.get("securityContext", {})
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if not (
            sc.get("runAsNonRoot") is True
            or (pod_sc.get("runAsNonRoot") is True and sc.get("runAsNonRoot") is not False)
        ):
            problems.append(f"{name}: runAsNonRoot is not true")
        if sc.get("runAsUser") == 0:
            problems.append(f"{name}: runAsUser is 0")
        seccomp = sc.get("seccompProfile", {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile is {seccomp}")
        capabilities = sc.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []):
            problems.append(f"{name}: capabilities do not drop ALL")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities {capabilities['add']}")
        if sc.get("procMount", "Default") != "Default":
            problems.append(f"{name}: procMount is {sc['procMount']}")
        if sc.get("appArmorProfile", {}).get("type") == "Unconfined":
            problems.append(f"{name}: AppArmor is Unconfined")
        for port in container.get("ports", []):
            if port.get("hostPort"):
                problems.append(f"{name}: hostPort {port['hostPort']}")
    return problems
