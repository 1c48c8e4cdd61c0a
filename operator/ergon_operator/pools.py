"""Worker pools: `WorkerPool` resources as versioned `ergon worker` Deployments. Pure: no I/O.

A pool runs long-lived workers that claim flows from the store, instead of a pod per FlowRun.
Each *version* of a pool is one Deployment running `ergon worker --version <routing key>
--exclusive`: its workers claim only flows recorded with that version's routing key, so a flow
scheduled on version 1 is only ever executed by version 1's code, whatever the pool becomes.

`decide_pool` turns what the operator observes — the pool, its Deployments, and each version's
queue depth from the store — into a `PoolPlan`: Deployments to create, scale, update or delete,
and the status. Replicas follow `ceil((running + runnable) / concurrency)` within the pool's
bounds; the current version never goes below `replicas.min`, older versions drain down to zero
and their Deployment is deleted once no flow of theirs is unfinished. Scaling up is immediate;
scaling down waits until the lower target has held for `scaleDownDelaySeconds`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import Field

from ergon import QueueDepth
from ergon_operator import policy
from ergon_operator.pods import restricted_container, restricted_pod_spec
from ergon_operator.resources import (
    API_VERSION,
    POOL_LABEL,
    Condition,
    _Camel,
    format_time,
    parse_time,
)
from ergon_operator.settings import Settings

POOL_VERSION_LABEL = "ergon.dev/pool-version"  # a tag derived from the version (label-safe)
VERSION_ANNOTATION = "ergon.dev/version"
SPEC_HASH_ANNOTATION = "ergon.dev/spec-hash"
ROUTING_PREFIX = "pool:"
DEFAULT_GRACE_SECONDS = 300
MAX_DRAINED_KEPT = 5
DRAIN_GRACE = 10.0  # seconds a drained version's Deployment outlives its last flow, at least
IMAGE_CONFLICT = "ImageChangedWithoutVersion"
MAX_DEPLOYMENT_NAME = 52  # room for the ReplicaSet hash and the pod suffix under 63


def routing_version(namespace: str, pool: str, version: str) -> str:
    """The version a pool's flows are recorded with and its workers claim (`--version`):
    unique per namespace, pool and version, so two pools never take each other's flows."""
    return f"{ROUTING_PREFIX}{namespace}/{pool}/{version}"


def parse_routing(value: str | None) -> tuple[str, str, str] | None:
    """(namespace, pool, version) of a routing key; None for any other version string."""
    if not value or not value.startswith(ROUTING_PREFIX):
        return None
    parts = value[len(ROUTING_PREFIX) :].split("/", 2)
    if len(parts) != 3:
        return None
    return parts[0], parts[1], parts[2]


def version_of_image(image: str) -> str:
    """The default version: the image's tag (`repo:1.4.0` -> `1.4.0`), or the digest's first 12
    hex characters for `repo@sha256:…`; `latest` for an untagged image."""
    if "@" in image:
        return image.rsplit("@", 1)[1].split(":", 1)[-1][:12]
    last = image.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else "latest"


def version_tag(version: str) -> str:
    return hashlib.sha256(version.encode()).hexdigest()[:10]


def deployment_name(pool: str, version: str) -> str:
    """`<pool>-<version>-<tag>`, the tag derived from both, so two pools never compute the same
    name (pool `web` version `api-1` and pool `web-api` version `1` differ); `<pool>-<tag>` when
    the version is not a valid name part (lowercase letters, digits, `-`, `.`) or too long."""
    tag = hashlib.sha256(f"{pool}/{version}".encode()).hexdigest()[:5]
    valid = re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", version) is not None
    name = f"{pool}-{version}-{tag}"
    if valid and len(name) <= MAX_DEPLOYMENT_NAME:
        return name
    return f"{pool[: MAX_DEPLOYMENT_NAME - len(tag) - 1].rstrip('-.')}-{tag}"


@dataclass(frozen=True, slots=True)
class WorkerPool:
    namespace: str
    name: str
    uid: str
    generation: int
    image: str
    version: str
    imports: tuple[str, ...]
    concurrency: int
    min_replicas: int
    max_replicas: int
    scale_down_delay: float
    lease_seconds: float
    pod_template: dict[str, Any]
    status: WorkerPoolStatus
    status_body: dict[str, Any]
    deleting: bool = False

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> WorkerPool:
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        replicas = spec.get("replicas") or {}
        image = str(spec.get("image") or "")
        low = max(int(replicas.get("min", 0)), 0)
        return cls(
            namespace=str(meta.get("namespace") or "default"),
            name=str(meta.get("name")),
            uid=str(meta.get("uid")),
            generation=int(meta.get("generation") or 1),
            image=image,
            version=str(spec.get("version") or version_of_image(image)),
            imports=tuple(str(m) for m in spec.get("imports") or ()),
            concurrency=max(int(spec.get("concurrency", 16)), 1),
            min_replicas=low,
            max_replicas=max(int(replicas.get("max", 10)), low, 1),
            scale_down_delay=float(spec.get("scaleDownDelaySeconds", 60)),
            lease_seconds=float(spec.get("leaseSeconds", 30)),
            pod_template=dict(spec.get("podTemplate") or {}),
            status=WorkerPoolStatus.parse(body.get("status") or {}),
            status_body=dict(body.get("status") or {}),
            deleting=bool(meta.get("deletionTimestamp")),
        )

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def routing(self, version: str | None = None) -> str:
        return routing_version(self.namespace, self.name, version or self.version)


