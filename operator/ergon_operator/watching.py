"""Label-selected watches that feed the caches: worker pods, and worker pools' Deployments.

kopf can filter pods by label only after receiving them, so its watch would carry (and keep in
memory) every pod in the cluster. These ask the API server for the operator's own objects only
(a label selector: `ergon.dev/flowrun` for pods, `ergon.dev/workerpool` for Deployments): list,
page by page, then watch from the list's
resourceVersion with bookmarks (so a reconnect resumes where it left off), list again when the
server says the version is too old (410 Gone), and reconnect after errors with capped backoff.

The client is synchronous; the stream is read in a daemon thread that hands events to the loop.

An operator confined to a list of namespaces (`ERGON_WATCH_NAMESPACES`) cannot list across the
cluster (its Roles are per namespace): it runs one watch per namespace (`NamespacedWatches`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from ergon_operator.cache import Body
from ergon_operator.kube import Kube

log = logging.getLogger("ergon.operator")

WATCH_SECONDS = 290
MAX_BACKOFF = 30.0


class Gone(Exception):
    """The watch's resourceVersion is too old: list again."""


class LabelWatch:
    """List then watch one kind of labelled object into `put`/`drop`/`replace`; `synced` is set
    after the first complete listing (the reconcilers wait for it before deciding anything).
    `lister(namespace, continue_=token)` returns a page; `opener(namespace, resource_version=,
    timeout_seconds=)` opens the raw watch stream."""

    def __init__(
        self,
        *,
        kind: str,
        lister: Callable[..., Awaitable[dict[str, Any]]],
        opener: Callable[..., Any],
        namespace: str | None,
        put: Callable[[Body], object],
        drop: Callable[[Body], object],
        replace: Callable[[list[Body]], object],
    ) -> None:
        self.kind = kind
        self._lister, self._opener = lister, opener
        self.namespace = namespace
        self._put, self._drop, self._replace = put, drop, replace
        self.synced = asyncio.Event()
        self._response: Any = None
        self._stopping = False

    async def run(self) -> None:
        backoff = 1.0
        version: str | None = None
        while not self._stopping:
            try:
                if version is None:
                    version = await self._list()
                version = await self._watch(version)
                backoff = 1.0
            except Gone:
                version = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, ApiException) and exc.status == 410:
                    version = None  # too old to resume from: list again, at once
                    continue
                log.warning("watching %ss failed (%s); retrying in %.0f s", self.kind, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    async def _list(self) -> str:
        items: list[Body] = []
        token: str | None = None
        while True:
            page = await self._lister(self.namespace, continue_=token)
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            token = meta.get("continue") or None
            if token is None:
                break
        for item in items:  # list items carry no kind; the cache does not need it
            item.setdefault("kind", self.kind)
        self._replace(items)
        self.synced.set()
        return str(meta.get("resourceVersion") or "")

    async def _watch(self, version: str) -> str:
        """Follow the stream until the server ends it; returns the last version seen."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Body | BaseException | None] = asyncio.Queue()

        def read() -> None:
            try:
                response = self._opener(
                    self.namespace, resource_version=version, timeout_seconds=WATCH_SECONDS
                )
                self._response = response
                try:
                    for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
                        if line.strip():
                            loop.call_soon_threadsafe(events.put_nowait, json.loads(line))
                finally:
                    response.release_conn()
                loop.call_soon_threadsafe(events.put_nowait, None)
            except BaseException as exc:  # handed to the loop, re-raised there
                if not loop.is_closed():
                    loop.call_soon_threadsafe(events.put_nowait, exc)

        threading.Thread(target=read, name=f"ergon-{self.kind.lower()}-watch", daemon=True).start()
        while True:
            event = await events.get()
            if event is None:
                return version
            if isinstance(event, BaseException):
                raise event
            kind = event.get("type")
            body = event.get("object") or {}
            if kind == "ERROR":
                if body.get("code") == 410:
                    raise Gone()
                raise RuntimeError(f"watch error: {body.get('message')}")
            version = str((body.get("metadata") or {}).get("resourceVersion") or version)
            if kind == "BOOKMARK":
                continue
            if kind == "DELETED":
                self._drop(body)
            else:
                self._put(body)

    def stop(self) -> None:
        self._stopping = True
        response = self._response
        if response is not None:
            try:
                response.close()
            except Exception:  # best effort: the thread is a daemon anyway
                log.debug("closing the %s watch failed", self.kind, exc_info=True)


class NamespacedWatches:
    """One `LabelWatch` per namespace, seen as one watch: `run`, `stop`, and `synced` once every
    namespace is listed. A namespace's (re)listing stands for that namespace only, so the
    caller's `replace` (which stands for everything) is not used: what the namespace no longer
    has is dropped and the rest put, which is what `replace` does, per namespace. For that it
    keeps the key, uid and labels of each object it passed on (nothing else)."""

    def __init__(
        self,
        *,
        kind: str,
        lister: Callable[..., Awaitable[dict[str, Any]]],
        opener: Callable[..., Any],
        namespaces: Sequence[str],
        put: Callable[[Body], object],
        drop: Callable[[Body], object],
        replace: Callable[[list[Body]], object],
    ) -> None:
        del replace  # see the docstring
        self.kind = kind
        self.namespaces = tuple(namespaces)
        self._put, self._drop = put, drop
        self._known: dict[str, dict[str, Body]] = {ns: {} for ns in self.namespaces}
        self.watches = [
            LabelWatch(
                kind=kind,
                lister=lister,
                opener=opener,
                namespace=namespace,
                put=self._put_one,
                drop=self._drop_one,
                replace=functools.partial(self._replace_in, namespace),
            )
            for namespace in self.namespaces
        ]
        self.synced = asyncio.Event()

    async def run(self) -> None:
        async def all_synced() -> None:
            for watch in self.watches:
                await watch.synced.wait()
            self.synced.set()

        await asyncio.gather(all_synced(), *(watch.run() for watch in self.watches))

    def stop(self) -> None:
        for watch in self.watches:
            watch.stop()

    def _put_one(self, body: Body) -> object:
        meta = body.get("metadata") or {}
        known = self._known.setdefault(str(meta.get("namespace") or ""), {})
        known[str(meta.get("name"))] = {
            "metadata": {
                key: meta[key] for key in ("namespace", "name", "uid", "labels") if key in meta
            }
        }
        return self._put(body)

    def _drop_one(self, body: Body) -> object:
        meta = body.get("metadata") or {}
        known = self._known.get(str(meta.get("namespace") or ""), {})
        stub = known.get(str(meta.get("name")))
        if stub is not None and stub["metadata"].get("uid") == meta.get("uid"):
            del known[str(meta.get("name"))]
        return self._drop(body)

    def _replace_in(self, namespace: str, bodies: list[Body]) -> None:
        listed = {str((body.get("metadata") or {}).get("name")) for body in bodies}
        for name, stub in list(self._known.get(namespace, {}).items()):
            if name not in listed:
                self._drop_one(stub)
        for body in bodies:
            self._put_one(body)


Watch = LabelWatch | NamespacedWatches


def _watch(
    kind: str,
    lister: Callable[..., Awaitable[dict[str, Any]]],
    opener: Callable[..., Any],
    namespace: str | None,
    namespaces: Sequence[str],
    sinks: dict[str, Callable[..., object]],
) -> Watch:
    if len(namespaces) > 1:
        return NamespacedWatches(
            kind=kind, lister=lister, opener=opener, namespaces=namespaces, **sinks
        )
    return LabelWatch(
        kind=kind,
        lister=lister,
        opener=opener,
        namespace=namespaces[0] if namespaces else namespace,
        **sinks,
    )


def pod_watch(
    kube: Kube,
    *,
    namespace: str | None = None,
    namespaces: Sequence[str] = (),
    **sinks: Callable[..., object],
) -> Watch:
    """The watch of worker pods (label `ergon.dev/flowrun`); `sinks`: put, drop, replace.
    In `namespaces` (one watch each) if given, else in `namespace` (None: all namespaces)."""
    return _watch(
        "Pod", kube.list_worker_pods, kube.watch_worker_pods, namespace, namespaces, sinks
    )


def deployment_watch(
    kube: Kube,
    *,
    namespace: str | None = None,
    namespaces: Sequence[str] = (),
    **sinks: Callable[..., object],
) -> Watch:
    """The watch of worker pools' Deployments (label `ergon.dev/workerpool`); see `pod_watch`."""
    return _watch(
        "Deployment",
        kube.list_pool_deployments,
        kube.watch_pool_deployments,
        namespace,
        namespaces,
        sinks,
    )
