"""What a container process gets: its argv, environment, working directory and volumes.

This machine stands in for the image, so the process inherits the server's own environment
(PATH, the virtualenv, ...) and the container's ``env``/``envFrom`` go on top, resolved the way
the kubelet resolves them: ``valueFrom`` secret, config map, field and resource references,
``$(VAR)`` expansion in values, command and args. A missing Secret, ConfigMap or key raises
:class:`ConfigError`, which the kubelet reports as ``CreateContainerConfigError`` and retries.

:func:`pod_volumes` resolves the pod's ``volumes`` (``emptyDir``; ``configMap`` and ``secret``
as one file per key, honouring ``items``, ``defaultMode``/``mode`` and ``optional``). A missing
Secret, ConfigMap or listed key raises :class:`MountError`: as a real kubelet does, the pod then
stays ``ContainerCreating`` with ``FailedMount`` Warning Events until the object appears.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .store import Store

JSON = dict[str, Any]
_REFERENCE = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


class ConfigError(Exception):
    """The container cannot be configured yet (a referenced object or key is missing)."""


class MountError(Exception):
    """A volume cannot be set up yet; ``str()`` is the kubelet's FailedMount message."""

    def __init__(self, volume: str, problem: str) -> None:
        super().__init__(f'MountVolume.SetUp failed for volume "{volume}" : {problem}')


VOLUME_KINDS = ("emptyDir", "configMap", "secret")  # what the test cluster's kubelet provides
_DEFAULT_MODE = 0o644  # defaultMode 420, Kubernetes' default for configMap and secret volumes


@dataclass(frozen=True)
class Volume:
    """One of a pod's ``volumes``, resolved: what the kubelet puts in its directory."""

    name: str
    kind: str  # one of VOLUME_KINDS, or the key of a source the test cluster cannot provide
    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)  # path -> (data, mode)
    size_limit: str | None = None  # emptyDir.sizeLimit, recorded (not enforced)

    @property
    def supported(self) -> bool:
        return self.kind in VOLUME_KINDS

    @property
    def read_only(self) -> bool:
        """configMap and secret volumes are always mounted read-only."""
        return self.kind in ("configMap", "secret")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: known names are replaced, ``$$`` escapes, rest kept."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _REFERENCE.sub(replace, text)


def container_env(
    store: Store,
    pod: JSON,
    container: JSON,
    base: Mapping[str, str],
) -> dict[str, str]:
    """The full environment: ``base`` (the server's), then envFrom, then env."""
    namespace = pod["metadata"]["namespace"]
    env = dict(base)
    declared: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = str(source.get("prefix") or "")
        for ref_key, store_key, what in (
            ("configMapRef", "configmaps", "configmap"),
            ("secretRef", "secrets", "secret"),
        ):
            ref = source.get(ref_key)
            if not ref:
                continue
            data = _data(store, store_key, namespace, str(ref.get("name", "")))
            if data is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'{what} "{ref.get("name")}" not found')
            declared.update({prefix + k: v for k, v in data.items()})
    for item in container.get("env") or []:
        name = str(item.get("name", ""))
        if "valueFrom" in item:
            value = _value_from(store, pod, container, item["valueFrom"])
            if value is None:
                continue
            declared[name] = value
        else:
            declared[name] = expand(str(item.get("value", "")), {**declared})
    env.update(declared)
    return env


def container_argv(container: JSON, env: Mapping[str, str]) -> list[str]:
    """command + args with ``$(VAR)`` expanded; args alone stand in for the image's entrypoint."""
    words = [*(container.get("command") or []), *(container.get("args") or [])]
    return [expand(str(word), env) for word in words]


def pod_volumes(store: Store, pod: JSON) -> dict[str, Volume]:
    """Every volume of the pod by name; :class:`MountError` if one cannot be set up yet."""
    namespace = pod["metadata"]["namespace"]
    out: dict[str, Volume] = {}
    for spec in (pod.get("spec") or {}).get("volumes") or []:
        name = str(spec.get("name", ""))
        kinds = [key for key in spec if key != "name"]
        kind = kinds[0] if kinds else "unknown"
        source = spec.get(kind) or {}
        if kind == "emptyDir":
            limit = source.get("sizeLimit")
            out[name] = Volume(name, kind, size_limit=None if limit is None else str(limit))
        elif kind in ("configMap", "secret"):
            out[name] = Volume(name, kind, _volume_files(store, namespace, name, kind, source))
        else:
            out[name] = Volume(name, kind)
    return out