class PoolVersionStatus(_Camel):
    """One version of a pool in `status.versions`."""

    version: str
    image: str = ""
    deployment: str = ""
    replicas: int = 0
    ready_replicas: int = 0
    flows_running: int = 0
    flows_queued: int = 0
    flows_waiting: int = 0
    state: str = "Active"  # Active | Draining | Drained
    # Since when its load has needed fewer workers than it has (scale down after the delay).
    idle_since: str | None = None


class WorkerPoolStatus(_Camel):
    observed_generation: int | None = None
    phase: str | None = None
    current_version: str | None = None
    replicas: int = 0
    ready_replicas: int = 0
    versions: list[PoolVersionStatus] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> WorkerPoolStatus:
        try:
            return cls.model_validate(dict(body))
        except ValueError:
            return cls()  # edited by hand or by another release: rebuilt from observation

    def to_body(self) -> dict[str, Any]:
        """The status as the API holds it (unset fields left out, as the API server drops
        nulls: what it returns then compares equal to what was written)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


@dataclass(frozen=True, slots=True)
class Deployment:
    """A pool version's Deployment, as much as decisions need."""

    name: str
    version: str
    image: str
    replicas: int
    ready_replicas: int
    spec_hash: str
    concurrency: int = 0  # the workers' --concurrency (0: not found)

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> Deployment:
        meta = body.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        spec = body.get("spec") or {}
        status = body.get("status") or {}
        containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or [{}]
        return cls(
            name=str(meta.get("name")),
            version=str(annotations.get(VERSION_ANNOTATION) or ""),
            image=str(containers[0].get("image") or ""),
            replicas=int(spec.get("replicas", 1)),
            ready_replicas=int(status.get("readyReplicas") or 0),
            spec_hash=str(annotations.get(SPEC_HASH_ANNOTATION) or ""),
            concurrency=_option(containers[0].get("command") or [], "--concurrency"),
        )


def _option(command: list[Any], flag: str) -> int:
    """The integer after `flag` in a command line (0 when absent)."""
    try:
        return int(command[command.index(flag) + 1])
    except (ValueError, IndexError):
        return 0


@dataclass(frozen=True, slots=True)
class PoolObserved:
    pool: WorkerPool
    deployments: list[Deployment]
    depth: dict[str, QueueDepth]  # pool version -> its flows in the store
    now: datetime
    run_versions: frozenset[str] = frozenset()  # versions of the pool's unfinished FlowRuns


@dataclass
class PoolPlan:
    status: WorkerPoolStatus
    create: list[dict[str, Any]] = field(default_factory=list)
    replace: list[dict[str, Any]] = field(default_factory=list)  # the template changed
    scale: dict[str, int] = field(default_factory=dict)  # Deployment name -> replicas
    delete: list[str] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # type, reason, message
    wake_at: datetime | None = None

    def wake(self, when: datetime) -> None:
        self.wake_at = when if self.wake_at is None else min(self.wake_at, when)


def versions_to_watch(
    pool: WorkerPool, deployments: list[Deployment], run_versions: Iterable[str] = ()
) -> list[str]:
    """Every version whose flows may still need workers: the current one, those with a
    Deployment, those the status lists as not yet drained, and those of the pool's unfinished
    FlowRuns (so a version drained a moment before a run was recorded on it comes back)."""
    found = [pool.version, *(d.version for d in deployments if d.version)]
    found += [v.version for v in pool.status.versions if v.state != "Drained"]
    found += list(run_versions)
    return list(dict.fromkeys(found))


