"""The resource endpoints: get, list, watch, create, update, patch, delete and subresources.

``server.py`` routes a URL to a :class:`Target` (group, version, namespace, resource, name,
subresource); the functions here read the query string and body the way kube-apiserver does,
call the registry, and encode the answer: objects, lists, ``Table`` s for kubectl, ``Status``
objects, and the watch stream (newline-delimited JSON events over a chunked response).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Any

from aiohttp import web

from . import subresources
from .cluster import Cluster
from .codec import Target, json_response, read_body, request_options, truthy, wants_table
from .errors import ApiError, bad_request, method_not_allowed, not_found, unsupported_media_type
from .patching import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_PATCH,
)
from .registry import DeleteOptions, Options
from .resources import ResourceType
from .selectors import (
    fields_match,
    labels_match,
    parse_field_selector,
    parse_label_selector,
)
from .store import Event, name_of, namespace_of
from .tables import to_table

JSON = dict[str, Any]
log = logging.getLogger(__name__)
_PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH, APPLY_PATCH)


def _respond(
    cluster: Cluster, target: Target, obj: JSON, options: Options, status: int = 200
) -> web.Response:
    headers = {}
    if options.warnings:
        headers["Warning"] = ", ".join(f"299 - {json.dumps(w)}" for w in options.warnings)
    return json_response(cluster.registry.present(target.rtype, obj), status, headers)


# dispatch


async def handle(cluster: Cluster, request: web.Request, target: Target) -> web.StreamResponse:
    method, rtype = request.method, target.rtype
    special = subresources.HANDLERS.get(target.subresource)
    if special is not None:
        return await special(cluster, request, target)
    if target.subresource and target.subresource not in rtype.subresources:
        raise not_found(rtype.plural, target.name or "", rtype.group)
    if target.name is None:
        if method == "GET":
            if truthy(request.query.get("watch")):
                return await watch(cluster, request, target)
            return list_objects(cluster, request, target)
        if method == "POST":
            return await create(cluster, request, target)
        if method == "DELETE":
            return await delete_collection(cluster, request, target)
        raise method_not_allowed()
    namespace = target.namespace or ""
    if method == "GET":
        obj = cluster.registry.get(rtype, namespace, target.name)
        if wants_table(request):
            return json_response(
                to_table(
                    rtype,
                    [cluster.registry.present(rtype, obj)],
                    request.query.get("includeObject", "Metadata"),
                    {"resourceVersion": obj["metadata"]["resourceVersion"]},
                )
            )
        return json_response(cluster.registry.present(rtype, obj))
    options = request_options(request)
    if method == "PUT":
        body = await read_body(cluster, request)
        updated = cluster.registry.update(
            rtype, namespace, target.name, body, options, target.subresource
        )
        return _respond(cluster, target, updated, options)
    if method == "PATCH":
        patch_type = request.content_type
        if patch_type not in _PATCH_TYPES:
            raise unsupported_media_type(patch_type, list(_PATCH_TYPES))
        body = await read_body(cluster, request)
        existed = cluster.store.get(rtype.storage_key, namespace, target.name) is not None
        patched = cluster.registry.patch(
            rtype, namespace, target.name, patch_type, body, options, target.subresource
        )
        return _respond(cluster, target, patched, options, 200 if existed else 201)
    if method == "DELETE":
        return await delete(cluster, request, target)
    raise method_not_allowed()


async def create(cluster: Cluster, request: web.Request, target: Target) -> web.Response:
    rtype = target.rtype
    options = request_options(request)
    body = await read_body(cluster, request)
    if rtype.kind in ("SelfSubjectAccessReview", "SelfSubjectRulesReview"):
        return json_response(_review(rtype, body), 201)
    if rtype.namespaced and target.namespace is None:
        raise method_not_allowed("POST needs a namespace in the URL for namespaced resources")
    created = cluster.registry.create(rtype, target.namespace or "", body, options)
    return _respond(cluster, target, created, options, 201)


def _review(rtype: ResourceType, body: Any) -> JSON:
    """This server authorizes everything; reviews say so."""
    review = dict(body or {})
    review.update(apiVersion=rtype.api_version, kind=rtype.kind)
    review.setdefault("metadata", {})
    if rtype.kind == "SelfSubjectAccessReview":
        review["status"] = {"allowed": True, "reason": "the test cluster allows everything"}
    else:
        review["status"] = {
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": False,
        }
    return review


# reading


def _selected(cluster: Cluster, request: web.Request, target: Target) -> list[JSON]:
    rtype = target.rtype
    labels = parse_label_selector(request.query.get("labelSelector"))
    extra = frozenset(rtype.extra.get("selectable", ()))
    fields = parse_field_selector(request.query.get("fieldSelector"), rtype.kind, extra)
    namespace = target.namespace if rtype.namespaced else None
    out = []
    for obj in cluster.store.objects(rtype.storage_key, namespace):
        shown = cluster.registry.present(rtype, obj)
        if labels_match(labels, shown) and fields_match(fields, shown):
            out.append(shown)
    return out


def list_objects(cluster: Cluster, request: web.Request, target: Target) -> web.Response:
    rtype = target.rtype
    rv = request.query.get("resourceVersion")
    match = request.query.get("resourceVersionMatch")
    if match == "Exact" and rv and int(rv) != cluster.store.rv:
        raise ApiError(
            410,
            "Expired",
            f"resourceVersion {rv} is too old for an exact list; "
            "the test cluster serves only the latest state",
        )
    items = _selected(cluster, request, target)
    meta: JSON = {"resourceVersion": str(cluster.store.rv)}
    items, meta = _paginate(items, request, meta)
    if wants_table(request):
        return json_response(
            to_table(rtype, items, request.query.get("includeObject", "Metadata"), meta)
        )
    return json_response(
        {"kind": rtype.list_kind, "apiVersion": rtype.api_version, "metadata": meta, "items": items}
    )


def _paginate(items: list[JSON], request: web.Request, meta: JSON) -> tuple[list[JSON], JSON]:
    token = request.query.get("continue")
    if token:
        try:
            after = json.loads(base64.urlsafe_b64decode(token.encode()))["after"]
        except (ValueError, KeyError) as exc:
            raise bad_request("continue key is not valid") from exc
        items = [o for o in items if [namespace_of(o), name_of(o)] > after]
    limit = int(request.query.get("limit") or 0)
    if limit > 0 and len(items) > limit:
        last = items[limit - 1]
        cursor = {"after": [namespace_of(last), name_of(last)]}
        meta = {
            **meta,
            "continue": base64.urlsafe_b64encode(json.dumps(cursor).encode()).decode(),
            "remainingItemCount": len(items) - limit,
        }
        items = items[:limit]
    return items, meta


async def watch(cluster: Cluster, request: web.Request, target: Target) -> web.StreamResponse:
    rtype = target.rtype
    labels = parse_label_selector(request.query.get("labelSelector"))
    fields = parse_field_selector(
        request.query.get("fieldSelector"), rtype.kind, frozenset(rtype.extra.get("selectable", ()))
    )
    rv = request.query.get("resourceVersion")
    since = None if rv in (None, "", "0") else _int(rv)
    # Streaming lists (client-go's WatchList): the current state as ADDED events, then a
    # bookmark annotated "initial-events-end", then changes.
    initial_events = truthy(request.query.get("sendInitialEvents"))
    if initial_events:
        since = None
    table = wants_table(request)

    def selected(obj: JSON) -> bool:
        shown = cluster.registry.present(rtype, obj)
        return labels_match(labels, shown) and fields_match(fields, shown)

    def transform(event: Event) -> Event | None:
        if not labels and not fields:
            return event
        now = event.type != "DELETED" and selected(event.obj)
        before = event.old is not None and selected(event.old)
        if event.type == "DELETED":
            return event if before else None
        if now and not before:
            return Event("ADDED", event.obj, None, event.rv, event.storage_key)
        if before and not now:
            return Event("DELETED", event.obj, event.old, event.rv, event.storage_key)
        return event if now else None

    response = web.StreamResponse(
        headers={"Content-Type": "application/json", "Cache-Control": "no-cache, private"}
    )
    response.enable_chunked_encoding()
    namespace = target.namespace if rtype.namespaced else None
    try:
        stream = cluster.store.watch(rtype.storage_key, namespace, since, transform)
    except ApiError as exc:  # too old: the real server answers 200 and then an ERROR event
        await response.prepare(request)
        await response.write(json.dumps({"type": "ERROR", "object": exc.status()}).encode() + b"\n")
        return response
    initial = (
        []
        if since is not None
        else [o for o in cluster.store.objects(rtype.storage_key, namespace) if selected(o)]
    )

    def encode(kind: str, obj: JSON) -> bytes:
        shown = cluster.registry.present(rtype, obj)
        if table:
            shown = to_table(rtype, [shown], request.query.get("includeObject", "Metadata"), {})
        return json.dumps({"type": kind, "object": shown}, separators=(",", ":")).encode() + b"\n"

    timeout = float(request.query.get("timeoutSeconds") or cluster.config.watch_timeout)
    bookmarks = truthy(request.query.get("allowWatchBookmarks"))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    next_bookmark = loop.time() + cluster.config.bookmark_interval
    try:
        await response.prepare(request)
        for obj in initial:
            await response.write(encode("ADDED", obj))
        if initial_events:
            await response.write(_bookmark(rtype, cluster.store.rv, initial_events_end=True))
        while True:
            now = loop.time()
            if now >= deadline:
                break
            if not stream.queue.empty():
                event = stream.queue.get_nowait()
            elif bookmarks and now >= next_bookmark:
                # Only with nothing left to send: every event up to the store's version has
                # been written, so a client resuming from the bookmark misses none. (A bookmark
                # sent past queued events would make a watch that ends before they are sent
                # resume after them: the real server sends bookmarks in order, too.)
                await response.write(_bookmark(rtype, cluster.store.rv))
                next_bookmark = loop.time() + cluster.config.bookmark_interval
                continue
            else:
                wait = min(deadline, next_bookmark if bookmarks else deadline) - now
                try:
                    event = await asyncio.wait_for(stream.queue.get(), timeout=max(wait, 0))
                except TimeoutError:
                    continue
            if event is None:
                break
            await response.write(encode(event.type, event.obj))
    except ConnectionResetError:
        pass  # the client went away; so does the watch
    finally:
        cluster.store.unwatch(stream)
    return response


def _bookmark(rtype: ResourceType, rv: int, *, initial_events_end: bool = False) -> bytes:
    meta: JSON = {"resourceVersion": str(rv)}
    if initial_events_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    obj = {"kind": rtype.kind, "apiVersion": rtype.api_version, "metadata": meta}
    return json.dumps({"type": "BOOKMARK", "object": obj}).encode() + b"\n"


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError as exc:
        raise bad_request(f'invalid resource version "{value}"') from exc


# deleting


async def _delete_options(cluster: Cluster, request: web.Request) -> DeleteOptions:
    body = await read_body(cluster, request) or {}
    if not isinstance(body, dict):
        raise bad_request("DeleteOptions must be an object")
    query = request.query
    propagation = query.get("propagationPolicy") or body.get("propagationPolicy")
    orphan = truthy(query.get("orphanDependents")) or body.get("orphanDependents")
    if propagation is None and orphan:
        propagation = "Orphan"
    grace = query.get("gracePeriodSeconds", body.get("gracePeriodSeconds"))
    preconditions = body.get("preconditions") or {}
    return DeleteOptions(
        propagation=propagation,
        grace_period=None if grace is None else int(grace),
        precondition_uid=preconditions.get("uid"),
        precondition_rv=preconditions.get("resourceVersion"),
        dry_run=bool(query.get("dryRun") or body.get("dryRun")),
    )


async def delete(cluster: Cluster, request: web.Request, target: Target) -> web.Response:
    rtype, name = target.rtype, target.name or ""
    options = await _delete_options(cluster, request)
    obj, gone = cluster.registry.delete(rtype, target.namespace or "", name, options)
    if gone and rtype.kind not in ("Pod",) and not rtype.custom:
        return json_response(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {
                    "name": name,
                    "group": rtype.group,
                    "kind": rtype.plural,
                    "uid": obj["metadata"].get("uid"),
                },
            }
        )
    return json_response(cluster.registry.present(rtype, obj))


async def delete_collection(cluster: Cluster, request: web.Request, target: Target) -> web.Response:
    options = await _delete_options(cluster, request)
    deleted = []
    for obj in _selected(cluster, request, target):
        try:
            result, _ = cluster.registry.delete(
                target.rtype, namespace_of(obj), name_of(obj), options
            )
        except ApiError as exc:
            if exc.code != 404:
                raise
            continue
        deleted.append(cluster.registry.present(target.rtype, result))
    return json_response(
        {
            "kind": target.rtype.list_kind,
            "apiVersion": target.rtype.api_version,
            "metadata": {"resourceVersion": str(cluster.store.rv)},
            "items": deleted,
        }
    )
