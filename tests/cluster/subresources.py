"""Subresources with their own shapes: a pod's ``/log`` stream, ``/eviction``, ``/scale``, and
a ServiceAccount's ``/token`` (TokenRequest: an unsigned token naming the account, see authn.py).

(``/status`` is an ordinary write with different rules and lives in the registry.)
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .authn import service_account_token
from .codec import Target, json_response, read_body, request_options, truthy
from .errors import ApiError, bad_request, method_not_allowed, not_found
from .patching import JSON_PATCH, PatchError, json_patch, merge_patch
from .registry import DeleteOptions
from .resources import ResourceType
from .selectors import format_selector, selector_from_label_selector

if TYPE_CHECKING:
    from .cluster import Cluster

JSON = dict[str, Any]


async def pod_log(cluster: Cluster, request: web.Request, target: Target) -> web.StreamResponse:
    if request.method != "GET" or target.rtype.kind != "Pod" or target.name is None:
        raise method_not_allowed()
    query = request.query
    sink = cluster.kubelet.container_log(
        target.namespace or "", target.name, query.get("container"), truthy(query.get("previous"))
    )
    since = None
    if query.get("sinceSeconds"):
        since = datetime.now(UTC) - timedelta(seconds=int(query["sinceSeconds"]))
    elif query.get("sinceTime"):
        since = datetime.fromisoformat(query["sinceTime"].replace("Z", "+00:00"))
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        async for chunk in sink.stream(
            follow=truthy(query.get("follow")),
            tail=int(query["tailLines"]) if query.get("tailLines") else None,
            since=since,
            timestamps=truthy(query.get("timestamps")),
            limit_bytes=int(query["limitBytes"]) if query.get("limitBytes") else None,
        ):
            await response.write(chunk)
    except ConnectionResetError:
        pass
    return response


async def evict(cluster: Cluster, request: web.Request, target: Target) -> web.Response:
    if request.method != "POST" or target.rtype.kind != "Pod" or target.name is None:
        raise method_not_allowed()
    body = await read_body(cluster, request) or {}
    raw = body.get("deleteOptions") or {}
    options = DeleteOptions(
        grace_period=raw.get("gracePeriodSeconds"),
        precondition_uid=(raw.get("preconditions") or {}).get("uid"),
    )
    cluster.registry.delete(target.rtype, target.namespace or "", target.name, options)
    return json_response(
        {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201},
        201,
    )


async def scale(cluster: Cluster, request: web.Request, target: Target) -> web.Response:
    rtype, name, namespace = target.rtype, target.name or "", target.namespace or ""
    if "scale" not in rtype.subresources:
        raise not_found(rtype.plural, name, rtype.group)
    spec_path, status_path, selector_path = _scale_paths(rtype)
    obj = cluster.registry.present(rtype, cluster.registry.get(rtype, namespace, name))
    if request.method in ("PUT", "PATCH"):
        options = request_options(request)
        body = await read_body(cluster, request) or {}
        current = _scale_object(obj, spec_path, status_path, selector_path)
        if request.method == "PATCH":
            try:
                body = (
                    json_patch(current, body)
                    if request.content_type == JSON_PATCH
                    else merge_patch(current, body)
                )
            except PatchError as exc:
                raise ApiError(422, "Invalid", str(exc)) from exc
        replicas = (body.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int):
            raise bad_request("scale needs an integer spec.replicas")
        updated = json.loads(json.dumps(obj))
        _set_path(updated, spec_path, replicas)
        obj = cluster.registry.present(
            rtype, cluster.registry.update(rtype, namespace, name, updated, options)
        )
    return json_response(_scale_object(obj, spec_path, status_path, selector_path))


def _scale_paths(rtype: ResourceType) -> tuple[str, str, str | None]:
    if rtype.scale is not None:
        return rtype.scale.spec_replicas, rtype.scale.status_replicas, rtype.scale.label_selector
    return ".spec.replicas", ".status.replicas", None


def _get_path(obj: Any, path: str) -> Any:
    for part in path.strip(".").split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def _set_path(obj: JSON, path: str, value: Any) -> None:
    parts = path.strip(".").split(".")
    for part in parts[:-1]:
        obj = obj.setdefault(part, {})
    obj[parts[-1]] = value


def _scale_object(obj: JSON, spec_path: str, status_path: str, selector_path: str | None) -> JSON:
    meta = obj["metadata"]
    status: JSON = {"replicas": _get_path(obj, status_path) or 0}
    if selector_path:
        selector = _get_path(obj, selector_path)
        if selector:
            status["selector"] = selector
    elif isinstance((obj.get("spec") or {}).get("selector"), dict):
        status["selector"] = format_selector(selector_from_label_selector(obj["spec"]["selector"]))
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": _get_path(obj, spec_path) or 0},
        "status": status,
    }


async def token_request(cluster: Cluster, request: web.Request, target: Target) -> web.Response:
    """``POST serviceaccounts/{name}/token`` (``kubectl create token NAME``)."""
    if request.method != "POST" or target.rtype.kind != "ServiceAccount" or target.name is None:
        raise method_not_allowed()
    namespace, name = target.namespace or "", target.name
    account = cluster.registry.get(target.rtype, namespace, name)
    body = await read_body(cluster, request) or {}
    spec = dict(body.get("spec") or {})
    seconds = int(spec.get("expirationSeconds") or 3600)
    token, expires = service_account_token(
        namespace,
        name,
        str(account["metadata"].get("uid") or ""),
        audiences=list(spec.get("audiences") or []) or None,
        seconds=seconds,
    )
    spec["expirationSeconds"] = seconds
    expiry = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json_response(
        {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
            "status": {"token": token, "expirationTimestamp": expiry},
        },
        201,
    )


HANDLERS: dict[str, Callable[[Cluster, web.Request, Target], Awaitable[web.StreamResponse]]] = {
    "log": pod_log,
    "scale": scale,
    "eviction": evict,
    "token": token_request,
}
