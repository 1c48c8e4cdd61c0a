"""kopf handlers: thin adapters that poke the reconciler. All decisions live elsewhere.

Only event handlers are used (no kopf daemons, timers or deletion handlers), so kopf adds no
finalizers: deleting a FlowRun is never blocked, even while the operator is down. The operator
cancels the flow when it sees the deletion; pods go with their FlowRun by owner reference.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import kopf

import ergon
from ergon_operator.kube import Kube, load_config
from ergon_operator.reconciler import Reconciler
from ergon_operator.resources import FLOWRUN_LABEL, GROUP, VERSION, FlowRun
from ergon_operator.settings import Settings

log = logging.getLogger("ergon.operator")


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config: Settings = memo["settings"]
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.persistence.finalizer = "ergon.dev/kopf"  # unused: no handler needs a finalizer
    if config.watch_namespace:
        settings.scanning.disabled = True
    load_config()
    store = ergon.open_store(config.store)
    await store.get_flow("ergon-operator-startup-check")  # fail fast on an unreachable store
    reconciler = Reconciler(config, store, Kube())
    memo["store"] = store
    memo["reconciler"] = reconciler
    memo["resync"] = asyncio.create_task(_resync_forever(reconciler, config))
    log.info("ergon operator started (namespace: %s)", config.watch_namespace or "all")


async def _resync_forever(reconciler: Reconciler, config: Settings) -> None:
    while True:
        await asyncio.sleep(config.resync_seconds)
        try:
            await reconciler.resync(config.watch_namespace)
        except Exception:
            log.exception("periodic resync failed")


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("resync")
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    reconciler: Reconciler | None = memo.get("reconciler")
    if reconciler is not None:
        await reconciler.stop()
    store: ergon.Store | None = memo.get("store")
    if store is not None:
        await store.close()


@kopf.on.event(GROUP, VERSION, "flowruns")
async def flowrun_changed(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    reconciler: Reconciler = memo["reconciler"]
    run = FlowRun.parse(event["object"])
    if event.get("type") == "DELETED":
        await reconciler.forget(run)
        return
    observed = run.status.observed_generation
    if event.get("type") == "MODIFIED" and observed == run.generation and not run.deleting:
        return  # only our own status patch: nothing new to act on
    reconciler.poke(run.key)


@kopf.on.event("", "v1", "pods", labels={FLOWRUN_LABEL: kopf.PRESENT})
async def pod_changed(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    meta = event["object"].get("metadata") or {}
    owner = (meta.get("labels") or {}).get(FLOWRUN_LABEL)
    if owner:
        memo["reconciler"].poke((meta.get("namespace") or "default", owner))


@kopf.on.event(GROUP, VERSION, "signals")
async def signal_changed(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    if event.get("type") == "DELETED":
        return
    meta = event["object"].get("metadata") or {}
    phase = (event["object"].get("status") or {}).get("phase")
    if phase in ("Delivered", "Rejected"):
        return
    await memo["reconciler"].signal(meta.get("namespace") or "default", meta.get("name"))


@kopf.on.probe(id="store")
async def store_reachable(memo: kopf.Memo, **_: Any) -> str:
    store: ergon.Store = memo["store"]
    await store.get_flow("ergon-operator-probe")
    return "ok"
