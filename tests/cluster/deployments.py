"""The Deployment controller: kube-controller-manager's ``syncDeployment``, ported closely.

For each Deployment it claims the ReplicaSets its selector matches (adopting orphans, releasing
ones that stopped matching), finds the "new" ReplicaSet (the oldest whose template equals the
Deployment's, ignoring ``pod-template-hash``) or creates it as ``<deployment>-<hash>`` with the
hash label added to its template and selector, and then:

- on a scaling event (an active ReplicaSet's ``deployment.kubernetes.io/desired-replicas``
  differs from ``spec.replicas``) or while paused: scales the only active ReplicaSet, or all of
  them proportionally during a rolling update;
- ``RollingUpdate``: scales the new ReplicaSet up within ``maxSurge`` and the old ones down
  within ``maxUnavailable`` as new pods become available (defaults 25%/25%, rounded as
  Kubernetes rounds them; both 0 means ``maxUnavailable`` 1);
- ``Recreate``: scales the old ReplicaSets to 0, waits until none of their pods runs (terminating
  ones included), then scales the new one up;
- deletes the oldest zero-sized ReplicaSets beyond ``revisionHistoryLimit`` once complete;
- keeps ``deployment.kubernetes.io/revision`` (and ``revision-history`` on a rollback to an old
  template), ``desired-replicas`` and ``max-replicas`` annotations as Kubernetes does, and copies
  the Deployment's annotations to the new ReplicaSet;
- reports ``observedGeneration``, ``replicas``, ``updatedReplicas``, ``readyReplicas``,
  ``availableReplicas``, ``unavailableReplicas``, ``collisionCount`` and the ``Available``
  (MinimumReplicasAvailable / MinimumReplicasUnavailable), ``Progressing`` (NewReplicaSetCreated,
  FoundNewReplicaSet, ReplicaSetUpdated, NewReplicaSetAvailable, ProgressDeadlineExceeded,
  DeploymentPaused, DeploymentResumed) and ``ReplicaFailure`` conditions, which is what
  ``kubectl rollout status`` reads.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Sequence
from typing import Any

from .errors import ApiError
from .registry import timestamp
from .replicasets import (
    DEPLOYMENTS,
    PODS,
    REPLICASETS,
    Api,
    claim,
    compact,
    controller_ref,
    deleting,
    owner_reference,
    parse_time,
    replicas_of,
    selector_of,
    status_int,
)

JSON = dict[str, Any]

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
_NOT_COPIED = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        REVISION_HISTORY,
        DESIRED_REPLICAS,
        MAX_REPLICAS,
        "deprecated.deployment.rollback.to",
    }
)
_REVISION_HISTORY_CHARS = 2000
_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_COMPONENT = "deployment-controller"
_MAX_INT32 = 2**31 - 1


# pure helpers


def fnv32a(data: bytes) -> int:
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def normalized(value: Any) -> Any:
    """Nil, empty maps and empty lists dropped: Go's semantic equality treats them alike."""
    if isinstance(value, dict):
        out = {k: normalized(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [normalized(v) for v in value]
    return value


def template_hash(template: JSON, collision_count: int | None) -> str:
    """``ComputeHash``: FNV-32a of the template (+ collision count), safe-encoded digits."""
    data = json.dumps(normalized(template), sort_keys=True, separators=(",", ":")).encode()
    if collision_count is not None:
        data += (collision_count & 0xFFFFFFFF).to_bytes(4, "little") + b"\0\0\0\0"
    digits = str(fnv32a(data))
    return "".join(_SAFE_ALPHABET[ord(c) % len(_SAFE_ALPHABET)] for c in digits)


def equal_ignore_hash(a: JSON | None, b: JSON | None) -> bool:
    def strip(template: JSON | None) -> Any:
        template = copy.deepcopy(template or {})
        labels = (template.get("metadata") or {}).get("labels")
        if isinstance(labels, dict):
            labels.pop(HASH_LABEL, None)
        return normalized(template)

    return bool(strip(a) == strip(b))


def scaled_value(value: Any, total: int, round_up: bool) -> int:
    """``GetScaledValueFromIntOrPercent``."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    text = str(value)
    if not text.endswith("%"):
        return int(text)
    exact = int(text[:-1]) * total / 100
    return math.ceil(exact) if round_up else math.floor(exact)


def fenceposts(deployment: JSON) -> tuple[int, int]:
    """``ResolveFenceposts``: (maxSurge, maxUnavailable) for a RollingUpdate Deployment."""
    rolling = ((deployment.get("spec") or {}).get("strategy") or {}).get("rollingUpdate") or {}
    replicas = replicas_of(deployment)
    surge = scaled_value(rolling.get("maxSurge", "25%"), replicas, True)
    unavailable = scaled_value(rolling.get("maxUnavailable", "25%"), replicas, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def is_rolling(deployment: JSON) -> bool:
    strategy = (deployment.get("spec") or {}).get("strategy") or {}
    return bool(strategy.get("type", "RollingUpdate") == "RollingUpdate")


def max_surge(deployment: JSON) -> int:
    return fenceposts(deployment)[0] if is_rolling(deployment) else 0


def max_unavailable(deployment: JSON) -> int:
    replicas = replicas_of(deployment)
    if not is_rolling(deployment) or replicas == 0:
        return 0
    return min(fenceposts(deployment)[1], replicas)


def revision_of(obj: JSON | None) -> int:
    if obj is None:
        return 0
    try:
        return int((obj["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def by_creation(rss: list[JSON]) -> list[JSON]:
    return sorted(
        rss, key=lambda rs: (parse_time(rs["metadata"].get("creationTimestamp")), rs_name(rs))
    )


def rs_name(rs: JSON) -> str:
    return str(rs["metadata"]["name"])


def active(rss: Sequence[JSON | None]) -> list[JSON]:
    return [rs for rs in rss if rs is not None and replicas_of(rs) > 0]


def total_replicas(rss: Sequence[JSON | None]) -> int:
    return sum(replicas_of(rs) for rs in rss if rs is not None)


def total_status(rss: Sequence[JSON | None], key: str) -> int:
    return sum(status_int(rs, key) for rs in rss)


def condition(status: JSON, kind: str) -> JSON | None:
    for entry in status.get("conditions") or []:
        if entry.get("type") == kind:
            return dict(entry)
    return None


def set_condition(status: JSON, kind: str, value: str, reason: str, message: str) -> None:
    """``SetDeploymentCondition``: unchanged if status and reason are; keeps the transition
    time when only the reason changes; a changed condition moves to the end of the list."""
    current = condition(status, kind)
    if current is not None and current.get("status") == value and current.get("reason") == reason:
        return
    stamp = timestamp()
    new: JSON = {
        "type": kind,
        "status": value,
        "lastUpdateTime": stamp,
        "lastTransitionTime": stamp,
        "reason": reason,
        "message": message,
    }
    if current is not None and current.get("status") == value:
        new["lastTransitionTime"] = current.get("lastTransitionTime")
    remove_condition(status, kind)
    status.setdefault("conditions", []).append(new)


def remove_condition(status: JSON, kind: str) -> None:
    kept = [c for c in status.get("conditions") or [] if c.get("type") != kind]
    if kept:
        status["conditions"] = kept
    else:
        status.pop("conditions", None)


class Requeue(Exception):
    """Look at this Deployment again soon (a name collision was counted)."""


class Rollout:
    """One sync of one Deployment. ``self.status`` plays the part of ``d.Status`` in Go: the
    conditions written so far this sync, with the counts of the last status write."""

    def __init__(self, api: Api, deployment: JSON) -> None:
        self.api = api
        self.d = deployment
        self.name = deployment["metadata"]["name"]
        self.namespace = deployment["metadata"]["namespace"]
        self.replicas = replicas_of(deployment)
        self.spec = deployment.get("spec") or {}
        self.status: JSON = copy.deepcopy(deployment.get("status") or {})
        self.requeue: float | None = None

    # entry point

    def sync(self) -> float | None:
        rss = self.claim_replicasets()
        if deleting(self.d):
            new, old = self.replica_sets(rss, create=False)
            self.sync_status(old, new)
            return None
        self.check_paused()
        if self.spec.get("paused") or self.is_scaling_event(rss):
            self.scale_sync(rss)
        elif (self.spec.get("strategy") or {}).get("type") == "Recreate":
            self.rollout_recreate(rss)
        else:
            self.rollout_rolling(rss)
        return self.requeue

    # ReplicaSets

    def claim_replicasets(self) -> list[JSON]:
        candidates = self.api.list(REPLICASETS, self.namespace)
        return claim(self.api, REPLICASETS, self.d, candidates, selector_of(self.d))

    def replica_sets(self, rss: list[JSON], *, create: bool) -> tuple[JSON | None, list[JSON]]:
        """``getAllReplicaSetsAndSyncRevision``: (the new RS, the old ones)."""
        ordered = by_creation(rss)
        template = self.spec.get("template")
        existing = next(
            (rs for rs in ordered if equal_ignore_hash(rs["spec"]["template"], template)), None
        )
        old = [rs for rs in ordered if rs is not existing]
        return self.new_replicaset(existing, old, create), old

    def new_replicaset(self, existing: JSON | None, old: list[JSON], create: bool) -> JSON | None:
        new_revision = max((revision_of(rs) for rs in old), default=0) + 1
        if existing is not None:
            min_ready = self.spec.get("minReadySeconds")

            def annotate(rs: JSON) -> None:
                self.set_new_annotations(rs, new_revision, exists=True)
                if rs["spec"].get("minReadySeconds") != min_ready:
                    if min_ready is None:
                        rs["spec"].pop("minReadySeconds", None)
                    else:
                        rs["spec"]["minReadySeconds"] = min_ready

            existing = self.api.update(REPLICASETS, existing, annotate)
            self.set_deployment_revision(existing)
            if self.has_deadline() and condition(self.status, "Progressing") is None:
                set_condition(
                    self.status,
                    "Progressing",
                    "True",
                    "FoundNewReplicaSet",
                    f'Found new replica set "{rs_name(existing)}"',
                )
                self.write_status(self.status)
            return existing
        if not create:
            return None
        collisions = self.status.get("collisionCount")
        template = copy.deepcopy(self.spec.get("template") or {})
        pod_hash = template_hash(template, collisions)
        template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = pod_hash
        selector = copy.deepcopy(self.spec.get("selector") or {})
        selector.setdefault("matchLabels", {})[HASH_LABEL] = pod_hash
        rs_spec: JSON = {"replicas": 0, "selector": selector, "template": template}
        if self.spec.get("minReadySeconds") is not None:
            rs_spec["minReadySeconds"] = self.spec["minReadySeconds"]
        rs: JSON = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{self.name}-{pod_hash}",
                "namespace": self.namespace,
                "ownerReferences": [owner_reference(self.d)],
                "labels": dict(template["metadata"]["labels"]),
            },
            "spec": rs_spec,
        }
        rs_spec["replicas"] = self.new_rs_replicas([*old, rs], rs)
        self.set_new_annotations(rs, new_revision, exists=False)
        try:
            created = self.api.create(REPLICASETS, self.namespace, rs)
        except ApiError as exc:
            if exc.code != 409:
                raise
            found = self.api.get(REPLICASETS, self.namespace, rs["metadata"]["name"])
            ref = controller_ref(found)
            if (
                found is not None
                and ref is not None
                and ref.get("uid") == self.d["metadata"]["uid"]
                and equal_ignore_hash(found["spec"]["template"], self.spec.get("template"))
            ):
                return found
            self.status["collisionCount"] = int(collisions or 0) + 1
            self.write_status(self.status)
            raise Requeue from exc
        if rs_spec["replicas"] > 0:
            self.record_scaling(created, "up", 0, rs_spec["replicas"])
        self.set_deployment_revision(created)
        set_condition(
            self.status,
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            f'Created new replica set "{rs_name(created)}"',
        )
        self.write_status(self.status)
        return created

    def set_new_annotations(self, rs: JSON, new_revision: int, *, exists: bool) -> None:
        """``SetNewReplicaSetAnnotations``."""
        annotations = rs["metadata"].setdefault("annotations", {})
        for key, value in (self.d["metadata"].get("annotations") or {}).items():
            if key not in _NOT_COPIED:
                annotations[key] = value
        had = REVISION in annotations
        old_revision = revision_of(rs)
        if old_revision < new_revision:
            annotations[REVISION] = str(new_revision)
            if had:
                history = [h for h in annotations.get(REVISION_HISTORY, "").split(",") if h]
                history.append(str(old_revision))
                while history and len(",".join(history)) > _REVISION_HISTORY_CHARS:
                    history.pop(0)
                annotations[REVISION_HISTORY] = ",".join(history)
        if not exists:
            self.set_replicas_annotations(rs)

    def set_replicas_annotations(self, rs: JSON) -> None:
        annotations = rs["metadata"].setdefault("annotations", {})
        annotations[DESIRED_REPLICAS] = str(self.replicas)
        annotations[MAX_REPLICAS] = str(self.replicas + max_surge(self.d))

    def set_deployment_revision(self, rs: JSON | None) -> None:
        revision = (rs["metadata"].get("annotations") or {}).get(REVISION) if rs else None
        if revision is None:
            return
        current = (self.d["metadata"].get("annotations") or {}).get(REVISION)
        if current != revision:

            def annotate(d: JSON) -> None:
                d["metadata"].setdefault("annotations", {})[REVISION] = revision

            self.d = self.api.update(DEPLOYMENTS, self.d, annotate)

    def new_rs_replicas(self, all_rss: Sequence[JSON | None], new: JSON) -> int:
        """``NewRSNewReplicas``."""
        if not is_rolling(self.d):
            return self.replicas
        current = total_replicas(all_rss)
        max_total = self.replicas + max_surge(self.d)
        if current >= max_total:
            return replicas_of(new)
        scale_up = min(max_total - current, self.replicas - replicas_of(new))
        return replicas_of(new) + scale_up

    def scale(self, rs: JSON, size: int, operation: str | None = None) -> JSON:
        """``scaleReplicaSet``: the size and the desired/max-replicas annotations."""
        before = replicas_of(rs)
        if operation is None:
            operation = "up" if before < size else "down"

        def resize(obj: JSON) -> None:
            obj["spec"]["replicas"] = size
            self.set_replicas_annotations(obj)

        updated = self.api.update(REPLICASETS, rs, resize)
        if before != size:
            self.record_scaling(updated, operation, before, size)
        return updated

    def scale_and_record(self, rs: JSON, size: int) -> tuple[bool, JSON]:
        if replicas_of(rs) == size:
            return False, rs
        return True, self.scale(rs, size)

    def record_scaling(self, rs: JSON, operation: str, before: int, after: int) -> None:
        self.api.record(
            self.d,
            "ScalingReplicaSet",
            f"Scaled {operation} replica set {rs_name(rs)} from {before} to {after}",
            component=_COMPONENT,
        )

    # scaling (spec.replicas changed, or paused)

    def is_scaling_event(self, rss: list[JSON]) -> bool:
        new, old = self.replica_sets(rss, create=False)
        for rs in active([*old, new]):
            desired = (rs["metadata"].get("annotations") or {}).get(DESIRED_REPLICAS)
            if desired is None:
                continue
            try:
                if int(desired) != self.replicas:
                    return True
            except ValueError:
                continue
        return False

    def scale_sync(self, rss: list[JSON]) -> None:
        """``sync``: scale, clean up when paused, report status."""
        new, old = self.replica_sets(rss, create=False)
        new, old = self.scale_all(new, old)
        if self.spec.get("paused"):
            old = self.cleanup(old)
        self.sync_status(old, new)

    def scale_all(self, new: JSON | None, old: list[JSON]) -> tuple[JSON | None, list[JSON]]:
        """``scale``: one active RS takes all; a saturated new RS empties the old ones; during
        a rolling update the difference is spread in proportion to the RSs' sizes."""
        latest = self.active_or_latest(new, old)
        if latest is not None:
            if replicas_of(latest) != self.replicas:
                scaled = self.scale(latest, self.replicas)
                return self.replace(new, old, scaled)
            return new, old
        if new is not None and self.saturated(new):
            for rs in active(old):
                new, old = self.replace(new, old, self.scale(rs, 0))
            return new, old
        if not is_rolling(self.d):
            return new, old
        everyone = active([*old, new])
        allowed = self.replicas + max_surge(self.d) if self.replicas > 0 else 0
        to_add = allowed - total_replicas(everyone)
        by_age = sorted(
            everyone, key=lambda rs: parse_time(rs["metadata"].get("creationTimestamp"))
        )
        if to_add > 0:  # bigger first, newer first among equals (older first scaling down)
            by_age.reverse()
        everyone = sorted(by_age, key=replicas_of, reverse=True)
        added = 0
        sizes: dict[str, int] = {}
        for rs in everyone:
            if to_add != 0:
                share = self.proportion(rs, to_add, added)
                sizes[rs_name(rs)] = replicas_of(rs) + share
                added += share
            else:
                sizes[rs_name(rs)] = replicas_of(rs)
        operation = "up" if to_add > 0 else "down"
        for index, rs in enumerate(everyone):
            size = sizes[rs_name(rs)]
            if index == 0 and to_add != 0:
                size = max(size + to_add - added, 0)
            new, old = self.replace(new, old, self.scale(rs, size, operation))
        return new, old

    def proportion(self, rs: JSON, to_add: int, added: int) -> int:
        """``GetProportion``."""
        if replicas_of(rs) == 0 or to_add == 0 or to_add == added:
            return 0
        if self.replicas == 0:
            fraction = -replicas_of(rs)
        else:
            maximum = self.replicas + max_surge(self.d)
            try:
                before = int((rs["metadata"].get("annotations") or {}).get(MAX_REPLICAS, "0"))
            except ValueError:
                before = 0
            if before == 0:
                before = int(self.status.get("replicas") or 0)
            size = replicas_of(rs) * maximum / before if before else replicas_of(rs)
            fraction = _round(size) - replicas_of(rs)
        allowed = to_add - added
        return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)

    def active_or_latest(self, new: JSON | None, old: list[JSON]) -> JSON | None:
        if new is None and not old:
            return None
        newest_first = list(reversed(by_creation(old)))
        everyone = active([*newest_first, new])
        if not everyone:
            return new if new is not None else newest_first[0]
        return everyone[0] if len(everyone) == 1 else None

    def saturated(self, rs: JSON) -> bool:
        desired = (rs["metadata"].get("annotations") or {}).get(DESIRED_REPLICAS)
        return (
            desired == str(self.replicas)
            and replicas_of(rs) == self.replicas
            and status_int(rs, "availableReplicas") == self.replicas
        )

    @staticmethod
    def replace(new: JSON | None, old: list[JSON], updated: JSON) -> tuple[JSON | None, list[JSON]]:
        uid = updated["metadata"]["uid"]
        if new is not None and new["metadata"]["uid"] == uid:
            return updated, old
        return new, [updated if rs["metadata"]["uid"] == uid else rs for rs in old]

    # RollingUpdate

    def rollout_rolling(self, rss: list[JSON]) -> None:
        new, old = self.replica_sets(rss, create=True)
        assert new is not None
        scaled_up, new = self.reconcile_new(old, new)
        if scaled_up:
            self.sync_rollout_status(old, new)
            return
        scaled_down, old = self.reconcile_old(old, new)
        if scaled_down:
            self.sync_rollout_status(old, new)
            return
        if self.complete(self.status):
            old = self.cleanup(old)
        self.sync_rollout_status(old, new)

    def reconcile_new(self, old: list[JSON], new: JSON) -> tuple[bool, JSON]:
        if replicas_of(new) == self.replicas:
            return False, new
        if replicas_of(new) > self.replicas:
            return self.scale_and_record(new, self.replicas)
        return self.scale_and_record(new, self.new_rs_replicas([*old, new], new))

    def reconcile_old(self, old: list[JSON], new: JSON) -> tuple[bool, list[JSON]]:
        if total_replicas(old) == 0:
            return False, old
        all_pods = total_replicas([*old, new])
        min_available = self.replicas - max_unavailable(self.d)
        new_unavailable = replicas_of(new) - status_int(new, "availableReplicas")
        max_scaled_down = all_pods - min_available - new_unavailable
        if max_scaled_down <= 0:
            return False, old
        old, cleaned = self.cleanup_unhealthy(old, max_scaled_down)
        old, scaled = self.scale_down_old(old, new)
        return cleaned + scaled > 0, old

    def cleanup_unhealthy(self, old: list[JSON], limit: int) -> tuple[list[JSON], int]:
        done = 0
        out = []
        for rs in by_creation(old):
            unhealthy = replicas_of(rs) - status_int(rs, "availableReplicas")
            if done >= limit or replicas_of(rs) == 0 or unhealthy <= 0:
                out.append(rs)
                continue
            count = min(limit - done, unhealthy)
            _, rs = self.scale_and_record(rs, replicas_of(rs) - count)
            done += count
            out.append(rs)
        return out, done

    def scale_down_old(self, old: list[JSON], new: JSON) -> tuple[list[JSON], int]:
        min_available = self.replicas - max_unavailable(self.d)
        available = total_status([*old, new], "availableReplicas")
        if available <= min_available:
            return old, 0
        budget = available - min_available
        done = 0
        out = []
        for rs in by_creation(old):
            if done >= budget or replicas_of(rs) == 0:
                out.append(rs)
                continue
            count = min(replicas_of(rs), budget - done)
            _, rs = self.scale_and_record(rs, replicas_of(rs) - count)
            done += count
            out.append(rs)
        return out, done

    # Recreate

    def rollout_recreate(self, rss: list[JSON]) -> None:
        new, old = self.replica_sets(rss, create=False)
        scaled = False
        for rs in active(old):
            changed, updated = self.scale_and_record(rs, 0)
            scaled = scaled or changed
            new, old = self.replace(new, old, updated)
        if scaled or self.old_pods_running(new, old):
            self.sync_rollout_status(old, new)
            return
        if new is None:
            new, old = self.replica_sets(rss, create=True)
        assert new is not None
        _, new = self.scale_and_record(new, self.replicas)
        if self.complete(self.status):
            old = self.cleanup(old)
        self.sync_rollout_status(old, new)

    def old_pods_running(self, new: JSON | None, old: list[JSON]) -> bool:
        if total_status(old, "replicas") > 0:
            return True
        old_uids = {rs["metadata"]["uid"] for rs in old}
        if new is not None:
            old_uids.discard(new["metadata"]["uid"])
        for pod in self.api.list(PODS, self.namespace):
            ref = controller_ref(pod)
            if ref is None or ref.get("uid") not in old_uids:
                continue
            if (pod.get("status") or {}).get("phase") not in ("Failed", "Succeeded"):
                return True
        return False

    # history

    def cleanup(self, old: list[JSON]) -> list[JSON]:
        """``cleanupDeployment``: delete the oldest empty RSs beyond revisionHistoryLimit."""
        limit = self.spec.get("revisionHistoryLimit")
        if limit is None:
            return old
        alive = [rs for rs in old if not deleting(rs)]
        excess = len(alive) - int(limit)
        if excess <= 0:
            return old
        gone: set[str] = set()
        for rs in sorted(alive, key=lambda r: (revision_of(r), rs_name(r)))[:excess]:
            meta, status = rs["metadata"], rs.get("status") or {}
            if (
                status_int(rs, "replicas") != 0
                or replicas_of(rs) != 0
                or int(meta.get("generation") or 0) > int(status.get("observedGeneration") or 0)
            ):
                continue
            try:
                self.api.delete(REPLICASETS, rs)
            except ApiError:
                continue
            gone.add(meta["uid"])
        return [rs for rs in old if rs["metadata"]["uid"] not in gone]

    # status

    def has_deadline(self) -> bool:
        deadline = self.spec.get("progressDeadlineSeconds")
        return deadline is not None and int(deadline) != _MAX_INT32

    def complete(self, status: JSON) -> bool:
        """``DeploymentComplete``."""
        return (
            int(status.get("updatedReplicas") or 0) == self.replicas
            and int(status.get("replicas") or 0) == self.replicas
            and int(status.get("availableReplicas") or 0) == self.replicas
            and int(status.get("observedGeneration") or 0)
            >= int(self.d["metadata"].get("generation") or 0)
        )

    def calculate_status(self, old: list[JSON], new: JSON | None) -> JSON:
        everyone: list[JSON | None] = [*old, new]
        available = total_status(everyone, "availableReplicas")
        status: JSON = {
            "observedGeneration": self.d["metadata"].get("generation"),
            "replicas": total_status(everyone, "replicas"),
            "updatedReplicas": status_int(new, "replicas"),
            "readyReplicas": total_status(everyone, "readyReplicas"),
            "availableReplicas": available,
            "unavailableReplicas": max(total_replicas(everyone) - available, 0),
            "collisionCount": self.status.get("collisionCount"),
            "conditions": copy.deepcopy(self.status.get("conditions") or []),
        }
        if available >= self.replicas - max_unavailable(self.d):
            set_condition(
                status,
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            )
        else:
            set_condition(
                status,
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        return status

    def sync_status(self, old: list[JSON], new: JSON | None) -> None:
        """``syncDeploymentStatus``: the counts and Available, nothing about progress."""
        self.write_status(self.calculate_status(old, new))

    def sync_rollout_status(self, old: list[JSON], new: JSON | None) -> None:
        """``syncRolloutStatus``: counts, Available, Progressing and ReplicaFailure."""
        status = self.calculate_status(old, new)
        progressing = condition(self.status, "Progressing")
        finished = (
            int(status.get("replicas") or 0) == int(status.get("updatedReplicas") or 0)
            and progressing is not None
            and progressing.get("reason") == "NewReplicaSetAvailable"
        )
        if not self.has_deadline():
            remove_condition(status, "Progressing")
        elif not finished:
            subject = (
                f'ReplicaSet "{rs_name(new)}"' if new is not None else f'Deployment "{self.name}"'
            )
            if self.complete(status):
                set_condition(
                    status,
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    f"{subject} has successfully progressed.",
                )
            elif self.progressing(status):
                remove_condition(status, "Progressing")
                set_condition(
                    status, "Progressing", "True", "ReplicaSetUpdated", f"{subject} is progressing."
                )
                if progressing is not None and progressing.get("status") == "True":
                    status["conditions"][-1]["lastTransitionTime"] = progressing.get(
                        "lastTransitionTime"
                    )
            elif self.timed_out(status):
                set_condition(
                    status,
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    f"{subject} has timed out progressing.",
                )
        failures = [
            c
            for rs in [*old, new]
            if rs is not None
            for c in (rs.get("status") or {}).get("conditions") or []
            if c.get("type") == "ReplicaFailure" and c.get("status") == "True"
        ]
        if failures:
            set_condition(
                status,
                "ReplicaFailure",
                "True",
                str(failures[0].get("reason", "")),
                str(failures[0].get("message", "")),
            )
        else:
            remove_condition(status, "ReplicaFailure")
        self.write_status(status)
        self.requeue_if_stuck(status)

    def progressing(self, status: JSON) -> bool:
        """``DeploymentProgressing``: any sign of progress since the last status."""
        old = self.status

        def get(s: JSON, key: str) -> int:
            return int(s.get(key) or 0)

        old_old = get(old, "replicas") - get(old, "updatedReplicas")
        new_old = get(status, "replicas") - get(status, "updatedReplicas")
        return (
            get(status, "updatedReplicas") > get(old, "updatedReplicas")
            or new_old < old_old
            or get(status, "readyReplicas") > get(old, "readyReplicas")
            or get(status, "availableReplicas") > get(old, "availableReplicas")
        )

    def timed_out(self, status: JSON) -> bool:
        if not self.has_deadline():
            return False
        current = condition(status, "Progressing")
        if current is None or current.get("reason") == "NewReplicaSetAvailable":
            return False
        if current.get("reason") == "ProgressDeadlineExceeded":
            return True
        deadline = int(self.spec.get("progressDeadlineSeconds") or 0)
        return parse_time(current.get("lastUpdateTime")) + deadline < time.time()

    def requeue_if_stuck(self, status: JSON) -> None:
        current = condition(status, "Progressing")
        if not self.has_deadline() or current is None:
            return
        if self.complete(status) or current.get("reason") == "ProgressDeadlineExceeded":
            return
        deadline = int(self.spec.get("progressDeadlineSeconds") or 0)
        after = parse_time(current.get("lastUpdateTime")) + deadline - time.time()
        self.requeue = max(after, 0.0) + 1.0

    def check_paused(self) -> None:
        """``checkPausedConditions``."""
        if not self.has_deadline():
            return
        current = condition(self.status, "Progressing")
        if current is not None and current.get("reason") == "ProgressDeadlineExceeded":
            return
        paused_shown = current is not None and current.get("reason") == "DeploymentPaused"
        if self.spec.get("paused") and not paused_shown:
            set_condition(
                self.status, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused"
            )
        elif not self.spec.get("paused") and paused_shown:
            set_condition(
                self.status, "Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed"
            )
        else:
            return
        self.write_status(self.status)

    def write_status(self, status: JSON) -> None:
        shown = compact(status)
        self.d = self.api.write_status(DEPLOYMENTS, self.d, shown)
        self.status = copy.deepcopy(self.d.get("status") or {})


def _round(value: float) -> int:
    """``integer.RoundToInt32``: half away from zero."""
    return math.floor(value + 0.5) if value >= 0 else -math.floor(-value + 0.5)


def sync_deployment(api: Api, namespace: str, name: str) -> float | None:
    """Reconcile one Deployment; returns seconds after which to look again, if needed."""
    deployment = api.get(DEPLOYMENTS, namespace, name)
    if deployment is None:
        return None
    try:
        return Rollout(api, deployment).sync()
    except Requeue:
        return 0.2
