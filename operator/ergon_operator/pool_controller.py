"""Carrying out worker pool decisions: WorkerPools reconciled from their own work queue.

A pool is reconciled when it changes, when one of its Deployments changes (a label-selected
watch), when a flow that may be its own changes in the store (a FlowRun on the pool was
scheduled, signalled or woke up; any flow the operator does not know, such as a child flow),
at the due times its decision asks for (a timer coming due, a lease running out, the end of a
scale-down delay), and every `RESYNC_SECONDS` while it has workers or unfinished flows. Each
reconcile reads one queue-depth aggregate per version from the store; pokes closer together
than `MIN_INTERVAL` are merged, so a burst of notifications costs one reconcile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import ergon
from ergon_operator.cache import Body, Key, is_newer, key_of, slim
from ergon_operator.kube import Kube
from ergon_operator.outages import is_outage
from ergon_operator.pools import (
    SPEC_HASH_ANNOTATION,
    Deployment,
    PoolObserved,
    PoolPlan,
    WorkerPool,
    decide_pool,
    versions_to_watch,
)
from ergon_operator.resources import POOL_LABEL, utcnow
from ergon_operator.settings import Settings
from ergon_operator.stores import SharedStores, StoreRouter
from ergon_operator.timers import TimerHeap
from ergon_operator.watching import deployment_watch
from ergon_operator.workqueue import Backoff, Priority, WorkQueue

log = logging.getLogger("ergon.operator")

RESYNC_SECONDS = 30.0
MIN_INTERVAL = 1.0
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 300.0
DEPLOYMENT_FIELDS = ("apiVersion", "kind", "spec", "status")
POOL_FIELDS = ("apiVersion", "kind", "spec", "status")


def merge_patch(current: Any, desired: Any) -> Any:
    """The JSON merge patch (RFC 7386) taking `current` to `desired`: changed keys, nulls for
    removed ones, lists replaced whole; `{}` when nothing differs."""
    if not isinstance(current, dict) or not isinstance(desired, dict):
        return desired
    patch: dict[str, Any] = {}
    for key, value in desired.items():
        if key not in current:
            patch[key] = value
        elif current[key] != value:
            patch[key] = merge_patch(current[key], value)
    for key in current:
        if key not in desired:
            patch[key] = None
    return patch


class PoolController:
    """WorkerPools and their Deployments: cached from watches, reconciled one pool at a time."""

    def __init__(
        self,
        settings: Settings,
        stores: StoreRouter | ergon.Client,
        kube: Kube,
        *,
        on_store_error: Callable[[BaseException], None],
        on_store_ok: Callable[[], None],
        run_versions: Callable[[Key], frozenset[str]],
        workers: int = 2,
    ) -> None:
        self.settings = settings
        # The store of each pool's namespace (a Client: one store for all namespaces).
        self.stores = stores if isinstance(stores, StoreRouter) else SharedStores(stores.store)
        self.kube = kube
        self.pools: dict[Key, Body] = {}
        self.deployments: dict[Key, Body] = {}
        self.queue: WorkQueue[Key] = WorkQueue(self._reconcile_key, workers=workers)
        self.timers: TimerHeap[Key] = TimerHeap(lambda key: self.queue.add(key, Priority.TIMER))
        self.watch = deployment_watch(
            kube,
            namespaces=settings.watch_namespaces,
            put=self._put_deployment,
            drop=self._drop_deployment,
            replace=self._replace_deployments,
        )
        self._on_store_error = on_store_error
        self._on_store_ok = on_store_ok
        self._run_versions = run_versions
        self.synced = asyncio.Event()  # the WorkerPools are listed and the Deployments too
        self._last: dict[Key, datetime] = {}
        self._backoff: Backoff[Key] = Backoff(first=BACKOFF_FIRST, most=BACKOFF_MAX)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self.watch.run(), name="ergon-deployment-watch"),
            loop.create_task(self.timers.run(), name="ergon-pool-timers"),
            loop.create_task(self._start_workers(), name="ergon-pool-workers"),
        ]

    async def _start_workers(self) -> None:
        """List the WorkerPools once (FlowRuns on a pool must not be judged before their pool
        is known: a pool listed late would look missing), wait for the Deployments, start."""
        delay = BACKOFF_FIRST
        while True:
            try:
                await self._list_pools()
                break
            except Exception as exc:  # the API is unreachable: retried, logged once per try
                log.warning("listing WorkerPools failed (%s); retrying in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        await self.watch.synced.wait()
        self.synced.set()
        self.queue.start()

    async def _list_pools(self) -> None:
        namespaces: tuple[str | None, ...] = self.settings.watch_namespaces or (None,)
        for namespace in namespaces:  # one listing per watched namespace (None: all)
            token: str | None = None
            while True:
                page = await self.kube.list_workerpools(namespace, continue_=token)
                for item in page.get("items") or []:
                    item.setdefault("apiVersion", "ergon.dev/v1alpha1")
                    item.setdefault("kind", "WorkerPool")
                    self.pool_event(None, item)
                token = (page.get("metadata") or {}).get("continue") or None
                if token is None:
                    break

    async def stop(self) -> None:
        self.watch.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.queue.stop()

    # --- what the cache holds ------------------------------------------------------------------

    def pool(self, namespace: str, name: str) -> WorkerPool | None:
        body = self.pools.get((namespace, name))
        return WorkerPool.parse(body) if body is not None else None

    def pool_event(self, kind: str | None, body: Body) -> None:
        """A WorkerPool watch event (`kind` None: the initial listing)."""
        key = key_of(body)
        if kind == "DELETED":
            self.pools.pop(key, None)
            self.timers.cancel(key)
            return
        old = self.pools.get(key)
        if old is not None and not is_newer(body, old):
            return  # our own status write, seen already
        self.pools[key] = slim(body, keep=POOL_FIELDS)
        generation = (body.get("metadata") or {}).get("generation")
        observed = (body.get("status") or {}).get("observedGeneration")
        if old is None or kind is None or generation != observed:
            self.queue.add(key, Priority.BACKGROUND if kind is None else Priority.URGENT)

    def _pool_of(self, deployment: Body) -> Key | None:
        meta = deployment.get("metadata") or {}
        name = (meta.get("labels") or {}).get(POOL_LABEL)
        return (str(meta.get("namespace") or "default"), str(name)) if name else None

    def _put_deployment(self, body: Body) -> None:
        key = key_of(body)
        old = self.deployments.get(key)
        if old is not None and not is_newer(body, old):
            return
        self.deployments[key] = slim(body, keep=DEPLOYMENT_FIELDS)
        pool = self._pool_of(body)
        if pool is not None and self.watch.synced.is_set():
            self.poke(pool)

    def _drop_deployment(self, body: Body) -> None:
        self.deployments.pop(key_of(body), None)
        pool = self._pool_of(body)
        if pool is not None:
            self.poke(pool)

    def _replace_deployments(self, bodies: list[Body]) -> None:
        """A fresh listing (at startup, or after the watch fell too far behind): every pool
        looks again, since changes in between were not seen one by one."""
        self.deployments = {key_of(b): slim(b, keep=DEPLOYMENT_FIELDS) for b in bodies}
        if self.watch.synced.is_set():
            self.poke_all()

    def _deployments_of(self, pool: WorkerPool) -> list[Deployment]:
        found = []
        for (namespace, _), body in self.deployments.items():
            meta = body.get("metadata") or {}
            owners = {r.get("uid") for r in meta.get("ownerReferences") or []}
            if namespace == pool.namespace and pool.uid in owners:
                found.append(Deployment.parse(body))
        return sorted(found, key=lambda d: d.name)

    # --- what wakes a reconcile ----------------------------------------------------------------

    def poke(self, key: Key) -> None:
        """Reconcile this pool soon: at once, or `MIN_INTERVAL` after its last reconcile."""
        if key not in self.pools:
            return
        last = self._last.get(key)
        if last is not None and utcnow() - last < timedelta(seconds=MIN_INTERVAL):
            self.timers.schedule(key, last + timedelta(seconds=MIN_INTERVAL))
            return
        self.queue.add(key, Priority.URGENT)

    def poke_all(self, *, namespace: str | None = None) -> None:
        """A flow the operator cannot place changed (a child flow, one a client scheduled):
        every pool (of `namespace`, when the change came from its own store) looks at its queue
        again."""
        for key in list(self.pools):
            if namespace is None or key[0] == namespace:
                self.poke(key)

    # --- one reconcile -------------------------------------------------------------------------

    async def _reconcile_key(self, key: Key) -> None:
        try:
            await self.reconcile(key)
        except Exception as exc:  # reported here, retried with backoff
            failures, delay = self._backoff.failed(key)
            self.timers.schedule(key, utcnow() + timedelta(seconds=delay))
            if is_outage(exc):
                self._on_store_error(exc)  # an outage: logged once, when it starts
                return
            log.log(
                logging.WARNING if failures > 1 else logging.ERROR,
                "reconciling WorkerPool %s/%s failed (%s: %s); retry %d in %.0f s",
                *key,
                type(exc).__name__,
                exc,
                failures,
                delay,
            )
        else:
            self._backoff.succeeded(key)

    async def reconcile(self, key: Key) -> None:
        body = self.pools.get(key)
        if body is None:
            return
        pool = WorkerPool.parse(body)
        if pool.deleting:
            return  # its Deployments go with it (owner references)
        self._last[key] = utcnow()
        deployments = self._deployments_of(pool)
        run_versions = self._run_versions(key)
        depth = {}
        versions = versions_to_watch(pool, deployments, run_versions)
        client = await self.stores.client_for(pool.namespace) if versions else None
        for version in versions:
            assert client is not None
            depth[version] = await client.queue_depth(version=pool.routing(version))
        self._on_store_ok()
        seen = PoolObserved(
            pool=pool, deployments=deployments, depth=depth, now=utcnow(), run_versions=run_versions
        )
        plan = decide_pool(seen, self.settings)
        await self._apply(pool, body, plan)
        busy = any(v.replicas or v.flows_waiting for v in plan.status.versions)
        now = utcnow()
        if busy:
            plan.wake(now + timedelta(seconds=RESYNC_SECONDS))
        if plan.wake_at is not None:
            # Never sooner than MIN_INTERVAL: a due time already past (the store's clock ahead
            # of ours) must not spin.
            self.timers.schedule(key, max(plan.wake_at, now + timedelta(seconds=MIN_INTERVAL)))

    async def _apply(self, pool: WorkerPool, body: Body, plan: PoolPlan) -> None:
        namespace = pool.namespace
        for manifest in plan.create:
            created = await self.kube.create_deployment(namespace, manifest)
            if created is None:  # the name is taken: ours (the watch brings it) or another's
                name = manifest["metadata"]["name"]
                log.warning("Deployment %s/%s exists already; not creating it", namespace, name)
            else:
                self.deployments[key_of(created)] = slim(created, keep=DEPLOYMENT_FIELDS)
        for manifest in plan.replace:
            name = manifest["metadata"]["name"]
            spec = dict(manifest["spec"])
            spec["replicas"] = plan.scale.pop(name, spec["replicas"])
            current = self.deployments.get((namespace, name)) or {}
            patch: dict[str, Any] = {
                "metadata": {
                    "annotations": {
                        SPEC_HASH_ANNOTATION: manifest["metadata"]["annotations"][
                            SPEC_HASH_ANNOTATION
                        ]
                    }
                },
                # A merge patch removes what the new template no longer has (a node selector,
                # a label) only when told to, with nulls: computed against what is there.
                "spec": {
                    "replicas": spec["replicas"],
                    "template": merge_patch(
                        (current.get("spec") or {}).get("template") or {}, spec["template"]
                    ),
                },
            }
            await self._patched(namespace, name, patch)
        for name, replicas in plan.scale.items():
            await self._patched(namespace, name, {"spec": {"replicas": replicas}})
        for name in plan.delete:
            await self.kube.delete_deployment(namespace, name)
            self.deployments.pop((namespace, name), None)
        patch = merge_patch(pool.status_body, plan.status.to_body())
        if patch:
            written = await self.kube.patch_workerpool_status(namespace, pool.name, patch)
            if written is not None:
                self.pools[pool.key] = slim(written, keep=POOL_FIELDS)
        for kind, reason, message in plan.events:
            try:
                await self.kube.post_event(body, type=kind, reason=reason, message=message)
            except Exception as exc:  # a report: never stops the reconcile
                log.warning("could not post event %s for pool %s: %s", reason, pool.name, exc)

    async def _patched(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        written = await self.kube.patch_deployment(namespace, name, patch)
        if written is not None:
            self.deployments[key_of(written)] = slim(written, keep=DEPLOYMENT_FIELDS)
