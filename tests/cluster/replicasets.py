"""The ReplicaSet controller, and what it shares with the Deployment controller.

:func:`sync_replicaset` is kube-controller-manager's ``syncReplicaSet`` for one ReplicaSet: claim
the active pods its selector matches (adopt orphans, release pods that stopped matching), create
pods from the template (``generateName: <rs>-``, an owner reference with ``controller`` and
``blockOwnerDeletion``) or delete the surplus in the order Kubernetes prefers (pending before
running, not ready before ready, lower ``controller.kubernetes.io/pod-deletion-cost``, ready for
less time, more restarts, newer), and report ``replicas``, ``fullyLabeledReplicas``,
``readyReplicas``, ``availableReplicas`` (ready for ``minReadySeconds``), ``observedGeneration``
and a ``ReplicaFailure`` condition when pods cannot be created. A pod is active while it has no
``deletionTimestamp`` and is neither ``Succeeded`` nor ``Failed``: a pod that ended, was
evicted or is shutting down is replaced at once. Deletion goes through the registry like any
client's, so it is graceful (the kubelet sends SIGTERM and waits the grace period).

:class:`Api` is how both controllers read and write: the same registry calls a client's request
would make, as ``kube-controller-manager``, plus Events on the objects.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .errors import ApiError
from .registry import DeleteOptions, Options, Registry, timestamp
from .resources import ResourceType, TypeRegistry
from .selectors import Selector, labels_match, selector_from_label_selector
from .store import Store

JSON = dict[str, Any]

PODS = "pods"
REPLICASETS = "replicasets.apps"
DEPLOYMENTS = "deployments.apps"
MANAGER = "kube-controller-manager"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


@dataclass(frozen=True)
class Api:
    """Reads from the store, writes through the registry (events, validation, GC all apply)."""

    store: Store
    registry: Registry
    types: TypeRegistry
    born: dict[str, int]  # pod uid -> resourceVersion of its creation (finer than timestamps)

    def rtype(self, storage_key: str) -> ResourceType:
        rtype = self.types.by_storage_key(storage_key)
        assert rtype is not None, storage_key
        return rtype

    def get(self, storage_key: str, namespace: str, name: str) -> JSON | None:
        return self.store.get(storage_key, namespace, name)

    def list(self, storage_key: str, namespace: str) -> list[JSON]:
        return self.store.objects(storage_key, namespace)

    def create(self, storage_key: str, namespace: str, obj: JSON) -> JSON:
        return self.registry.create(
            self.rtype(storage_key), namespace, obj, Options(field_manager=MANAGER)
        )

    def update(self, storage_key: str, obj: JSON, change: Callable[[JSON], None]) -> JSON:
        """Apply ``change`` to a copy of the current ``obj`` and write it (if it changed)."""
        meta = obj["metadata"]
        current = self.store.get(storage_key, meta.get("namespace") or "", meta["name"])
        if current is None or current["metadata"]["uid"] != meta["uid"]:
            return obj
        new = copy.deepcopy(current)
        change(new)
        if new == current:
            return current
        return self.registry.update(
            self.rtype(storage_key),
            meta.get("namespace") or "",
            meta["name"],
            new,
            Options(field_manager=MANAGER),
        )

    def write_status(self, storage_key: str, obj: JSON, status: JSON) -> JSON:
        meta = obj["metadata"]
        current = self.store.get(storage_key, meta.get("namespace") or "", meta["name"])
        if current is None or current["metadata"]["uid"] != meta["uid"]:
            return obj
        if (current.get("status") or {}) == status:
            return current
        return self.registry.update(
            self.rtype(storage_key),
            meta.get("namespace") or "",
            meta["name"],
            {**current, "status": status},
            Options(field_manager=MANAGER),
            "status",
        )

    def delete(self, storage_key: str, obj: JSON) -> None:
        meta = obj["metadata"]
        self.registry.delete(
            self.rtype(storage_key),
            meta.get("namespace") or "",
            meta["name"],
            DeleteOptions(precondition_uid=meta["uid"]),
        )

    def record(
        self, obj: JSON, reason: str, message: str, *, component: str, warning: bool = False
    ) -> None:
        """A core/v1 Event about ``obj``, as a controller's event recorder posts it."""
        meta = obj["metadata"]
        stamp = timestamp()
        event = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "kind": obj.get("kind"),
                "apiVersion": obj.get("apiVersion"),
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message,
            "type": "Warning" if warning else "Normal",
            "source": {"component": component},
            "count": 1,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "reportingComponent": component,
            "reportingInstance": "",
        }
        with contextlib.suppress(ApiError):  # e.g. a terminating namespace: best effort
            self.registry.create(
                self.rtype("events"), meta["namespace"], event, Options(field_manager=MANAGER)
            )