def _volume_files(
    store: Store, namespace: str, volume: str, kind: str, source: JSON
) -> dict[str, tuple[bytes, int]]:
    """The files of a configMap or secret volume (kubelet's messages for what is missing)."""
    if kind == "secret":
        what, object_name = "secret", str(source.get("secretName", ""))
        obj = store.get("secrets", namespace, object_name)
        data = {k: base64.b64decode(v) for k, v in ((obj or {}).get("data") or {}).items()}
    else:
        what, object_name = "configmap", str(source.get("name", ""))
        obj = store.get("configmaps", namespace, object_name)
        data = {k: str(v).encode() for k, v in ((obj or {}).get("data") or {}).items()}
        binary = (obj or {}).get("binaryData") or {}
        data.update({k: base64.b64decode(v) for k, v in binary.items()})
    optional = bool(source.get("optional"))
    if obj is None:
        if optional:
            return {}  # an optional volume whose object is missing is an empty directory
        raise MountError(volume, f'{what} "{object_name}" not found')
    mode = int(source.get("defaultMode", _DEFAULT_MODE))
    items = source.get("items")
    if not items:
        return {key: (value, mode) for key, value in data.items()}
    files: dict[str, tuple[bytes, int]] = {}
    for item in items:
        key, path = str(item.get("key", "")), str(item.get("path", ""))
        if key not in data:
            if optional:
                continue
            if kind == "configMap":
                raise MountError(volume, f"configmap references non-existent config key: {key}")
            raise MountError(volume, f"references non-existent secret key: {key}")
        if not path or path.startswith("/") or ".." in path.split("/"):
            raise MountError(volume, f"items path {path!r} must be relative without '..'")
        files[path] = (data[key], int(item.get("mode", mode)))
    return files


def _data(store: Store, store_key: str, namespace: str, name: str) -> dict[str, str] | None:
    obj = store.get(store_key, namespace, name)
    if obj is None:
        return None
    if store_key == "secrets":
        return {
            k: base64.b64decode(v).decode("utf-8", "replace")
            for k, v in (obj.get("data") or {}).items()
        }
    return {k: str(v) for k, v in (obj.get("data") or {}).items()}


def _value_from(store: Store, pod: JSON, container: JSON, source: JSON) -> str | None:
    namespace = pod["metadata"]["namespace"]
    for ref_key, store_key, what, kind in (
        ("secretKeyRef", "secrets", "secret", "Secret"),
        ("configMapKeyRef", "configmaps", "configmap", "ConfigMap"),
    ):
        ref = source.get(ref_key)
        if not ref:
            continue
        name, key = str(ref.get("name", "")), str(ref.get("key", ""))
        data = _data(store, store_key, namespace, name)
        if data is None:
            if ref.get("optional"):
                return None
            raise ConfigError(f'{what} "{name}" not found')
        if key not in data:
            if ref.get("optional"):
                return None
            raise ConfigError(f"couldn't find key {key} in {kind} {namespace}/{name}")
        return data[key]
    if "fieldRef" in source:
        return field_ref(pod, str(source["fieldRef"].get("fieldPath", "")))
    if "resourceFieldRef" in source:
        return _resource_ref(container, source["resourceFieldRef"])
    return None


_LABEL_REF = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def field_ref(pod: JSON, path: str) -> str:
    meta, spec = pod["metadata"], pod.get("spec") or {}
    if match := _LABEL_REF.match(path):
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": "127.0.0.1",
        "status.hostIPs": "127.0.0.1",
        "status.podIP": "127.0.0.1",
        "status.podIPs": "127.0.0.1",
    }
    if path == "metadata.labels":
        return "\n".join(f'{k}="{v}"' for k, v in sorted((meta.get("labels") or {}).items()))
    if path == "metadata.annotations":
        return "\n".join(f'{k}="{v}"' for k, v in sorted((meta.get("annotations") or {}).items()))
    return str(simple.get(path) or "")


def _resource_ref(container: JSON, ref: JSON) -> str:
    resource = str(ref.get("resource", ""))
    kind, _, name = resource.partition(".")
    resources = container.get("resources") or {}
    value = (resources.get(kind) or {}).get(name) or (resources.get("limits") or {}).get(name)
    if value is not None:
        return str(value)
    if name == "cpu":
        return str(os.cpu_count() or 1)
    if name == "memory":
        return str(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    return "0"
