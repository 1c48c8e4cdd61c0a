"""The operator's picture of the cluster: FlowRuns, Signals and worker pods, fed by watches.

Reconciles read from here and never GET or LIST the API, so their cost in API requests does not
grow with the number of FlowRuns. The picture stays fresh because every watch event lands here,
and because the operator's own writes land here too, from the API's response, before the
reconcile that made them ends: the next reconcile never decides on a state older than its own
write.

Events and write responses can arrive out of order (the watch may deliver an older version after
a write's response); an object is replaced only by one at least as new, by `resourceVersion`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ergon_operator.resources import FLOWRUN_LABEL

Key = tuple[str, str]
Body = dict[str, Any]


def key_of(body: Body) -> Key:
    meta = body.get("metadata") or {}
    return (str(meta.get("namespace") or "default"), str(meta.get("name")))


def _uid(body: Body) -> str:
    return str((body.get("metadata") or {}).get("uid") or "")


def _version(body: Body) -> int | None:
    value = (body.get("metadata") or {}).get("resourceVersion")
    return int(value) if isinstance(value, str) and value.isdigit() else None


def _newer(new: Body, old: Body | None) -> bool:
    """Whether `new` may replace `old`: not the same version again (the watch echoing the
    operator's own write), not an older one. resourceVersions are compared as numbers when
    both are (etcd's are); otherwise any other version wins, as in client-go's informers."""
    if old is None or _uid(old) != _uid(new):
        return True
    if _raw_version(new) == _raw_version(old) and _raw_version(new) is not None:
        return False
    a, b = _version(new), _version(old)
    return a is None or b is None or a > b


def is_newer(new: Body, old: Body | None) -> bool:
    """Whether `new` may replace `old` in a cache (see `_newer`)."""
    return _newer(new, old)


def _raw_version(body: Body) -> object:
    return (body.get("metadata") or {}).get("resourceVersion")


LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def slim(body: Body, *, keep: tuple[str, ...]) -> Body:
    """`body` without what no decision reads: `managedFields` and kubectl's copy of the last
    applied manifest (together often larger than the rest), and top-level fields not in
    `keep`. Memory then grows with what the operator uses, not with what the API stores."""
    meta = dict(body.get("metadata") or {})
    meta.pop("managedFields", None)
    annotations = meta.get("annotations")
    if annotations and LAST_APPLIED in annotations:
        meta["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
    result = {k: v for k, v in body.items() if k in keep}
    result["metadata"] = meta
    return result


POD_METADATA = ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
POD_STATUS = ("phase", "reason", "startTime")


def slim_pod(body: Body) -> Body:
    """A worker pod as decisions read it, and nothing else: its identity and times, the ergon.dev
    labels, owner uids, the phase, each container's state, and an unschedulable condition. A
    pod's full status (conditions, IPs, image ids, container ids) is several times larger, and
    a cache of thousands of finished pods would mostly hold that."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    kept: Body = {k: meta[k] for k in POD_METADATA if k in meta}
    if meta.get("deletionTimestamp"):
        kept["deletionTimestamp"] = meta["deletionTimestamp"]
    kept["labels"] = {
        k: v for k, v in (meta.get("labels") or {}).items() if k.startswith("ergon.dev/")
    }
    kept["ownerReferences"] = [
        {"uid": r.get("uid"), "controller": bool(r.get("controller"))}
        for r in meta.get("ownerReferences") or []
    ]
    state: Body = {k: status[k] for k in POD_STATUS if k in status}
    containers = [{"state": c.get("state") or {}} for c in status.get("containerStatuses") or []]
    if containers:
        state["containerStatuses"] = containers
    unschedulable = [
        c
        for c in status.get("conditions") or []
        if c.get("type") == "PodScheduled" and c.get("status") == "False"
    ]
    if unschedulable:
        state["conditions"] = unschedulable
    return {"apiVersion": "v1", "kind": "Pod", "metadata": kept, "status": state}


OBJECT_FIELDS = ("apiVersion", "kind", "spec", "status")


def owner_uids(body: Body) -> list[str]:
    refs = (body.get("metadata") or {}).get("ownerReferences") or []
    return [str(r.get("uid")) for r in refs if r.get("uid")]


class Cache:
    """FlowRuns by key, uid and WorkerPool, Signals by their FlowRun, worker pods by owning
    FlowRun uid.

    `on_pod` hears every pod change (old body or None, new body or None): the concurrency
    limits count running pods from it.
    """

    def __init__(self) -> None:
        self.flowruns: dict[Key, Body] = {}
        self.flowrun_by_uid: dict[str, Key] = {}
        self.flowruns_by_pool: dict[Key, set[Key]] = {}  # (namespace, spec.workerPool) -> runs
        self.signals: dict[Key, Body] = {}
        self.signals_by_run: dict[Key, set[str]] = {}
        self.pods: dict[Key, Body] = {}
        self.pods_by_owner: dict[str, set[Key]] = {}
        self.pods_by_label: dict[Key, set[Key]] = {}  # (namespace, worker label) -> pods
        self.pod_listeners: list[Callable[[Body | None, Body | None], None]] = []

    # --- FlowRuns -----------------------------------------------------------------------------

    def put_flowrun(self, body: Body) -> bool:
        """Store a FlowRun; False if the cache already holds a newer version."""
        key = key_of(body)
        old = self.flowruns.get(key)
        if not _newer(body, old):
            return False
        if old is not None:
            if _uid(old) != _uid(body):
                self.flowrun_by_uid.pop(_uid(old), None)
            self._unindex_flowrun(key, old)
        body = slim(body, keep=OBJECT_FIELDS)
        self.flowruns[key] = body
        self.flowrun_by_uid[_uid(body)] = key
        pool = _pool_key(body)
        if pool is not None:
            self.flowruns_by_pool.setdefault(pool, set()).add(key)
        return True

    def drop_flowrun(self, body: Body) -> None:
        key = key_of(body)
        old = self.flowruns.get(key)
        if old is not None and _uid(old) == _uid(body):
            del self.flowruns[key]
            self.flowrun_by_uid.pop(_uid(old), None)
            self._unindex_flowrun(key, old)

    def _unindex_flowrun(self, key: Key, old: Body) -> None:
        pool = _pool_key(old)
        if pool is not None:
            _discard(self.flowruns_by_pool, pool, key)

    def flowrun(self, key: Key) -> Body | None:
        return self.flowruns.get(key)

    def key_for_uid(self, uid: str) -> Key | None:
        return self.flowrun_by_uid.get(uid)

    def flowruns_on(self, pool: Key) -> list[Body]:
        """The FlowRuns whose `spec.workerPool` names WorkerPool `pool` (namespace, name),
        whatever their phase. Never every FlowRun: a pool reconcile would cost per FlowRun."""
        keys = sorted(self.flowruns_by_pool.get(pool, ()))
        return [self.flowruns[k] for k in keys if k in self.flowruns]

    # --- Signals ------------------------------------------------------------------------------

    def put_signal(self, body: Body) -> bool:
        key = key_of(body)
        old = self.signals.get(key)
        if not _newer(body, old):
            return False
        if old is not None:
            self._unindex_signal(key, old)
        body = slim(body, keep=OBJECT_FIELDS)
        self.signals[key] = body
        self.signals_by_run.setdefault(_signal_run(body), set()).add(key[1])
        return True

    def drop_signal(self, body: Body) -> None:
        key = key_of(body)
        old = self.signals.pop(key, None)
        if old is not None:
            self._unindex_signal(key, old)

    def _unindex_signal(self, key: Key, old: Body) -> None:
        run = _signal_run(old)
        names = self.signals_by_run.get(run)
        if names is not None:
            names.discard(key[1])
            if not names:
                del self.signals_by_run[run]

    def signals_of(self, run: Key) -> list[Body]:
        """The Signals naming FlowRun `run` (namespace, name), whatever their phase."""
        names = sorted(self.signals_by_run.get(run, ()))
        return [self.signals[(run[0], n)] for n in names if (run[0], n) in self.signals]

    # --- pods ---------------------------------------------------------------------------------

    def put_pod(self, body: Body) -> bool:
        if FLOWRUN_LABEL not in ((body.get("metadata") or {}).get("labels") or {}):
            return False
        key = key_of(body)
        old = self.pods.get(key)
        if not _newer(body, old):
            return False
        if old is not None:
            self._unindex_pod(key, old)
        body = slim_pod(body)
        self.pods[key] = body
        for uid in owner_uids(body):
            self.pods_by_owner.setdefault(uid, set()).add(key)
        self.pods_by_label.setdefault(_label_key(body), set()).add(key)
        self._tell(old, body)
        return True

    def drop_pod(self, body: Body) -> None:
        key = key_of(body)
        old = self.pods.get(key)
        if old is None or _uid(old) != _uid(body):
            return
        del self.pods[key]
        self._unindex_pod(key, old)
        self._tell(old, None)

    def replace_pods(self, bodies: Iterable[Body]) -> None:
        """A fresh listing: everything not in it is gone."""
        fresh = {key_of(b): b for b in bodies}
        for key, old in list(self.pods.items()):
            if key not in fresh:
                self.drop_pod(old)
        for body in fresh.values():
            self.put_pod(body)

    def _unindex_pod(self, key: Key, old: Body) -> None:
        for uid in owner_uids(old):
            _discard(self.pods_by_owner, uid, key)
        _discard(self.pods_by_label, _label_key(old), key)

    def _tell(self, old: Body | None, new: Body | None) -> None:
        for listener in self.pod_listeners:
            listener(old, new)

    def pods_of(self, uid: str) -> list[Body]:
        """The worker pods whose ownerReferences name FlowRun `uid`."""
        return [self.pods[k] for k in sorted(self.pods_by_owner.get(uid, ())) if k in self.pods]

    def pods_for(self, uid: str, namespace: str, label: str) -> list[Body]:
        """The pods a decision about FlowRun `uid` needs: those it owns, and those of any
        other FlowRun of the same name (an earlier one, orphaned) whose names it must avoid.
        Never every pod of the namespace: that would cost per pod on every reconcile."""
        keys = self.pods_by_owner.get(uid, set()) | self.pods_by_label.get(
            (namespace, label), set()
        )
        return [self.pods[k] for k in sorted(keys) if k in self.pods]


def _pool_key(run: Body) -> Key | None:
    """(namespace, spec.workerPool) of a FlowRun on a pool; None for a pod-per-run FlowRun."""
    pool = (run.get("spec") or {}).get("workerPool")
    if not isinstance(pool, str) or not pool:
        return None
    return (str((run.get("metadata") or {}).get("namespace") or "default"), pool)


def _signal_run(body: Body) -> Key:
    namespace = str((body.get("metadata") or {}).get("namespace") or "default")
    return (namespace, str((body.get("spec") or {}).get("flowRun") or ""))


def _discard(index: dict[Any, set[Key]], at: object, key: Key) -> None:
    keys = index.get(at)
    if keys is not None:
        keys.discard(key)
        if not keys:
            del index[at]


def _label_key(pod: Body) -> Key:
    meta = pod.get("metadata") or {}
    return (
        str(meta.get("namespace") or "default"),
        str((meta.get("labels") or {}).get(FLOWRUN_LABEL)),
    )
