"""Carrying out decisions: FlowRuns reconciled from a priority work queue, woken by watch events,
store notifications and one timer heap.

A reconcile reads the FlowRun, its pods and its Signals from the cache (`cache.Cache`, fed by
the watches) and the flow record from the store, decides (`decisions.decide`) and applies the
plan. It never GETs or LISTs the API, and nothing polls per run: the cost follows what happens,
not how many FlowRuns exist. The exceptions are live status — runs whose worker pod is Running
are re-read from the store once a second — and the timers the plans ask for.

Nothing here keeps state that matters across restarts: the caches are rebuilt from the initial
listings, timers are recomputed from the store on the first reconcile after a restart, pods are
found by owner uid and pod names are deterministic, so a restarted operator neither loses nor
duplicates work.

A reconcile applies what it can: a failed signal delivery, pod creation, pod deletion or Event
does not stop the status update, the cancel or the deadline; the failure is reported afterwards,
and the run is retried with exponential backoff (1 s doubling to 5 min), not in a tight loop. A
store outage is logged when it starts and when it ends, not once per reconcile.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from kubernetes.client.exceptions import ApiException

import ergon
from ergon_operator.cache import Body, Cache, Key, key_of, owner_uids
from ergon_operator.cleanup import Sweeper, origin_of
from ergon_operator.decisions import Event, Observed, Plan, decide
from ergon_operator.kube import Kube, request_counts
from ergon_operator.limits import Rank, Slots
from ergon_operator.outages import PartialFailure, is_outage
from ergon_operator.pods import flowrun_label
from ergon_operator.pool_controller import PoolController
from ergon_operator.pools import WorkerPool, parse_routing
from ergon_operator.resources import TERMINAL_PHASES, FlowRun, Pod, Signal, utcnow
from ergon_operator.settings import Settings
from ergon_operator.signals import decide_signal, spec_deliveries
from ergon_operator.status import StepSummary
from ergon_operator.stores import SharedStores, StoreRouter, Subscribable
from ergon_operator.tenancy import TenantError
from ergon_operator.timers import TimerHeap
from ergon_operator.watching import pod_watch
from ergon_operator.workqueue import Backoff, Priority, WorkQueue

log = logging.getLogger("ergon.operator")

OWNER = "ergon-operator"
PROGRESS_SECONDS = 1.0
PENDING_BUDGET = 20  # runs on a pool waiting for a worker re-read per progress tick
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 300.0


class StoreHealth:
    """Logs a store outage once when it starts and once when it ends."""

    def __init__(self) -> None:
        self.down_since: datetime | None = None

    def failed(self, exc: BaseException) -> None:
        if self.down_since is None:
            self.down_since = utcnow()
            log.error("the store is unreachable (%s); runs wait and retry with backoff", exc)

    def ok(self) -> None:
        if self.down_since is not None:
            seconds = (utcnow() - self.down_since).total_seconds()
            self.down_since = None
            log.info("the store is reachable again (after %.0f s)", seconds)


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        stores: StoreRouter | ergon.Store,
        kube: Kube,
        *,
        workers: int = 8,
    ) -> None:
        """`stores`: the router of namespaces to stores (`stores.router_for`), or one store
        for every namespace."""
        self.settings = settings
        self.stores = stores if isinstance(stores, StoreRouter) else SharedStores(stores)
        self.kube = kube
        self.cache = Cache()
        self.queue: WorkQueue[Key] = WorkQueue(self._reconcile_key, workers=workers)
        self.timers: TimerHeap[Key] = TimerHeap(lambda key: self.poke(key, Priority.TIMER))
        self.slots = Slots(
            max_total=settings.max_running_pods,
            max_per_namespace=settings.max_running_pods_per_namespace,
            poke=lambda key: self.poke(key, Priority.TIMER),
        )
        self.health = StoreHealth()
        self.pools = PoolController(
            settings,
            self.stores,
            kube,
            on_store_error=self.health.failed,
            on_store_ok=self.health.ok,
            run_versions=self._pool_run_versions,
        )
        self.pod_watch = pod_watch(
            kube,
            namespaces=settings.watch_namespaces,
            put=self.cache.put_pod,
            drop=self.cache.drop_pod,
            replace=self.cache.replace_pods,
        )
        self.cache.pod_listeners.append(self.slots.pod_changed)
        self.cache.pod_listeners.append(self._pod_changed)
        self._backoff: Backoff[Key] = Backoff(first=BACKOFF_FIRST, most=BACKOFF_MAX)
        self._listed: set[Key] = set()  # poked by the startup listing only
        self._deleted: dict[Key, str] = {}  # deleted FlowRuns whose flow is still to cancel
        self._rejected: dict[str, str] = {}  # FlowRun uid -> why its pod creation was refused
        self._live: dict[Key, Key] = {}  # Running worker pod -> its FlowRun
        self._live_pool: set[Key] = set()  # runs on a pool whose flow is running
        # ... or runnable, waiting for a worker: re-read a few at a time, oldest look first
        self._pending_pool: dict[Key, None] = {}
        self._own_write = False  # the cache is taking the API's answer to our own write
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubscribe: list[Callable[[], None]] = []
        self.stores.on_listen(self._listening)
        # Cancels the flows of FlowRuns deleted while nobody listened (issue 14 item 8).
        self.sweeper = Sweeper.for_operator(
            stores=self.stores, kube=kube, namespaces=settings.watch_namespaces, env=os.environ
        )

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the pod watch, the timer heap, live status and the store subscription; the
        workers start once the pods are listed (deciding without them would be blind)."""
        loop = asyncio.get_running_loop()
        for name, work in (
            ("pod-watch", self.pod_watch.run()),
            ("timers", self.timers.run()),
            ("progress", self._progress()),
            ("workers", self._start_workers()),
            ("notifications", self._subscribe()),
            ("orphan-sweep", self.sweeper.run()),
        ):
            self._tasks.append(loop.create_task(work, name=f"ergon-{name}"))
        await self.pools.start()

    async def _start_workers(self) -> None:
        await self.pod_watch.synced.wait()
        await self.pools.synced.wait()
        self.queue.start()

    async def _subscribe(self) -> None:
        """Hear the shared store's notifications (flow ids), retrying until the store answers.
        (Tenant stores listen before their first use: `_listening`.)"""
        store = self.stores.shared
        if store is None:
            return
        delay = BACKOFF_FIRST
        while True:
            try:
                notifier = await store.notifier()
            except Exception as exc:  # an outage: logged once, retried
                self.health.failed(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            self._unsubscribe.append(notifier.subscribe(self._flow_changed))
            return

    def _listening(self, namespace: str, notifier: Subscribable) -> None:
        """A namespace's tenant store listens: its notifications concern that namespace only."""

        def changed(flow_id: str | None) -> None:
            self._flow_changed(flow_id, namespace=namespace)

        self._unsubscribe.append(notifier.subscribe(changed))

    async def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        self.pod_watch.stop()
        await self.pools.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.queue.stop()
        counts = ", ".join(
            f"{verb} {what}: {n}" for (verb, what), n in sorted(request_counts().items())
        )
        log.info("stopped; API requests made: %s", counts or "none")

    # --- what wakes a reconcile --------------------------------------------------------------

    def poke(self, key: Key, priority: int = Priority.URGENT) -> None:
        """Reconcile this FlowRun soon (once, however often it is poked meanwhile)."""
        self._listed.discard(key)
        self.queue.add(key, priority)

    def flowrun_event(self, kind: str | None, body: Body) -> None:
        """A FlowRun watch event (`kind` None: the initial listing)."""
        key = key_of(body)
        if kind == "DELETED":
            run = FlowRun.parse(body)
            self.cache.drop_flowrun(body)
            self._live_pool.discard(key)
            self._pending_pool.pop(key, None)
            self.timers.cancel(key)
            self.slots.forget(run.uid)
            self._rejected.pop(run.uid, None)
            self._deleted[key] = run.uid
            self.poke(key)
            return
        if not self.cache.put_flowrun(body):
            return  # not newer than what the cache holds (our own write, seen already)
        run = FlowRun.parse(body)
        if kind is None:
            if key not in self.queue:
                self._listed.add(key)
            self.queue.add(key, Priority.BACKGROUND)
            return
        if (
            kind == "MODIFIED"
            and run.status.observed_generation == run.generation
            and not run.deleting
        ):
            return  # a status or metadata change only: nothing new to act on
        self.poke(key)

    def signal_event(self, kind: str | None, body: Body) -> None:
        """A Signal watch event: its FlowRun is reconciled, which delivers or parks it."""
        if kind == "DELETED":
            self.cache.drop_signal(body)
            return
        if not self.cache.put_signal(body):
            return
        signal = Signal.parse(body)
        generation = (body.get("metadata") or {}).get("generation")
        if (
            signal.phase in ("Delivered", "Rejected")
            and signal.status.get("observedGeneration") == generation
        ):
            return  # settled, and the status reports this generation
        key = (signal.namespace, signal.flow_run)
        self.poke(key, Priority.BACKGROUND if kind is None else Priority.URGENT)

    def _pod_changed(self, old: Body | None, new: Body | None) -> None:
        body = new if new is not None else old
        assert body is not None
        pod_key = key_of(body)
        run_key = self._run_of(body)
        running = (
            new is not None
            and Pod.parse(new).phase == "Running"
            and not ((new.get("metadata") or {}).get("deletionTimestamp"))
        )
        if running and run_key is not None:
            self._live[pod_key] = run_key
        else:
            self._live.pop(pod_key, None)
        if run_key is not None and self.pod_watch.synced.is_set() and not self._own_write:
            # Not for our own writes (their reconcile knows), nor during the startup listing
            # (it reconciles every run anyway).
            self.poke(run_key)

    def _run_of(self, pod: Body) -> Key | None:
        for uid in owner_uids(pod):
            key = self.cache.key_for_uid(uid)
            if key is not None:
                return key
        return None

    def _flow_changed(self, flow_id: str | None, *, namespace: str | None = None) -> None:
        """A store notification: the flow `flow_id` changed (created, ended, signalled), or,
        with None, notifications may have been lost: re-examine every unfinished run. From a
        tenant store (`namespace` given), only that namespace's runs and pools concern it: the
        tenant's own role can notify its channel with any flow id."""
        if flow_id is None:
            for key, body in list(self.cache.flowruns.items()):
                if namespace is not None and key[0] != namespace:
                    continue
                if ((body.get("status") or {}).get("phase")) not in TERMINAL_PHASES:
                    self.queue.add(key, Priority.BACKGROUND)
            self.pools.poke_all(namespace=namespace)
            return
        found = self.cache.key_for_uid(flow_id)
        if found is not None and namespace is not None and found[0] != namespace:
            return
        if found is None:
            # a child flow, or one a client scheduled: maybe a pool's
            self.pools.poke_all(namespace=namespace)
            return
        self.poke(found)
        run = self.cache.flowrun(found) or {}
        pool = (run.get("spec") or {}).get("workerPool")
        if pool:
            self.pools.poke((found[0], str(pool)))

    def workerpool_event(self, kind: str | None, body: Body) -> None:
        """A WorkerPool watch event; a pool that appears or goes makes its runs look again."""
        self.pools.pool_event(kind, body)
        if kind not in ("ADDED", "DELETED"):
            return
        for run in self.cache.flowruns_on(key_of(body)):
            if (run.get("status") or {}).get("phase") not in TERMINAL_PHASES:
                self.poke(key_of(run))

    def _pool_run_versions(self, pool: Key) -> frozenset[str]:
        """The versions the pool's unfinished FlowRuns were scheduled on."""
        found = set()
        for run in self.cache.flowruns_on(pool):
            status = run.get("status") or {}
            if status.get("version") and status.get("phase") not in TERMINAL_PHASES:
                found.add(str(status["version"]))
        return frozenset(found)

    async def _progress(self) -> None:
        """Live status: each FlowRun with a Running worker pod, or on a pool with its flow
        running, is re-read once a second. Runs on a pool waiting for a worker (a claim sends
        no notification) are re-read `PENDING_BUDGET` a second, those looked at longest ago
        first: a backlog of thousands costs no more than a few, and each run still moves to
        Running on its own soon after a worker takes it (its end is notified anyway)."""
        while True:
            await asyncio.sleep(PROGRESS_SECONDS)
            keys = set(self._live.values()) | self._live_pool
            keys |= set(itertools.islice(self._pending_pool, PENDING_BUDGET))
            for key in keys:
                if key not in self._backoff:  # a failing run keeps to its backoff
                    self.queue.add(key, Priority.PROGRESS)

    # --- one reconcile -----------------------------------------------------------------------

    async def _reconcile_key(self, key: Key) -> None:
        try:
            await self.reconcile(key)
        except Exception as exc:  # reported here, retried with backoff
            failures, delay = self._backoff.failed(key)
            self.timers.schedule(key, utcnow() + timedelta(seconds=delay))
            if is_outage(exc):
                self.health.failed(exc)
                return
            level = logging.WARNING if failures > 1 else logging.ERROR
            log.log(
                level,
                "reconciling FlowRun %s/%s failed (%s: %s); retry %d in %.0f s",
                *key,
                type(exc).__name__,
                exc,
                failures,
                delay,
                exc_info=failures == 1
                and not isinstance(exc, PartialFailure | ApiException | TenantError),
            )
        else:
            self._backoff.succeeded(key)

    async def reconcile(self, key: Key) -> None:
        startup = key in self._listed
        self._listed.discard(key)
        body = self.cache.flowrun(key)
        if body is None:
            await self._gone(key)
            return
        run = FlowRun.parse(body)
        earlier = self._deleted.get(key)
        if earlier is not None and earlier != run.uid:  # deleted, then re-created at once
            await self._cancel_deleted(key, earlier)
        if run.deleting:
            await self._cancel_deleted(key, run.uid)
            return
        pods = self._pods(run)
        if startup and self._settled(run, pods):
            return  # finished, reported, nothing running: costs nothing at startup
        try:
            # The namespace's store, set up first if it is new (ERGON_TENANCY=namespace).
            store = await self.stores.store_for(run.namespace)
        except TenantError as exc:
            await self._store_problem(run, body, pods, str(exc))
            raise
        client = await self.stores.client_for(run.namespace)
        errors: list[BaseException] = []
        # Pods (from the cache) before the flow record: a pod writes its outcome before it
        # exits, so a record read after the pods is never older than what the pods show.
        flow = await store.get_flow(run.uid)
        changed = False
        pool = self.pools.pool(run.namespace, run.worker_pool) if run.worker_pool else None
        pool_missing = run.worker_pool is not None and (pool is None or pool.deleting)
        if flow is None and run.phase not in TERMINAL_PHASES and not pool_missing:
            try:
                await client.schedule_by_name(
                    run.flow,
                    run.input,
                    flow_id=run.uid,
                    version=pool.routing() if pool is not None else run.version,
                    origin=origin_of(run.namespace, run.name, run.uid),
                )
            except Exception as exc:
                if is_outage(exc):
                    raise
                errors.append(exc)  # refused (a value the store cannot hold): still report
            changed = True
        delivered = await self._deliver_spec_signals(client, run, errors)
        signals, sent = await self._signals(key, run, errors, client=client)
        if changed or delivered or sent:  # the flow may have moved: read it again
            pods = self._pods(run)
            flow = await store.get_flow(run.uid)
        steps = await store.load_steps(run.uid)
        self.health.ok()
        rank = Rank.of(priority=run.priority, created=run.created_at, key=key)
        slot_free = self.slots.may_start(uid=run.uid, namespace=run.namespace, rank=rank)
        seen = Observed(
            run=run,
            flow=flow,
            steps=StepSummary.of(steps),
            pods=pods,
            now=utcnow(),
            signals=signals,
            slot_free=slot_free,
            pod_rejected=self._rejected.get(run.uid),
            pool_missing=pool_missing,
            pool_image=_pool_image(pool, flow),
        )
        plan = decide(seen, self.settings)
        if plan.create_pod is not None:
            # The pod reads the namespace's DSN Secret and logs in as its role (namespace mode):
            # both are checked first, and set up again if gone; then the slot is asked anew.
            try:
                await self.stores.verify(run.namespace)
            except TenantError as exc:
                await self._store_problem(run, body, pods, str(exc))
                raise
            slot_free = self.slots.may_start(uid=run.uid, namespace=run.namespace, rank=rank)
            seen = replace(seen, slot_free=slot_free)
            plan = decide(seen, self.settings)
        if run.worker_pool is not None:
            self._track_pool_run(run, flow)
        # No await between `may_start` and here: no other reconcile can take the same slot.
        if plan.create_pod is not None:
            self.slots.reserve(uid=run.uid, namespace=run.namespace)
            log.debug("FlowRun %s/%s starts a pod (slots: %s)", *key, self.slots.describe())
        elif plan.queued:
            self.slots.wait(uid=run.uid, namespace=run.namespace, rank=rank)
        else:
            self.slots.forget(run.uid)
        plan.status.delivered_signals = sorted({*plan.status.delivered_signals, *delivered})
        await self._apply(run, body, plan, errors, client=client)
        if errors:
            raise errors[0] if len(errors) == 1 else PartialFailure(errors)

    async def _store_problem(self, run: FlowRun, body: Body, pods: list[Pod], problem: str) -> None:
        """The namespace's store cannot be set up: a run not started yet waits, Pending with
        reason `ProvisioningStore` (and one Warning Event `StoreProvisioningFailed`), and is
        tried again with backoff. A run further along keeps its status (the failure is logged)."""
        if run.phase not in (None, "", "Pending"):
            return
        seen = Observed(
            run=run,
            flow=None,
            steps=StepSummary.of([]),
            pods=pods,
            now=utcnow(),
            store_problem=problem,
        )
        plan = decide(seen, self.settings)
        errors: list[BaseException] = []
        await self._apply(run, body, plan, errors, client=None)
        if errors:
            log.warning("reporting the store problem of %s/%s failed: %s", *run.key, errors[0])

    def _track_pool_run(self, run: FlowRun, flow: ergon.FlowStatus | None) -> None:
        """Runs on a pool whose flow is pending or running are re-read once a second (a claim
        and step checkpoints send no notification); a pending one also wakes its pool."""
        state = flow.state if flow is not None else None
        if flow is not None and state == "suspended":
            reason = flow.waiting_for
            due = reason.fire_at if reason is not None else flow.wake_at
            if due is not None and due <= utcnow():
                state = "pending"  # due: runnable until a worker claims it
        self._live_pool.discard(run.key)
        self._pending_pool.pop(run.key, None)
        if state == "running":
            self._live_pool.add(run.key)
        elif state == "pending":
            self._pending_pool[run.key] = None  # to the back of the line
            if run.worker_pool is not None:
                self.pools.poke((run.namespace, run.worker_pool))

    def _pods(self, run: FlowRun) -> list[Pod]:
        """This run's pods, and those of an earlier FlowRun of its name (decide tells them
        apart by owner uid)."""
        bodies = self.cache.pods_for(run.uid, run.namespace, flowrun_label(run))
        return [Pod.parse(p) for p in bodies]

    def _settled(self, run: FlowRun, pods: list[Pod]) -> bool:
        """A finished run whose status is up to date, with no pod running and no TTL to
        honour: nothing a reconcile could change."""
        ttl = run.ttl_seconds_after_finished
        if ttl is None:
            ttl = self.settings.ttl_seconds_after_finished
        return (
            run.phase in TERMINAL_PHASES
            and run.status.observed_generation == run.generation
            and not any(p.active for p in pods if p.owner_uid == run.uid)
            and ttl is None
            and all(Signal.parse(s).phase != "Pending" for s in self.cache.signals_of(run.key))
        )

    async def _deliver_spec_signals(
        self, client: ergon.Client, run: FlowRun, errors: list[BaseException]
    ) -> list[str]:
        if run.phase in TERMINAL_PHASES:
            return []
        names = []
        for delivery in spec_deliveries(run):
            try:
                await client.signal(
                    run.uid, delivery.name, delivery.payload, signal_id=delivery.signal_id
                )
            except Exception as exc:  # reported after the rest is applied
                errors.append(exc)
                continue
            names.append(delivery.name)
        return names

    async def _signals(
        self,
        key: Key,
        run: FlowRun | None,
        errors: list[BaseException],
        *,
        client: ergon.Client | None,
    ) -> tuple[list[Signal], bool]:
        """Deliver, park or reject this run's Signal resources (from the cache); returns them
        as they stand afterwards, and whether any was delivered to the flow (`client`: the
        run's store; None when there is no run to deliver to)."""
        result = []
        sent = False
        for body in self.cache.signals_of(key):
            signal = Signal.parse(body)
            decision = decide_signal(signal, run, utcnow())
            if decision is not None:
                try:
                    if decision.deliver_to is not None:
                        assert client is not None  # a decision to deliver has a run
                        await client.signal(
                            decision.deliver_to, signal.signal, signal.payload, signal_id=signal.uid
                        )
                        sent = True
                    status = dict(decision.status)
                    status.setdefault(
                        "observedGeneration", (body.get("metadata") or {}).get("generation")
                    )
                    written = await self.kube.patch_signal_status(
                        signal.namespace, signal.name, status
                    )
                    if written is not None:
                        self.cache.put_signal(written)
                        signal = Signal.parse(written)
                except Exception as exc:  # reported after the rest is applied
                    errors.append(exc)
            result.append(signal)
        return result, sent

    async def _apply(
        self,
        run: FlowRun,
        body: Body,
        plan: Plan,
        errors: list[BaseException],
        *,
        client: ergon.Client | None,
    ) -> None:
        if plan.fail_flow is not None or plan.cancel_flow:
            assert client is not None  # ending a flow needs its store
            if plan.fail_flow is not None:
                await self._end_flow_id(client, run.uid, error=plan.fail_flow)
            if plan.cancel_flow:
                await self._end_flow_id(client, run.uid)
        for name in plan.delete_pods:
            try:
                gone = await self.kube.delete_pod(run.namespace, name)
            except Exception as exc:  # reported after the rest is applied
                errors.append(exc)
                continue
            if gone is not None:
                self._own_pod(gone)
        if plan.create_pod is not None:
            await self._create_pod(run, plan, errors)
        patch = status_patch(run.status_body, plan.status.to_body())
        if patch:
            try:
                written = await self.kube.patch_flowrun_status(run.namespace, run.name, patch)
            except Exception as exc:  # reported after the rest is applied
                errors.append(exc)
            else:
                if written is not None:
                    self.cache.put_flowrun(written)
        for event in plan.events:
            await self._post(body, event)
        if plan.delete_flowrun:
            try:
                await self.kube.delete_flowrun(run.namespace, run.name, uid=run.uid)
            except Exception as exc:  # reported after the rest is applied
                errors.append(exc)
        if plan.wake_at is not None:
            self.timers.schedule(run.key, plan.wake_at)

    async def _create_pod(self, run: FlowRun, plan: Plan, errors: list[BaseException]) -> None:
        assert plan.create_pod is not None
        try:
            created = await self.kube.create_pod(run.namespace, plan.create_pod)
        except ApiException as exc:
            self.slots.release(run.uid)
            if exc.status is not None and 400 <= exc.status < 500 and exc.status != 429:
                # Refused (quota, admission, a missing ServiceAccount): the next decision
                # reports it; the status keeps the pod that exists, not the one refused.
                self._rejected[run.uid] = _api_message(exc)
                plan.status.pod_name = run.status.pod_name
                plan.status.image = run.status.image  # pinned only once a pod exists
                plan.status.attempts = run.status.attempts or plan.status.attempts
                plan.events = [e for e in plan.events if e.reason not in ("CreatedPod", "Resumed")]
                plan.events.append(
                    Event(
                        "Warning",
                        "PodRejected",
                        f"creating the worker pod was refused: {self._rejected[run.uid]}",
                    )
                )
            errors.append(exc)
            return
        except Exception as exc:  # reported after the rest is applied
            self.slots.release(run.uid)
            errors.append(exc)
            return
        self._rejected.pop(run.uid, None)
        if created is None:  # a pod of that name exists: the watch brings it
            self.slots.release(run.uid)
        else:
            self._own_pod(created)

    def _own_pod(self, body: Body) -> None:
        """Take the API's answer to our own pod write into the cache, without poking the run
        whose reconcile made it (the watch's echo of it is then dropped as already seen)."""
        self._own_write = True
        try:
            self.cache.put_pod(body)
        finally:
            self._own_write = False

    async def _post(self, body: Body, event: Event) -> None:
        """Events are a report: failing to post one never stops a reconcile."""
        try:
            await self.kube.post_event(
                body, type=event.type, reason=event.reason, message=ergon.redact(event.message)
            )
        except Exception as exc:  # logged, not retried
            log.warning(
                "could not post event %s for %s: %s", event.reason, body["metadata"]["name"], exc
            )

    async def _end_flow_id(
        self, client: ergon.Client, uid: str, *, error: ergon.ErrorInfo | None = None
    ) -> None:
        """End the flow record from the operator's side, failed with `error` or cancelled,
        fencing out any executor still alive."""
        try:
            if error is not None:
                await client.fail_flow(uid, error=error, owner=OWNER)
            else:
                await client.cancel(uid, force=True, owner=OWNER)
        except ergon.FlowNotFoundError:
            pass

    async def _gone(self, key: Key) -> None:
        """No FlowRun of this name: cancel the flow of one just deleted, and tell its Signals
        that they wait."""
        uid = self._deleted.get(key)
        if uid is not None:
            await self._cancel_deleted(key, uid)
        self.timers.cancel(key)
        errors: list[BaseException] = []
        await self._signals(key, None, errors, client=None)
        if errors:
            raise errors[0] if len(errors) == 1 else PartialFailure(errors)

    async def _cancel_deleted(self, key: Key, uid: str) -> None:
        """A deleted FlowRun: cancel its flow (its pods go with it, by owner reference). Kept
        until it succeeds, so a store outage at deletion time only delays it."""
        self._deleted[key] = uid
        self.slots.forget(uid)
        # A namespace whose store was never set up holds no flow: nothing is provisioned here.
        store = await self.stores.store(key[0], create=False)
        flow = await store.get_flow(uid) if store is not None else None
        self.health.ok()
        if flow is not None and not flow.is_terminal:
            await self._end_flow_id(await self.stores.client_for(key[0]), uid)
            log.info("FlowRun %s/%s deleted: flow %s cancelled", *key, uid)
        if self._deleted.get(key) == uid:
            del self._deleted[key]

    # --- introspection -----------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Counts for tests and the benchmark: queue, timers, caches, slots."""
        return {
            "queued": len(self.queue),
            "timers": len(self.timers),
            "flowruns": len(self.cache.flowruns),
            "pods": len(self.cache.pods),
            "signals": len(self.cache.signals),
            "live": len(set(self._live.values()) | self._live_pool | set(self._pending_pool)),
            "pools": len(self.pools.pools),
            **self.slots.describe(),
            **self.stores.describe(),
        }


def _pool_image(pool: WorkerPool | None, flow: ergon.FlowStatus | None) -> str | None:
    """The image of the pool version a flow was scheduled on, as far as the pool knows it."""
    if pool is None or flow is None:
        return None
    routing = parse_routing(flow.version)
    version = routing[2] if routing else None
    if version == pool.version:
        return pool.image
    return next((v.image for v in pool.status.versions if v.version == version and v.image), None)


def status_patch(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """A merge patch taking `current` to `desired` (None deletes a field)."""
    patch: dict[str, Any] = {}
    for key, value in desired.items():
        if value in (None, "") and current.get(key) in (None, ""):
            continue
        if current.get(key) != value:
            patch[key] = value
    return patch


def _api_message(exc: ApiException) -> str:
    """The API server's message from an error response, else the status line."""
    with contextlib.suppress(Exception):
        message = json.loads(exc.body or "{}").get("message")
        if message:
            return str(message)
    return f"{exc.status} {exc.reason}"
