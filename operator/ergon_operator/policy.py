"""The worker pod policy: what a FlowRun's or WorkerPool's author may ask of the pods that run it.

Creating a FlowRun creates a pod, so everything a FlowRun passes to its pod is checked against
the policy the platform team configured (chart values `workerPolicy`, env `ERGON_WORKER_POLICY`):
the image, the service account, where environment variables and volumes come from, loader
variables, labels and annotations, node placement and resources. A FlowRun that asks for more is
failed before any pod exists, with reason `PolicyViolation` and a message naming the field and
the rule; a WorkerPool gets no Deployment for that version. `check` is pure.

Defaults are closed: only the operator's own worker image repository, no service account of the
author's choosing, no Secret or ConfigMap, no extra labels or annotations, no tolerations or node
selector, and resources up to a maximum (limits default to it).
"""

from __future__ import annotations

import functools
import json
import posixpath
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

POLICY_VIOLATION = "PolicyViolation"

# Keys no FlowRun may set on its pods, whatever the allow-lists say: the operator's own, and the
# Kubernetes-reserved prefixes (`kubernetes.io/`, `k8s.io/` and their subdomains).
RESERVED_PREFIXES = ("ergon.dev/", "kubernetes.io/", "k8s.io/")
RESERVED_DOMAINS = (".kubernetes.io/", ".k8s.io/", ".ergon.dev/")
# Variables that make the dynamic loader or the interpreter run code of the author's choosing
# before the flow does; allowed only when listed in `envNames`.
LOADER_VARIABLES = (
    "LD_*",
    "DYLD_*",
    "PYTHONSTARTUP",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONUSERBASE",
    "PYTHONPLATLIBDIR",
    "PYTHONBREAKPOINT",
    "PYTHONINSPECT",
    "GCONV_PATH",
    "BASH_ENV",
    "ENV",
)
VOLUME_KINDS = ("emptyDir", "configMap", "secret")
TMP_VOLUME = "tmp"  # the operator's scratch volume at /tmp


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class Toleration(_Model):
    """One toleration FlowRuns may carry, matched on all four fields (tolerationSeconds free)."""

    key: str = ""
    operator: str = "Equal"
    value: str = ""
    effect: str = ""


