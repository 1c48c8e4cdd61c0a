"""Label-selected watches that feed the caches: worker pods, and worker pools' Deployments.

kopf can filter pods by label only after receiving them, so its watch would carry (and keep in
memory) every pod in the cluster. These ask the API server for the operator's own objects only
(a label selector: `ergon.dev/flowrun` for pods, `ergon.dev/workerpool` for Deployments): list,
page by page, then watch from the list's
resourceVersion with bookmarks (so a reconnect resumes where it left off), list again when the
server says the version is too old (410 Gone), and reconnect after errors with capped backoff.

The client is synchronous; the stream is read in a daemon thread that hands events to the loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable, Callable
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


def pod_watch(kube: Kube, *, namespace: str | None, **sinks: Callable[..., object]) -> LabelWatch:
    """The watch of worker pods (label `ergon.dev/flowrun`); `sinks`: put, drop, replace."""
    return LabelWatch(
        kind="Pod",
        lister=kube.list_worker_pods,
        opener=kube.watch_worker_pods,
        namespace=namespace,
        **sinks,
    )


def deployment_watch(
    kube: Kube, *, namespace: str | None, **sinks: Callable[..., object]
) -> LabelWatch:
    """The watch of worker pools' Deployments (label `ergon.dev/workerpool`)."""
    return LabelWatch(
        kind="Deployment",
        lister=kube.list_pool_deployments,
        opener=kube.watch_pool_deployments,
        namespace=namespace,
        **sinks,
    )
