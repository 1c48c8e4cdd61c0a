"""kopf handlers: thin adapters that feed the reconciler's caches. All decisions live elsewhere.

Only event handlers are used (no kopf daemons, timers or deletion handlers), so kopf adds no
finalizers: deleting a FlowRun is never blocked, even while the operator is down. kopf's watches
of FlowRuns and Signals (their initial listing included) fill the caches; worker pods are
watched by the reconciler itself (`watching.pod_watch`), filtered by label on the API server,
since kopf would receive every pod in the cluster and filter them afterwards.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import kopf

from ergon_operator.kube import Kube, load_config
from ergon_operator.reconciler import Reconciler
from ergon_operator.resources import GROUP, VERSION
from ergon_operator.settings import Settings
from ergon_operator.stores import StoreRouter, router_for

log = logging.getLogger("ergon.operator")

KOPF_IDLE_TIMEOUT = 0.2
SHUTDOWN_DEADLINE = 20.0  # seconds from kopf's cleanup to a forced exit


def _exit_after_deadline() -> None:
    log.error("shutdown did not finish within %g s; exiting now", SHUTDOWN_DEADLINE)
    logging.shutdown()
    os._exit(0)


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
    # once), it does not stop the operator from starting, watching and answering probes. With
    # a store per namespace, each opens when its namespace is first seen.
    kube = Kube()
    stores = router_for(config, kube)
    reconciler = Reconciler(config, stores, kube, workers=config.workers)
    memo["stores"] = stores
    memo["reconciler"] = reconciler
    await reconciler.start()
    log.info(
        "ergon operator started (namespaces: %s; store: %s)",
        ", ".join(config.watch_namespaces) or "all",
        f"a schema per namespace ({config.tenant_secrets})" if config.per_namespace else "shared",
    )


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    # A stop that hangs (a watch stream that never closes, a task that ignores cancellation)
    # must not keep a replica that no longer acts alive: the Pod would sit in Terminating until
    # its grace period, and a test waiting for the exit would time out. Exit regardless after
    # the deadline.
    watchdog = threading.Timer(SHUTDOWN_DEADLINE, _exit_after_deadline)
    watchdog.daemon = True
    watchdog.start()
    reconciler: Reconciler | None = memo.get("reconciler")
    if reconciler is not None:
        await reconciler.stop()
    stores: StoreRouter | None = memo.get("stores")
    if stores is not None:
        await stores.close()


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
