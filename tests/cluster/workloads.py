"""The workload controllers: Deployments make ReplicaSets, ReplicaSets make Pods.

On unless ``--no-deployment-controller`` (:attr:`ClusterConfig.deployment_controller`). Like the
garbage collector, it is fed by the store's commit listener, not by polling: each Deployment,
ReplicaSet or Pod event queues the keys it can affect (the object itself, its controller from
``ownerReferences``, or, for an orphan, the controllers in its namespace whose selector matches
it, which may adopt it; a deleted pod also wakes its Deployment, which a ``Recreate`` rollout
waits on). The queue coalesces repeated keys and one worker task drains it, so the two
controllers never race each other, and each sync runs to completion without awaiting, so it
sees one consistent state. Retries (after an error such as a pod that cannot be created, with a
back-off doubling from 0.1 s to 5 s) and timed looks (``minReadySeconds``,
``progressDeadlineSeconds``) are scheduled on the event loop for that key only.

The logic is in ``replicasets.py`` and ``deployments.py``.
"""

from __future__ import annotations

import asyncio
import logging

from .deployments import sync_deployment
from .errors import ApiError
from .registry import Registry
from .replicasets import (
    DEPLOYMENTS,
    PODS,
    REPLICASETS,
    Api,
    RetryLater,
    controller_ref,
    selector_of,
    selects,
    sync_replicaset,
)
from .resources import TypeRegistry
from .store import Event, Store, name_of, namespace_of

log = logging.getLogger(__name__)
Key = tuple[str, str, str]  # ("deployment" | "replicaset", namespace, name)
# storage key -> (kind of its controller, queue kind, the controller's storage key)
_OWNERS = {
    REPLICASETS: ("Deployment", "deployment", DEPLOYMENTS),
    PODS: ("ReplicaSet", "replicaset", REPLICASETS),
}
_MAX_RETRY = 5.0


class WorkloadControllers:
    def __init__(self, store: Store, registry: Registry, types: TypeRegistry) -> None:
        self._store = store
        self._api = Api(store, registry, types, born={})
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._failures: dict[Key, int] = {}
        self._timers: dict[Key, tuple[float, asyncio.TimerHandle]] = {}
        store.subscribe(self._on_event)

    # event intake (synchronous, cheap)

    def _on_event(self, event: Event) -> None:
        key = event.storage_key
        if key == DEPLOYMENTS:
            self._enqueue(("deployment", namespace_of(event.obj), name_of(event.obj)))
            return
        if key not in _OWNERS:
            return
        obj, namespace = event.obj, namespace_of(event.obj)
        if key == REPLICASETS:
            self._enqueue(("replicaset", namespace, name_of(obj)))
        else:
            self._track_pod(event)
        owner_kind, queue_kind, owner_key = _OWNERS[key]
        refs = [controller_ref(event.old)]
        if event.type != "DELETED":
            refs.append(controller_ref(obj))
        for ref in refs:
            if ref is not None and ref.get("kind") == owner_kind:
                self._enqueue((queue_kind, namespace, str(ref.get("name"))))
        if event.type != "DELETED" and refs[-1] is None:  # an orphan: who may adopt it?
            for owner in self._store.objects(owner_key, namespace):
                if selects(selector_of(owner), obj):
                    self._enqueue((queue_kind, namespace, name_of(owner)))

    def _track_pod(self, event: Event) -> None:
        uid = str(event.obj["metadata"].get("uid"))
        if event.type == "ADDED":
            self._api.born[uid] = event.rv
            return
        if event.type != "DELETED":
            return
        self._api.born.pop(uid, None)
        ref = controller_ref(event.obj)
        if ref is None or ref.get("kind") != "ReplicaSet":
            return
        rs = self._store.get(REPLICASETS, namespace_of(event.obj), str(ref.get("name")))
        owner = controller_ref(rs)
        if owner is not None and owner.get("kind") == "Deployment":
            self._enqueue(("deployment", namespace_of(event.obj), str(owner.get("name"))))

    def _enqueue(self, item: Key) -> None:
        if item not in self._queued:
            self._queued.add(item)
            self._queue.put_nowait(item)

    def _later(self, item: Key, delay: float) -> None:
        """Queue ``item`` again after ``delay`` seconds (the earliest such request wins)."""
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        scheduled = self._timers.get(item)
        if scheduled is not None:
            if scheduled[0] <= due:
                return
            scheduled[1].cancel()

        def fire() -> None:
            self._timers.pop(item, None)
            self._enqueue(item)

        self._timers[item] = (due, loop.call_later(delay, fire))

    # the worker

    async def run(self) -> None:
        try:
            while True:
                item = await self._queue.get()
                self._queued.discard(item)
                delay = self._sync(item)
                if delay is not None:
                    self._later(item, delay)
                await asyncio.sleep(0)  # let requests in between syncs
        finally:
            for _, handle in self._timers.values():
                handle.cancel()
            self._timers.clear()

    def _sync(self, item: Key) -> float | None:
        kind, namespace, name = item
        try:
            if kind == "deployment":
                delay = sync_deployment(self._api, namespace, name)
            else:
                delay = sync_replicaset(self._api, namespace, name)
        except (ApiError, RetryLater) as exc:  # e.g. a missing ServiceAccount; try again later
            log.debug("%s %s/%s: %s", kind, namespace, name, exc)
            return self._retry(item)
        except Exception:
            log.exception("%s %s/%s failed", kind, namespace, name)
            return self._retry(item)
        self._failures.pop(item, None)
        return delay

    def _retry(self, item: Key) -> float:
        failures = self._failures[item] = self._failures.get(item, 0) + 1
        return float(min(0.1 * 2 ** (failures - 1), _MAX_RETRY))