class WorkerPolicy(_Model):
    """What FlowRuns and WorkerPools may ask of their worker pods. Patterns are globs: `*`
    matches any characters (`/` included), `?` one character, anything else itself."""

    # Images: empty means the repository of the operator's default worker image, any tag/digest.
    images: tuple[str, ...] = ()
    service_accounts: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
    config_maps: tuple[str, ...] = ()
    env_names: tuple[str, ...] = ()  # loader variables that are allowed after all
    label_keys: tuple[str, ...] = ()
    annotation_keys: tuple[str, ...] = ()
    tolerations: tuple[Toleration, ...] = ()
    node_selector: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    # Where template volumes may be mounted (the image's own directories, such as a
    # site-packages a sitecustomize.py could be dropped into, stay out of reach).
    mount_paths: tuple[str, ...] = ("/mnt/*", "/data/*")
    max_resources: dict[str, str] = Field(
        default_factory=lambda: {"cpu": "4", "memory": "8Gi", "ephemeral-storage": "10Gi"}
    )
    tmp_size_limit: str = "1Gi"

    @classmethod
    def from_json(cls, text: str) -> WorkerPolicy:
        """The policy from `ERGON_WORKER_POLICY` (JSON); ValueError with a one-line reason."""
        if not text.strip():
            return cls()
        try:
            policy = cls.model_validate(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON ({exc.msg} at position {exc.pos})") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(top level)"
            raise ValueError(f"{where}: {first['msg']}") from None
        for resource, amount in policy.max_resources.items():
            if _quantity(amount) is None:
                raise ValueError(f"maxResources.{resource}: {amount!r} is not a quantity")
        if _quantity(policy.tmp_size_limit) is None:
            raise ValueError(f"tmpSizeLimit: {policy.tmp_size_limit!r} is not a quantity")
        return policy

    def allowed_images(self, default_image: str) -> tuple[str, ...]:
        if self.images:
            return self.images
        repository = image_repository(default_image)
        return (f"{repository}:*", f"{repository}@*")


def image_repository(image: str) -> str:
    """`registry:5000/team/app:tag@sha256:...` -> `registry:5000/team/app`."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def check(
    *,
    policy: WorkerPolicy,
    default_image: str,
    image: str | None,
    template: Mapping[str, Any],
    where: str = "spec",
) -> str | None:
    """The first rule `image` (when the author chose it) and `template` (spec.podTemplate)
    break, as "<field>: <what is wrong> (<the rule>)", or None when they keep the policy."""
    problems = violations(
        policy=policy, default_image=default_image, image=image, template=template, where=where
    )
    return problems[0] if problems else None


def violations(
    *,
    policy: WorkerPolicy,
    default_image: str,
    image: str | None,
    template: Mapping[str, Any],
    where: str = "spec",
) -> list[str]:
    """Every rule broken, in field order."""
    found: list[str] = []
    tpl = f"{where}.podTemplate"
    if image is not None and image != default_image:
        allowed = policy.allowed_images(default_image)
        if not _matches(image, allowed):
            found.append(
                f"{where}.image: {image!r} is not an allowed image "
                f"(workerPolicy.images: {_show(allowed)})"
            )
    account = template.get("serviceAccountName")
    if account and not _matches(account, policy.service_accounts):
        found.append(
            f"{tpl}.serviceAccountName: {account!r} may not be chosen by a FlowRun "
            f"(workerPolicy.serviceAccounts: {_show(policy.service_accounts)})"
        )
    found += _env(policy, template.get("env") or [], tpl)
    found += _volumes(policy, template, tpl)
    found += _keys("labels", policy.label_keys, template.get("labels") or {}, tpl)
    found += _keys("annotations", policy.annotation_keys, template.get("annotations") or {}, tpl)
    for index, toleration in enumerate(template.get("tolerations") or []):
        if not any(_same_toleration(toleration, allowed) for allowed in policy.tolerations):
            found.append(
                f"{tpl}.tolerations[{index}]: {json.dumps(toleration, sort_keys=True)} is not an "
                "allowed toleration (workerPolicy.tolerations)"
            )
    for key, value in (template.get("nodeSelector") or {}).items():
        values = policy.node_selector.get(key)
        if values is None or not _matches(str(value), values):
            found.append(
                f"{tpl}.nodeSelector.{key}: {key}={value!r} is not an allowed node selector "
                f"(workerPolicy.nodeSelector: {_show_selector(policy.node_selector)})"
            )
    found += _resources(policy, template.get("resources") or {}, tpl)
    return found


def clamp_resources(policy: WorkerPolicy, resources: Mapping[str, Any]) -> dict[str, Any]:
    """The container's resources with a limit for every resource the policy bounds: the
    author's limit (already checked to be within the maximum) or the maximum itself."""
    limits = dict(resources.get("limits") or {})
    for resource, maximum in policy.max_resources.items():
        limits.setdefault(resource, maximum)
    result = {**resources, "limits": limits}
    return result


def _env(policy: WorkerPolicy, env: Sequence[Mapping[str, Any]], tpl: str) -> list[str]:
    found: list[str] = []
    for index, var in enumerate(env):
        name = str(var.get("name", ""))
        field = f"{tpl}.env[{index}]"
        if _matches(name, LOADER_VARIABLES) and not _matches(name, policy.env_names):
            found.append(
                f"{field}.name: {name} changes what the worker process loads "
                f"(allowed only when listed in workerPolicy.envNames: {_show(policy.env_names)})"
            )
        source = var.get("valueFrom") or {}
        if "secretKeyRef" in source:
            name = str((source["secretKeyRef"] or {}).get("name", ""))
            found += _source(f"{field}.valueFrom.secretKeyRef.name", "Secret", name, policy)
        if "configMapKeyRef" in source:
            name = str((source["configMapKeyRef"] or {}).get("name", ""))
            found += _source(f"{field}.valueFrom.configMapKeyRef.name", "ConfigMap", name, policy)
    return found


def _source(field: str, kind: str, name: str, policy: WorkerPolicy) -> list[str]:
    """A Secret or ConfigMap the pod would read (env or volume): allowed, or one problem."""
    allowed, setting = (
        (policy.secrets, "secrets") if kind == "Secret" else (policy.config_maps, "configMaps")
    )
    if _matches(name, allowed):
        return []
    return [f"{field}: {kind} {name!r} is not allowed (workerPolicy.{setting}: {_show(allowed)})"]


def _volumes(policy: WorkerPolicy, template: Mapping[str, Any], tpl: str) -> list[str]:
    found: list[str] = []
    names = set()
    for index, volume in enumerate(template.get("volumes") or []):
        field = f"{tpl}.volumes[{index}]"
        name = str(volume.get("name", ""))
        names.add(name)
        if name == TMP_VOLUME:
            found.append(f"{field}.name: {TMP_VOLUME!r} is the operator's /tmp volume")
        kinds = [k for k in volume if k != "name"]
        if len(kinds) != 1 or kinds[0] not in VOLUME_KINDS:
            found.append(
                f"{field}: a volume must be exactly one of {', '.join(VOLUME_KINDS)} "
                f"(found {', '.join(kinds) or 'none'})"
            )
            continue
        source = volume[kinds[0]] or {}
        if kinds[0] == "secret":
            secret = str(source.get("secretName", ""))
            found += _source(f"{field}.secret.secretName", "Secret", secret, policy)
        elif kinds[0] == "configMap":
            config = str(source.get("name", ""))
            found += _source(f"{field}.configMap.name", "ConfigMap", config, policy)
    for index, mount in enumerate(template.get("volumeMounts") or []):
        field = f"{tpl}.volumeMounts[{index}]"
        if mount.get("name") not in names:
            found.append(f"{field}.name: no volume {mount.get('name')!r} in {tpl}.volumes")
        path = str(mount.get("mountPath", ""))
        if path == "/tmp":
            found.append(f"{field}.mountPath: /tmp is the operator's scratch volume")
        elif not path.startswith("/") or "//" in path or posixpath.normpath(path) != path:
            found.append(f"{field}.mountPath: {path!r} is not a normalised absolute path")
        elif not _matches(path, policy.mount_paths):
            found.append(
                f"{field}.mountPath: {path} is not an allowed mount path "
                f"(workerPolicy.mountPaths: {_show(policy.mount_paths)})"
            )
        if mount.get("subPath") or mount.get("subPathExpr"):
            found.append(f"{field}.subPath: volumes are mounted whole (no subPath)")
    return found


def _keys(kind: str, allowed: tuple[str, ...], values: Mapping[str, Any], tpl: str) -> list[str]:
    found: list[str] = []
    setting = "labelKeys" if kind == "labels" else "annotationKeys"
    for key in values:
        if _reserved(key):
            found.append(
                f"{tpl}.{kind}.{key}: the prefix is reserved for the operator and Kubernetes "
                f"({', '.join(RESERVED_PREFIXES)})"
            )
        elif not _matches(key, allowed):
            found.append(
                f"{tpl}.{kind}.{key}: the key is not allowed "
                f"(workerPolicy.{setting}: {_show(allowed)})"
            )
    return found


def _resources(policy: WorkerPolicy, resources: Mapping[str, Any], tpl: str) -> list[str]:
    found: list[str] = []
    for part in ("requests", "limits"):
        for resource, amount in (resources.get(part) or {}).items():
            maximum = policy.max_resources.get(resource)
            if maximum is None:
                continue
            value, bound = _quantity(amount), _quantity(maximum)
            if value is None or (bound is not None and value > bound):
                found.append(
                    f"{tpl}.resources.{part}.{resource}: {amount} is above the maximum "
                    f"(workerPolicy.maxResources.{resource}: {maximum})"
                )
    return found


def _reserved(key: str) -> bool:
    prefix = key.partition("/")[0] + "/" if "/" in key else ""
    return bool(prefix) and (
        prefix in RESERVED_PREFIXES or any(prefix.endswith(d) for d in RESERVED_DOMAINS)
    )


def _same_toleration(toleration: Mapping[str, Any], allowed: Toleration) -> bool:
    return (
        str(toleration.get("key", "")) == allowed.key
        and str(toleration.get("operator") or "Equal") == allowed.operator
        and str(toleration.get("value", "")) == allowed.value
        and str(toleration.get("effect", "")) == allowed.effect
    )


def _matches(value: str, patterns: Sequence[str]) -> bool:
    return any(_glob(pattern).fullmatch(value) for pattern in patterns)


@functools.lru_cache(maxsize=256)
def _glob(pattern: str) -> re.Pattern[str]:
    """`*` (any characters, `/` included) and `?` (one character); everything else literal, as
    the chart's ValidatingAdmissionPolicy reads the same patterns (no `[...]` classes)."""
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.DOTALL)


_QUANTITY = re.compile(r"([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)([KMGTPE]i|[numkMGTPE])?")
_SUFFIXES: dict[str | None, Decimal] = {
    **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
    **{s: Decimal(1000) ** (i + 1) for i, s in enumerate(("k", "M", "G", "T", "P", "E"))},
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    None: Decimal(1),
}


def _quantity(amount: object) -> Decimal | None:
    """A Kubernetes quantity (`500m`, `4Gi`, `1e3`, 2) as a number; None if it is not one.
    (The kubernetes client has a parser, but the operator's settings load without it.)"""
    match = _QUANTITY.fullmatch(str(amount).strip())
    if match is None or isinstance(amount, bool):
        return None
    number: str = match.group(1)
    suffix: str | None = match.group(2)
    if "e" in number.lower() and suffix is not None:
        return None
    return Decimal(number) * _SUFFIXES[suffix]


def _show(patterns: Sequence[str]) -> str:
    return ", ".join(patterns) if patterns else "none"


def _show_selector(selector: Mapping[str, Sequence[str]]) -> str:
    if not selector:
        return "none"
    return "; ".join(f"{key}={'|'.join(values)}" for key, values in selector.items())