# object helpers


def controller_ref(obj: JSON | None) -> JSON | None:
    if obj is None:
        return None
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def owner_reference(owner: JSON) -> JSON:
    meta = owner["metadata"]
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def selector_of(obj: JSON) -> Selector | None:
    """The object's ``spec.selector``; None for an empty one (selects nothing here)."""
    spec = (obj.get("spec") or {}).get("selector")
    if not spec or not (spec.get("matchLabels") or spec.get("matchExpressions")):
        return None
    return selector_from_label_selector(spec)


def selects(selector: Selector | None, obj: JSON) -> bool:
    return selector is not None and labels_match(selector, obj)


def deleting(obj: JSON) -> bool:
    return bool(obj["metadata"].get("deletionTimestamp"))


def replicas_of(obj: JSON) -> int:
    value = (obj.get("spec") or {}).get("replicas")
    return 1 if value is None else int(value)


def status_int(obj: JSON | None, key: str) -> int:
    if obj is None:
        return 0
    return int((obj.get("status") or {}).get(key) or 0)


def parse_time(value: Any) -> float:
    if not value:
        return 0.0
    try:
        stamp = datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return 0.0
    return stamp.timestamp()


def pod_active(pod: JSON) -> bool:
    phase = (pod.get("status") or {}).get("phase")
    return not deleting(pod) and phase not in ("Succeeded", "Failed")


def ready_since(pod: JSON) -> float | None:
    """When the pod became Ready (epoch seconds), or None if it is not Ready."""
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            if condition.get("status") != "True":
                return None
            return parse_time(condition.get("lastTransitionTime"))
    return None


def available(pod: JSON, min_ready: int, now: float) -> bool:
    """``IsPodAvailable``: Ready, for longer than ``minReadySeconds``."""
    since = ready_since(pod)
    return since is not None and (min_ready <= 0 or since + min_ready < now)


def compact(status: JSON, keep: Iterable[str] = ()) -> JSON:
    """Drop zero counts, as Go's ``omitempty`` does (``keep``: fields without it)."""
    kept = set(keep)
    return {k: v for k, v in status.items() if k in kept or v not in (0, None, [], {})}


def claim(
    api: Api,
    storage_key: str,
    controller: JSON,
    candidates: Iterable[JSON],
    selector: Selector | None,
) -> list[JSON]:
    """``ClaimObject`` for each candidate: the ones ``controller`` owns after adopting orphans
    its selector matches and releasing owned ones it no longer matches."""
    uid = controller["metadata"]["uid"]
    owned = []
    for obj in candidates:
        ref = controller_ref(obj)
        if ref is not None:
            if ref.get("uid") != uid:
                continue
            if selects(selector, obj):
                owned.append(obj)
            elif not deleting(controller):
                api.update(storage_key, obj, lambda o: _drop_owner(o, uid))
            continue
        if deleting(controller) or deleting(obj) or not selects(selector, obj):
            continue
        owned.append(api.update(storage_key, obj, lambda o: _add_owner(o, controller)))
    return owned


def _add_owner(obj: JSON, owner: JSON) -> None:
    obj["metadata"].setdefault("ownerReferences", []).append(owner_reference(owner))