def decide_pool(seen: PoolObserved, settings: Settings) -> PoolPlan:
    pool, now = seen.pool, seen.now
    previous = {v.version: v for v in pool.status.versions}
    by_version = {d.version: d for d in seen.deployments}
    status = WorkerPoolStatus(observed_generation=pool.generation, current_version=pool.version)
    plan = PoolPlan(status=status)
    conflict: str | None = None
    # A pool that breaks the worker policy gets no Deployment (nor changes to one) for any
    # version; Deployments already running keep running, scaling and draining.
    violation = policy.check(
        policy=settings.policy,
        default_image=settings.worker_image,
        image=pool.image,
        template=pool.pod_template,
    )
    for version in versions_to_watch(pool, seen.deployments, seen.run_versions):
        current = version == pool.version
        depth = seen.depth.get(version, QueueDepth(runnable=0, running=0, waiting=0))
        deployment = by_version.get(version)
        before = previous.get(version)
        # A version names one build of the code: its image never changes under it. A new
        # image with the same version is refused (reported), the running one kept.
        image = deployment.image if deployment is not None else ""
        if current and not image:
            image = pool.image
        if not image and before is not None:
            image = before.image
        if current and deployment is not None and deployment.image != pool.image:
            conflict = (
                f"spec.image changed to {pool.image} but the version is still {version} "
                f"(running {deployment.image}); change spec.version to roll out new code"
            )
        entry = PoolVersionStatus(
            version=version,
            image=image,
            deployment=deployment.name if deployment else deployment_name(pool.name, version),
            flows_running=depth.running,
            flows_queued=depth.runnable,
            flows_waiting=depth.waiting,
            state="Active" if current else "Draining",
            idle_since=before.idle_since if before else None,
        )
        if not current and depth.unfinished == 0:
            _drain(plan, pool, entry, deployment, now)
            continue
        concurrency = deployment.concurrency if deployment and deployment.concurrency else 0
        if current or not concurrency:
            concurrency = pool.concurrency  # older versions keep the concurrency they run with
        load = depth.running + depth.runnable
        want = math.ceil(load / concurrency)
        low = pool.min_replicas if current else 0
        target = min(max(want, low), pool.max_replicas)
        have = deployment.replicas if deployment is not None else 0
        if target >= have:
            entry.idle_since = None
        else:  # scale down only once the lower target has held for the delay
            since = parse_time(entry.idle_since) or now
            entry.idle_since = format_time(since)
            idle_until = since + timedelta(seconds=pool.scale_down_delay)
            if now < idle_until:
                plan.wake(idle_until)
                target = have
            else:
                entry.idle_since = None
        if violation is not None and (current or deployment is None):
            # Refused: nothing is created from the refused spec, not even an older version's
            # Deployment (it would be built from the current template).
            target = deployment.replicas if deployment is not None else 0
        elif deployment is None:
            manifest = pool_deployment(
                pool, settings, version=version, image=image, replicas=target
            )
            plan.create.append(manifest)
            verb = "starting" if current else "restoring"
            name = manifest["metadata"]["name"]
            message = f"{verb} version {version} ({name}, {target} replicas)"
            plan.events.append(("Normal", "VersionStarted", message))
        else:
            if current:  # same version, same image: other settings change in place
                manifest = pool_deployment(
                    pool, settings, version=version, image=deployment.image, replicas=target
                )
                if (
                    manifest["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
                    != deployment.spec_hash
                ):
                    plan.replace.append(manifest)
            if target != have:
                plan.scale[deployment.name] = target
                reason = "ScaledUp" if target > have else "ScaledDown"
                message = (
                    f"version {version}: {have} -> {target} replicas "
                    f"({depth.running} running, {depth.runnable} runnable)"
                )
                plan.events.append(("Normal", reason, message))
        entry.replicas = target
        entry.ready_replicas = deployment.ready_replicas if deployment else 0
        when = depth.next_wake_at
        if when is not None and target * concurrency <= load:
            plan.wake(when)  # a timer or an expired lease will need a worker then
        status.versions.append(entry)
    drained = [v for v in pool.status.versions if v.state == "Drained"]
    kept = {v.version for v in status.versions}
    status.versions += [v for v in drained if v.version not in kept][-MAX_DRAINED_KEPT:]
    active = [v for v in status.versions if v.state != "Drained"]
    status.replicas = sum(v.replicas for v in active)
    status.ready_replicas = sum(v.ready_replicas for v in active)
    if violation is not None:
        message = f"the pool's workers would break the worker policy: {violation}"
        _pool_conditions(pool, status, now, conflict=message, reason=policy.POLICY_VIOLATION)
        if not _had_reason(pool, policy.POLICY_VIOLATION):
            plan.events.append(("Warning", policy.POLICY_VIOLATION, message))
        return plan
    _pool_conditions(pool, status, now, conflict=conflict)
    if conflict is not None and not _had_reason(pool, IMAGE_CONFLICT):
        plan.events.append(("Warning", IMAGE_CONFLICT, conflict))
    return plan


def _drain(
    plan: PoolPlan,
    pool: WorkerPool,
    entry: PoolVersionStatus,
    deployment: Deployment | None,
    now: datetime,
) -> None:
    """An older version with no unfinished flow: its Deployment goes once that has held for a
    grace (`scaleDownDelaySeconds`, at least `DRAIN_GRACE`), so a flow recorded on it a moment
    ago (a FlowRun scheduled just before the rollout) is seen before anything is removed."""
    since = parse_time(entry.idle_since) or now
    until = since + timedelta(seconds=max(pool.scale_down_delay, DRAIN_GRACE))
    entry.replicas, entry.ready_replicas = 0, 0
    if deployment is not None and now < until:
        entry.idle_since = format_time(since)
        if deployment.replicas:
            plan.scale[deployment.name] = 0
        plan.wake(until)
        plan.status.versions.append(entry)
        return
    if deployment is not None:
        plan.delete.append(deployment.name)
        message = (
            f"version {entry.version} has no unfinished flow; deleting Deployment {deployment.name}"
        )
        plan.events.append(("Normal", "VersionDrained", message))
    entry.state, entry.idle_since = "Drained", None
    plan.status.versions.append(entry)


def _had_reason(pool: WorkerPool, reason: str) -> bool:
    return any(c.reason == reason for c in pool.status.conditions)


def _pool_conditions(
    pool: WorkerPool,
    status: WorkerPoolStatus,
    now: datetime,
    *,
    conflict: str | None,
    reason: str = IMAGE_CONFLICT,
) -> None:
    """`phase` and the `Ready` condition: True while every wanted worker is ready (or none is
    wanted), False while workers start or while the spec is refused (`conflict`, `reason`)."""
    wanted = status.replicas
    if conflict is not None:
        phase = "Ready" if status.ready_replicas >= wanted else "Scaling"
        message = conflict
    elif wanted == 0:
        phase, reason, message = "Idle", "ScaledToZero", "no flow needs a worker"
    elif status.ready_replicas >= wanted:
        phase, reason, message = "Ready", "ReplicasReady", f"{wanted} workers ready"
    else:
        phase, reason = "Scaling", "ReplicasStarting"
        message = f"{status.ready_replicas} of {wanted} workers ready"
    status.phase = phase
    ready = "False" if phase == "Scaling" or conflict is not None else "True"
    old = next((c for c in pool.status.conditions if c.type == "Ready"), None)
    changed = old is None or old.status != ready
    status.conditions = [
        Condition(
            type="Ready",
            status=ready,
            reason=reason,
            message=message,
            last_transition_time=format_time(now)
            if changed or old is None
            else old.last_transition_time,
            observed_generation=pool.generation,
        )
    ]


def pool_deployment(
    pool: WorkerPool, settings: Settings, *, version: str, image: str, replicas: int
) -> dict[str, Any]:
    """The Deployment running `version` of `pool`: `ergon worker` claiming only that version's
    flows, with the same restricted pod security as pod-per-run workers."""
    template = pool.pod_template
    name = deployment_name(pool.name, version)
    selector = {POOL_LABEL: pool.name, POOL_VERSION_LABEL: version_tag(version)}
    labels = {
        **dict(template.get("labels") or {}),
        "app.kubernetes.io/name": "ergon",
        "app.kubernetes.io/component": "worker-pool",
        "app.kubernetes.io/managed-by": "ergon-operator",
        **selector,
    }
    command = ["ergon", "worker"]
    for module in pool.imports:
        command += ["--import", module]
    command += [
        "--version",
        pool.routing(version),
        "--exclusive",
        "--concurrency",
        str(pool.concurrency),
        "--lease-seconds",
        f"{pool.lease_seconds:g}",
    ]
    env: list[dict[str, Any]] = [
        {
            "name": "ERGON_STORE",
            "valueFrom": {
                "secretKeyRef": {"name": settings.store_secret, "key": settings.store_secret_key}
            },
        },
        {"name": "ERGON_WORKERPOOL", "value": pool.name},
        {"name": "ERGON_POOL_VERSION", "value": version},
        *list(template.get("env") or []),
    ]
    container = restricted_container(
        image=image, command=command, env=env, template=template, settings=settings
    )
    pod_spec = restricted_pod_spec(container, template=template, settings=settings)
    pod_spec["restartPolicy"] = "Always"
    grace = template.get("terminationGracePeriodSeconds")
    pod_spec["terminationGracePeriodSeconds"] = int(
        DEFAULT_GRACE_SECONDS if grace is None else grace
    )
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector},
        "strategy": {"type": "RollingUpdate"},
        "template": {
            "metadata": {
                "labels": labels,
                "annotations": {
                    **dict(template.get("annotations") or {}),
                    VERSION_ANNOTATION: version,
                },
            },
            "spec": pod_spec,
        },
    }
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": pool.namespace,
            "labels": {**labels},
            "annotations": {VERSION_ANNOTATION: version, SPEC_HASH_ANNOTATION: digest},
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "WorkerPool",
                    "name": pool.name,
                    "uid": pool.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }
