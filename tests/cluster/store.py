"""Objects in memory, the global resourceVersion, and watch fan-out.

Everything the API serves lives here as plain JSON dicts, treated as immutable once stored: a
write always stores a new dict, so a reader (a list response, a watch event being serialised) may
hold on to what it got without copying. Each write takes the next value of one global counter as
its resourceVersion, like etcd's revision, so versions are comparable across resource types.

Watches are fed from a bounded per-resource history: a watch from resourceVersion N replays the
events after N still in history and then follows live ones; asking for a version older than the
history answers ``410 Expired`` (see :meth:`Store.watch`), which is what tells clients to re-list.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import expired

JSON = dict[str, Any]
ObjectKey = tuple[str, str, str]  # storage key, namespace ("" if cluster-scoped), name


@dataclass(frozen=True)
class Event:
    """A committed change. ``old`` is the object before it (None for ADDED)."""

    type: str
    obj: JSON
    old: JSON | None
    rv: int
    storage_key: str


EventFilter = Callable[[Event], "Event | None"]
Listener = Callable[[Event], None]


@dataclass(eq=False)
class Watch:
    """One open watch: a queue the store fills and the HTTP layer drains."""

    storage_key: str
    namespace: str | None
    transform: EventFilter
    queue: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue)

    def offer(self, event: Event) -> None:
        if self.namespace is not None and namespace_of(event.obj) != self.namespace:
            return
        shown = self.transform(event)
        if shown is not None:
            self.queue.put_nowait(shown)

    def close(self) -> None:
        """Ask the reader to end the stream (the server is shutting down)."""
        self.queue.put_nowait(None)


def namespace_of(obj: JSON) -> str:
    return str(obj.get("metadata", {}).get("namespace") or "")


def name_of(obj: JSON) -> str:
    return str(obj.get("metadata", {}).get("name") or "")


class Store:
    """The object database. Synchronous: every method runs to completion on the event loop."""

    def __init__(self, history_size: int = 10_000) -> None:
        self.rv = 0
        self._history_size = history_size
        self._objects: dict[str, dict[str, dict[str, JSON]]] = {}
        self._history: dict[str, deque[Event]] = {}
        self._compacted: dict[str, int] = {}
        self._watches: dict[str, set[Watch]] = {}
        self._listeners: list[Listener] = []
        self._uids: dict[str, ObjectKey] = {}
        self._namespace_counts: Counter[str] = Counter()

    # reads

    def get(self, storage_key: str, namespace: str, name: str) -> JSON | None:
        return self._objects.get(storage_key, {}).get(namespace, {}).get(name)

    def objects(self, storage_key: str, namespace: str | None = None) -> list[JSON]:
        """Objects sorted by namespace then name, the order etcd's keys give a real server."""
        by_namespace = self._objects.get(storage_key, {})
        if namespace is not None:
            chosen = by_namespace.get(namespace, {})
            return [chosen[name] for name in sorted(chosen)]
        return [
            by_namespace[ns][name]
            for ns in sorted(by_namespace)
            for name in sorted(by_namespace[ns])
        ]

    def count(self, storage_key: str) -> int:
        return sum(len(names) for names in self._objects.get(storage_key, {}).values())

    def count_in_namespace(self, namespace: str) -> int:
        return self._namespace_counts[namespace]

    def storage_keys(self) -> list[str]:
        return [key for key, by_ns in self._objects.items() if by_ns]

    def namespaced_keys(self, namespace: str) -> Iterator[str]:
        for key, by_namespace in self._objects.items():
            if by_namespace.get(namespace):
                yield key

    def locate(self, uid: str) -> ObjectKey | None:
        return self._uids.get(uid)

    def by_uid(self, uid: str) -> JSON | None:
        where = self._uids.get(uid)
        return None if where is None else self.get(*where)

    # writes

    def put(self, storage_key: str, obj: JSON) -> JSON:
        """Store ``obj`` (a fresh dict, now owned by the store) under a new resourceVersion."""
        meta = obj["metadata"]
        namespace, name = str(meta.get("namespace") or ""), str(meta["name"])
        self.rv += 1
        meta["resourceVersion"] = str(self.rv)
        names = self._objects.setdefault(storage_key, {}).setdefault(namespace, {})
        old = names.get(name)
        names[name] = obj
        if old is None:
            self._namespace_counts[namespace] += 1
        self._uids[str(meta["uid"])] = (storage_key, namespace, name)
        self._emit(Event("ADDED" if old is None else "MODIFIED", obj, old, self.rv, storage_key))
        return obj

    def remove(self, storage_key: str, obj: JSON) -> JSON:
        """Delete the object; the DELETED event carries a copy with the deletion's version."""
        meta = obj["metadata"]
        namespace, name = str(meta.get("namespace") or ""), str(meta["name"])
        names = self._objects.get(storage_key, {}).get(namespace, {})
        old = names.pop(name, None)
        if old is None:
            return obj
        if not names:
            del self._objects[storage_key][namespace]
        self._namespace_counts[namespace] -= 1
        self._uids.pop(str(meta.get("uid")), None)
        self.rv += 1
        final = {**old, "metadata": {**old["metadata"], "resourceVersion": str(self.rv)}}
        self._emit(Event("DELETED", final, old, self.rv, storage_key))
        return final

    def drop_resource(self, storage_key: str) -> None:
        """Forget a whole resource (its CRD is gone) without events, as the real server does."""
        for names in self._objects.pop(storage_key, {}).values():
            for obj in names.values():
                self._uids.pop(str(obj["metadata"].get("uid")), None)
                self._namespace_counts[namespace_of(obj)] -= 1
        self._history.pop(storage_key, None)
        for watch in self._watches.pop(storage_key, set()):
            watch.close()

    # watching

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener`` synchronously after every commit (in-process controllers)."""
        self._listeners.append(listener)

    def watch(
        self,
        storage_key: str,
        namespace: str | None,
        since: int | None,
        transform: EventFilter,
    ) -> Watch:
        """Open a watch delivering events after resourceVersion ``since``.

        ``since=None`` means "from now". The caller sends synthetic ADDED events for the current
        state itself when the request asks for them (no resourceVersion, or "0").
        """
        if since is not None and since < self._compacted.get(storage_key, 0):
            raise expired(f"too old resource version: {since} ({self._compacted[storage_key]})")
        watch = Watch(storage_key, namespace, transform)
        if since is not None:
            for event in self._history.get(storage_key, ()):
                if event.rv > since:
                    watch.offer(event)
        self._watches.setdefault(storage_key, set()).add(watch)
        return watch

    def unwatch(self, watch: Watch) -> None:
        self._watches.get(watch.storage_key, set()).discard(watch)

    def compact(self) -> int:
        """Forget all history, as etcd compaction does: older versions now answer 410."""
        for key in set(self._history) | set(self._objects):
            self._compacted[key] = self.rv
        self._history.clear()
        return self.rv

    def close_watches(self) -> None:
        for watches in self._watches.values():
            for watch in watches:
                watch.close()

    def _emit(self, event: Event) -> None:
        history = self._history.get(event.storage_key)
        if history is None:
            history = self._history[event.storage_key] = deque()
        if len(history) >= self._history_size:
            self._compacted[event.storage_key] = history.popleft().rv
        history.append(event)
        for watch in self._watches.get(event.storage_key, ()):
            watch.offer(event)
        for listener in self._listeners:
            listener(event)