def _drop_owner(obj: JSON, uid: str) -> None:
    refs = [r for r in obj["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
    if refs:
        obj["metadata"]["ownerReferences"] = refs
    else:
        obj["metadata"].pop("ownerReferences", None)


# the ReplicaSet controller


class RetryLater(Exception):
    """The sync could not finish (pods could not be created); retry with back-off."""


def sync_replicaset(api: Api, namespace: str, name: str) -> float | None:
    """Reconcile one ReplicaSet; returns seconds after which to look again (minReadySeconds).

    Raises :class:`RetryLater` when pods could not be created or deleted (after reporting it),
    as the real controller returns the error to its rate-limited queue."""
    rs = api.get(REPLICASETS, namespace, name)
    if rs is None:
        return None
    selector = selector_of(rs)
    pods = _owned_active_pods(api, rs, selector)
    error: tuple[str, str] | None = None
    if not deleting(rs):
        error = _manage_replicas(api, rs, pods)
        pods = _owned_active_pods(api, rs, selector)
    delay = _update_status(api, rs, pods, error)
    if error is not None:
        raise RetryLater(error[1])
    return delay


def _owned_active_pods(api: Api, rs: JSON, selector: Selector | None) -> list[JSON]:
    active = [p for p in api.list(PODS, rs["metadata"]["namespace"]) if pod_active(p)]
    return claim(api, PODS, rs, active, selector)


def _manage_replicas(api: Api, rs: JSON, pods: list[JSON]) -> tuple[str, str] | None:
    """Create or delete pods; (reason, message) of the first failure, if any."""
    diff = len(pods) - replicas_of(rs)
    if diff < 0:
        for _ in range(-diff):
            try:
                pod = api.create(PODS, rs["metadata"]["namespace"], pod_from_template(rs))
            except ApiError as exc:
                api.record(
                    rs,
                    "FailedCreate",
                    f"Error creating: {exc.message}",
                    component="replicaset-controller",
                    warning=True,
                )
                return "FailedCreate", exc.message
            api.record(
                rs,
                "SuccessfulCreate",
                f"Created pod: {pod['metadata']['name']}",
                component="replicaset-controller",
            )
    elif diff > 0:
        for pod in sorted(pods, key=lambda p: deletion_order(api, p))[:diff]:
            try:
                api.delete(PODS, pod)
            except ApiError as exc:
                if exc.code == 404:
                    continue
                api.record(
                    rs,
                    "FailedDelete",
                    f"Error deleting: {exc.message}",
                    component="replicaset-controller",
                    warning=True,
                )
                return "FailedDelete", exc.message
            api.record(
                rs,
                "SuccessfulDelete",
                f"Deleted pod: {pod['metadata']['name']}",
                component="replicaset-controller",
            )
    return None


def pod_from_template(rs: JSON) -> JSON:
    """``GetPodFromTemplate``: labels, annotations, finalizers and spec of the template."""
    template = (rs.get("spec") or {}).get("template") or {}
    template_meta = template.get("metadata") or {}
    meta: JSON = {
        "generateName": f"{rs['metadata']['name']}-",
        "namespace": rs["metadata"]["namespace"],
        "ownerReferences": [owner_reference(rs)],
    }
    for key in ("labels", "annotations", "finalizers"):
        if template_meta.get(key):
            meta[key] = copy.deepcopy(template_meta[key])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": copy.deepcopy(template.get("spec") or {}),
    }


def deletion_order(api: Api, pod: JSON) -> tuple[Any, ...]:
    """Sort key of ``ActivePodsWithRanks``: the pods to delete first come first (without the
    LogarithmicScaleDown buckets, which make ties of pods of similar age random)."""
    status = pod.get("status") or {}
    since = ready_since(pod)
    try:
        cost = int((pod["metadata"].get("annotations") or {}).get(DELETION_COST, 0))
    except ValueError:
        cost = 0
    restarts = max(
        (int(c.get("restartCount") or 0) for c in status.get("containerStatuses") or []),
        default=0,
    )
    return (
        bool((pod.get("spec") or {}).get("nodeName")),
        _PHASE_RANK.get(str(status.get("phase")), 1),
        since is not None,
        cost,
        -since if since is not None else 0.0,  # ready for less time first
        -restarts,
        -parse_time(pod["metadata"].get("creationTimestamp")),  # newer first
        -api.born.get(pod["metadata"]["uid"], 0),
    )


def _update_status(
    api: Api, rs: JSON, pods: list[JSON], error: tuple[str, str] | None
) -> float | None:
    current = api.get(REPLICASETS, rs["metadata"]["namespace"], rs["metadata"]["name"]) or rs
    spec = current.get("spec") or {}
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    min_ready = int(spec.get("minReadySeconds") or 0)
    now = time.time()
    fully_labeled = ready = available_count = 0
    wait: float | None = None
    for pod in pods:
        labels = pod["metadata"].get("labels") or {}
        if all(labels.get(k) == v for k, v in template_labels.items()):
            fully_labeled += 1
        since = ready_since(pod)
        if since is None:
            continue
        ready += 1
        if available(pod, min_ready, now):
            available_count += 1
        else:
            remaining = since + min_ready - now
            wait = remaining if wait is None else min(wait, remaining)
    old = current.get("status") or {}
    conditions = [c for c in old.get("conditions") or [] if c.get("type") != "ReplicaFailure"]
    failure = next(
        (c for c in old.get("conditions") or [] if c.get("type") == "ReplicaFailure"), None
    )
    if error is not None:
        if failure is None:
            stamp = timestamp()
            failure = {
                "type": "ReplicaFailure",
                "status": "True",
                "lastTransitionTime": stamp,
                "reason": error[0],
                "message": error[1],
            }
        conditions.append(failure)
    status = compact(
        {
            "replicas": len(pods),
            "fullyLabeledReplicas": fully_labeled,
            "readyReplicas": ready,
            "availableReplicas": available_count,
            "observedGeneration": current["metadata"].get("generation"),
            "conditions": conditions,
        },
        keep=("replicas",),
    )
    api.write_status(REPLICASETS, current, status)
    if wait is None:
        return None
    return max(wait, 0.0) + 0.05
