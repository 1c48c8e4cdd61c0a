"""kopf handlers: thin adapters that feed the reconciler's caches. All decisions live elsewhere.

Only event handlers are used (no kopf daemons, timers or deletion handlers), so kopf adds no
finalizers: deleting a FlowRun is never blocked, even while the operator is down. kopf's watches
of FlowRuns and Signals (their initial listing included) fill the caches; worker pods are
watched by the reconciler itself (`watching.pod_watch`), filtered by label on the API server,
since kopf would receive every pod in the cluster and filter them afterwards.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

import ergon
from ergon_operator.kube import Kube, load_config
from ergon_operator.reconciler import Reconciler
from ergon_operator.resources import GROUP, VERSION
from ergon_operator.settings import Settings

log = logging.getLogger("ergon.operator")

KOPF_IDLE_TIMEOUT = 0.2


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config: Settings = memo["settings"]
    # kopf would log, and post as a Kubernetes Event, every handler call ("Handler succeeded"):
    # one API request per watch event for nothing. The reconciler posts the Events that matter.
    settings.posting.enabled = False
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    # kopf keeps a worker task per object for `idle_timeout` (5 s) after its last event, waiting
    # for more. Our handlers only feed a cache, so a new worker for a later event costs nothing,
    # while one idle worker per FlowRun after a restart's listing costs memory the process keeps:
    # with 5,000 FlowRuns, RSS after a restart went from 289 to 228 MiB with this.
    settings.queueing.idle_timeout = KOPF_IDLE_TIMEOUT
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.persistence.finalizer = "ergon.dev/kopf"  # unused: no handler needs a finalizer
    if config.watch_namespaces:
        # Exactly these namespaces (no patterns): kopf need not list or watch Namespaces (nor
        # CRDs), which a namespaced install's Roles do not allow.
        settings.scanning.disabled = True
    load_config()
    # Opening a store connects lazily: an unreachable store only delays reconciles (logged
    # once), it does not stop the operator from starting, watching and answering probes.
    store = ergon.open_store(config.store)
    reconciler = Reconciler(config, store, Kube(), workers=config.workers)
    memo["store"] = store
    memo["reconciler"] = reconciler
    await reconciler.start()
    log.info("ergon operator started (namespaces: %s)", ", ".join(config.watch_namespaces) or "all")


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    reconciler: Reconciler | None = memo.get("reconciler")
    if reconciler is not None:
        await reconciler.stop()
    store: ergon.Store | None = memo.get("store")
    if store is not None:
        await store.close()


@kopf.on.event(GROUP, VERSION, "flowruns")
async def flowrun_changed(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    reconciler: Reconciler = memo["reconciler"]
    reconciler.flowrun_event(event.get("type"), dict(event["object"]))


@kopf.on.event(GROUP, VERSION, "workerpools")
async def workerpool_changed(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    reconciler: Reconciler = memo["reconciler"]
    reconciler.workerpool_event(event.get("type"), dict(event["object"]))


@kopf.on.event(GROUP, VERSION, "signals")
async def signal_changed(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    reconciler: Reconciler = memo["reconciler"]
    reconciler.signal_event(event.get("type"), dict(event["object"]))


# Liveness and readiness are served by ergon_operator.health (not kopf's probes: a store read
# in a liveness probe hangs while Postgres is down and restarts the operator in a loop).
