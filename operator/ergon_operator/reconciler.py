"""Carrying out decisions: one reconcile at a time per FlowRun, coalesced, woken by events and
by timers.

Every reconcile reads fresh state (the FlowRun and its pods from the API, the flow record from
the store), decides (`decisions.decide`), and applies the plan. Nothing here keeps state that
matters across restarts: timers are recomputed from the store on the first reconcile after a
restart, pods are found by label, and pod names are deterministic, so a restarted operator
neither loses nor duplicates work.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

import ergon
from ergon_operator.decisions import Event, Observed, Plan, decide
from ergon_operator.kube import Kube
from ergon_operator.resources import TERMINAL_PHASES, FlowRun, Pod, Signal, utcnow
from ergon_operator.settings import Settings
from ergon_operator.signals import decide_signal, spec_deliveries
from ergon_operator.status import StepSummary

log = logging.getLogger("ergon.operator")

Key = tuple[str, str]
OWNER = "ergon-operator"


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        store: ergon.Store,
        kube: Kube,
        *,
        parallel: int = 16,
    ) -> None:
        self.settings = settings
        self.store = store
        self.client = ergon.Client(store)
        self.kube = kube
        self._gate = asyncio.Semaphore(parallel)
        self._running: set[Key] = set()
        self._dirty: set[Key] = set()
        self._timers: dict[Key, tuple[datetime, asyncio.TimerHandle]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending_signals: dict[Key, set[str]] = {}

    # --- scheduling ------------------------------------------------------------------------

    def poke(self, key: Key) -> None:
        """Reconcile this FlowRun soon (once, however often it is poked meanwhile)."""
        if key in self._running:
            self._dirty.add(key)
            return
        self._running.add(key)
        task = asyncio.get_running_loop().create_task(self._loop(key), name=f"reconcile:{key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def wake(self, key: Key, when: datetime) -> None:
        """Reconcile this FlowRun at `when` (timers, retry backoffs, deadlines)."""
        current = self._timers.get(key)
        if current is not None and current[0] <= when:
            return
        if current is not None:
            current[1].cancel()
        loop = asyncio.get_running_loop()
        delay = max((when - utcnow()).total_seconds(), 0.0)
        handle = loop.call_later(delay + 0.01, self._fire, key)
        self._timers[key] = (when, handle)

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.poke(key)

    async def _loop(self, key: Key) -> None:
        try:
            while True:
                self._dirty.discard(key)
                async with self._gate:
                    try:
                        await self.reconcile(*key)
                    except Exception:
                        log.exception("reconciling FlowRun %s/%s failed; retrying in 5 s", *key)
                        self.wake(key, _in(5.0))
                if key not in self._dirty:
                    return
        finally:
            self._running.discard(key)

    async def stop(self) -> None:
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- FlowRuns ----------------------------------------------------------------------------

    async def reconcile(self, namespace: str, name: str) -> None:
        body = await self.kube.get_flowrun(namespace, name)
        if body is None:
            return
        run = FlowRun.parse(body)
        if run.deleting:
            await self.forget(run)
            return
        if await self.store.get_flow(run.uid) is None:
            await self.client.schedule_by_name(
                run.flow, run.input, flow_id=run.uid, version=run.version
            )
        delivered = await self._deliver_spec_signals(run)
        # Pods first, then the flow record: a pod writes its outcome before it exits, so a
        # record read after the pods is never older than what the pods show. (The other order
        # could see a pod that finished the flow beside a record from before it started.)
        pods = [Pod.parse(p) for p in await self.kube.list_pods(namespace, name)]
        flow = await self.store.get_flow(run.uid)
        steps = await self.store.load_steps(run.uid)
        plan = decide(Observed(run, flow, StepSummary.of(steps), pods, utcnow()), self.settings)
        plan.status.delivered_signals = sorted({*plan.status.delivered_signals, *delivered})
        await self._apply(run, body, plan)
        for signal_name in list(self._pending_signals.get(run.key, ())):
            await self.signal(namespace, signal_name)

    async def _deliver_spec_signals(self, run: FlowRun) -> list[str]:
        if run.phase in TERMINAL_PHASES:
            return []
        names = []
        for delivery in spec_deliveries(run):
            await self.client.signal(
                run.uid, delivery.name, delivery.payload, signal_id=delivery.signal_id
            )
            names.append(delivery.name)
        return names

    async def _apply(self, run: FlowRun, body: dict[str, Any], plan: Plan) -> None:
        if plan.fail_flow is not None:
            await self._end_flow(run, error=plan.fail_flow)
        if plan.cancel_flow:
            await self._end_flow(run)
        for pod in plan.delete_pods:
            await self.kube.delete_pod(run.namespace, pod)
        if plan.create_pod is not None:
            await self.kube.create_pod(run.namespace, plan.create_pod)
        patch = status_patch(run.status_body, plan.status.to_body())
        if patch:
            await self.kube.patch_flowrun_status(run.namespace, run.name, patch)
        for event in plan.events:
            await self._post(body, event)
        if plan.wake_at is not None:
            self.wake(run.key, plan.wake_at)

    async def _post(self, body: dict[str, Any], event: Event) -> None:
        """Events are a report: failing to post one never stops a reconcile."""
        try:
            await self.kube.post_event(
                body, type=event.type, reason=event.reason, message=ergon.redact(event.message)
            )
        except Exception as exc:
            log.warning(
                "could not post event %s for %s: %s", event.reason, body["metadata"]["name"], exc
            )

    async def _end_flow(self, run: FlowRun, *, error: ergon.ErrorInfo | None = None) -> None:
        """End the flow record from the operator's side, failed with `error` or cancelled,
        fencing out any executor still alive."""
        try:
            if error is not None:
                await self.client.fail_flow(run.uid, error=error, owner=OWNER)
            else:
                await self.client.cancel(run.uid, force=True, owner=OWNER)
        except ergon.FlowNotFoundError:
            pass

    async def forget(self, run: FlowRun) -> None:
        """A deleted FlowRun: cancel its flow (its pods go with it, by owner reference)."""
        timer = self._timers.pop(run.key, None)
        if timer is not None:
            timer[1].cancel()
        flow = await self.store.get_flow(run.uid)
        if flow is not None and not flow.is_terminal:
            await self._end_flow(run)
            log.info("FlowRun %s/%s deleted: flow %s cancelled", run.namespace, run.name, run.uid)

    async def resync(self, namespace: str | None) -> None:
        """Reconcile every unfinished FlowRun (a safety net for missed events)."""
        for body in await self.kube.list_flowruns(namespace):
            run = FlowRun.parse(body)
            if run.phase not in TERMINAL_PHASES or run.deleting:
                self.poke(run.key)

    # --- Signals ----------------------------------------------------------------------------

    async def signal(self, namespace: str, name: str) -> None:
        body = await self.kube.get_signal(namespace, name)
        if body is None:
            return
        signal = Signal.parse(body)
        key = (namespace, signal.flow_run)
        run_body = await self.kube.get_flowrun(namespace, signal.flow_run)
        run = FlowRun.parse(run_body) if run_body is not None else None
        decision = decide_signal(signal, run, utcnow())
        if decision is None:
            if signal.phase != "Pending":
                self._pending_signals.get(key, set()).discard(name)
            return
        if decision.deliver_to is not None:
            await self.client.signal(
                decision.deliver_to, signal.signal, signal.payload, signal_id=signal.uid
            )
        await self.kube.patch_signal_status(namespace, name, decision.status)
        if decision.status["phase"] == "Pending":
            self._pending_signals.setdefault(key, set()).add(name)
        else:
            self._pending_signals.get(key, set()).discard(name)
        if decision.deliver_to is not None:
            self.poke(key)


def status_patch(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """A merge patch taking `current` to `desired` (None deletes a field)."""
    patch: dict[str, Any] = {}
    for key, value in desired.items():
        if value in (None, "") and current.get(key) in (None, ""):
            continue
        if current.get(key) != value:
            patch[key] = value
    return patch


def _in(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)
