"""Controllers that delete things: owner-reference garbage collection, namespace and CRD cleanup.

They follow kube-controller-manager's observable behaviour:

- an object whose owners are all gone is deleted (background propagation); a dangling reference
  next to a live owner is removed instead;
- ``propagationPolicy=Foreground`` leaves the owner visible with ``deletionTimestamp`` and the
  ``foregroundDeletion`` finalizer until every dependent with ``blockOwnerDeletion`` is gone;
- ``Orphan`` strips the owner references from dependents, then lets the owner go;
- a terminating Namespace has its contents deleted, then its ``kubernetes`` finalizer removed;
- a deleted CRD has its custom resources deleted, then its cleanup finalizer removed.

Store events feed a queue (listeners must not block) that coalesces repeated work for the same
key; one worker task drains it, so the controllers never race each other. Waiting is
event-driven: each removal re-checks only the owners, namespaces and CRDs it can affect.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

from .crds import CLEANUP_FINALIZER, CRD_KEY
from .errors import ApiError
from .registry import FOREGROUND, ORPHAN, DeleteOptions, Options, Registry
from .resources import TypeRegistry
from .store import Event, Store, name_of, namespace_of

JSON = dict[str, Any]
log = logging.getLogger(__name__)
_MANAGER = "kube-controller-manager"


class GarbageCollector:
    def __init__(self, store: Store, registry: Registry, types: TypeRegistry) -> None:
        self._store = store
        self._registry = registry
        self._types = types
        self._dependents: dict[str, set[str]] = {}  # owner uid -> dependent uids
        self._queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._queued: set[tuple[str, str]] = set()  # coalesces repeated work for one key
        self._terminating_namespaces: set[str] = set()
        self._terminating_crds: dict[str, str] = {}  # storage key of the CRs -> CRD name
        store.subscribe(self._on_event)

    # event intake (synchronous, cheap)

    def _on_event(self, event: Event) -> None:
        obj, meta = event.obj, event.obj["metadata"]
        uid = str(meta.get("uid"))
        old_owners = _owner_uids(event.old) if event.old is not None else set()
        new_owners = set() if event.type == "DELETED" else _owner_uids(obj)
        for owner in old_owners - new_owners:
            self._dependents.get(owner, set()).discard(uid)
        for owner in new_owners - old_owners:
            self._dependents.setdefault(owner, set()).add(uid)
        if event.type == "ADDED" and new_owners:
            self._enqueue(("owners", uid))
        if event.type == "DELETED":
            for dependent in self._dependents.pop(uid, set()):
                self._enqueue(("owners", dependent))
            for owner in old_owners:
                self._enqueue(("foreground", owner))
            namespace = namespace_of(obj)
            if namespace in self._terminating_namespaces:
                self._enqueue(("namespace", namespace))
            if event.storage_key in self._terminating_crds:
                self._enqueue(("crd", self._terminating_crds[event.storage_key]))
            return
        if not meta.get("deletionTimestamp"):
            return
        finalizers = meta.get("finalizers") or []
        if FOREGROUND in finalizers:
            self._enqueue(("foreground", uid))
        if ORPHAN in finalizers:
            self._enqueue(("orphan", uid))
        if event.storage_key == "namespaces":
            self._terminating_namespaces.add(meta["name"])
            self._enqueue(("namespace", meta["name"]))
        if event.storage_key == CRD_KEY and CLEANUP_FINALIZER in finalizers:
            self._enqueue(("crd", meta["name"]))

    def _enqueue(self, item: tuple[str, str]) -> None:
        if item not in self._queued:
            self._queued.add(item)
            self._queue.put_nowait(item)

    # the worker

    async def run(self) -> None:
        handlers = {
            "owners": self._check_owners,
            "foreground": self._foreground,
            "orphan": self._orphan,
            "namespace": self._namespace,
            "crd": self._crd,
        }
        while True:
            kind, key = await self._queue.get()
            self._queued.discard((kind, key))
            try:
                handlers[kind](key)
            except ApiError as exc:  # the object moved on meanwhile; a later event re-queues it
                log.debug("gc %s %s: %s", kind, key, exc)
            except Exception:
                log.exception("gc %s %s failed", kind, key)

    def _check_owners(self, uid: str) -> None:
        obj = self._store.by_uid(uid)
        if obj is None:
            return
        refs = obj["metadata"].get("ownerReferences") or []
        alive = [ref for ref in refs if self._store.by_uid(str(ref.get("uid"))) is not None]
        if len(alive) == len(refs):
            return
        if alive:
            self._mutate(obj, lambda o: o["metadata"].__setitem__("ownerReferences", alive))
            return
        if not obj["metadata"].get("deletionTimestamp"):
            self._delete(obj, "Background")

    def _foreground(self, owner_uid: str) -> None:
        owner = self._store.by_uid(owner_uid)
        if owner is None or FOREGROUND not in (owner["metadata"].get("finalizers") or []):
            return
        blocking = 0
        for uid in list(self._dependents.get(owner_uid, ())):
            dependent = self._store.by_uid(uid)
            if dependent is None:
                continue
            if not dependent["metadata"].get("deletionTimestamp"):
                self._delete(dependent, "Foreground")
            if self._store.by_uid(uid) is not None and _blocks(dependent, owner_uid):
                blocking += 1
        if blocking == 0:
            self._remove_finalizer(owner, FOREGROUND)

    def _orphan(self, owner_uid: str) -> None:
        owner = self._store.by_uid(owner_uid)
        if owner is None or ORPHAN not in (owner["metadata"].get("finalizers") or []):
            return
        for uid in list(self._dependents.get(owner_uid, ())):
            dependent = self._store.by_uid(uid)
            if dependent is not None:
                kept = [
                    r
                    for r in dependent["metadata"].get("ownerReferences") or []
                    if r.get("uid") != owner_uid
                ]
                self._mutate(dependent, lambda o, kept=kept: _set_owners(o, kept))
        self._remove_finalizer(owner, ORPHAN)

    def _namespace(self, name: str) -> None:
        namespace = self._store.get("namespaces", "", name)
        if namespace is None or not namespace["metadata"].get("deletionTimestamp"):
            self._terminating_namespaces.discard(name)
            return
        for key in list(self._store.namespaced_keys(name)):
            for obj in self._store.objects(key, name):
                if not obj["metadata"].get("deletionTimestamp"):
                    self._delete(obj, "Background")
        if self._store.count_in_namespace(name) == 0:
            self._terminating_namespaces.discard(name)
            self._mutate(namespace, _clear_spec_finalizers, subresource="finalize")

    def _crd(self, name: str) -> None:
        crd = self._store.get(CRD_KEY, "", name)
        if crd is None or not crd["metadata"].get("deletionTimestamp"):
            return
        spec = crd["spec"]
        storage_key = f"{spec['names']['plural']}.{spec['group']}"
        self._terminating_crds[storage_key] = name
        for obj in self._store.objects(storage_key):
            if not obj["metadata"].get("deletionTimestamp"):
                self._delete(obj, "Background")
        if self._store.count(storage_key) == 0:
            del self._terminating_crds[storage_key]
            self._remove_finalizer(crd, CLEANUP_FINALIZER)

    # helpers going through the registry, so events and finalizers behave as for any client

    def _delete(self, obj: JSON, propagation: str) -> None:
        rtype = self._types.by_storage_key(self._key_of(obj))
        if rtype is not None:
            self._registry.delete(
                rtype, namespace_of(obj), name_of(obj), DeleteOptions(propagation=propagation)
            )

    def _remove_finalizer(self, obj: JSON, finalizer: str) -> None:
        def drop(o: JSON) -> None:
            o["metadata"]["finalizers"] = [
                f for f in o["metadata"].get("finalizers") or [] if f != finalizer
            ]

        self._mutate(obj, drop)

    def _mutate(self, obj: JSON, change: Any, subresource: str = "") -> None:
        key = self._key_of(obj)
        rtype = self._types.by_storage_key(key)
        if rtype is None:
            return
        new = copy.deepcopy(self._registry.present(rtype, obj))
        change(new)
        self._registry.update(
            rtype,
            namespace_of(obj),
            name_of(obj),
            new,
            Options(field_manager=_MANAGER),
            subresource,
        )

    def _key_of(self, obj: JSON) -> str:
        where = self._store.locate(str(obj["metadata"].get("uid")))
        return where[0] if where is not None else ""


def _owner_uids(obj: JSON | None) -> set[str]:
    if obj is None:
        return set()
    return {
        str(ref.get("uid"))
        for ref in obj["metadata"].get("ownerReferences") or []
        if ref.get("uid")
    }


def _blocks(dependent: JSON, owner_uid: str) -> bool:
    return any(
        ref.get("uid") == owner_uid and ref.get("blockOwnerDeletion")
        for ref in dependent["metadata"].get("ownerReferences") or []
    )


def _clear_spec_finalizers(namespace: JSON) -> None:
    namespace.setdefault("spec", {})["finalizers"] = []


def _set_owners(obj: JSON, refs: list[JSON]) -> None:
    if refs:
        obj["metadata"]["ownerReferences"] = refs
    else:
        obj["metadata"].pop("ownerReferences", None)
