"""The HTTP face of the cluster: routing, content negotiation, errors, and the small endpoints.

Every request goes through one catch-all route: :func:`resolve` maps the URL to a resource
target the way kube-apiserver's path scheme does (``/api/v1/namespaces/{ns}/pods/{name}/log``,
``/apis/{group}/{version}/{plural}``, ...), and ``handlers.py`` does the rest. Discovery,
OpenAPI, ``/version``, health checks and the ``/testing/...`` hooks are answered here. Any
:class:`~.errors.ApiError` leaves as a ``Status`` object with its HTTP code.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from . import admission_policy, discovery
from .authn import ADMIN_TOKEN, user_of
from .cluster import Cluster
from .codec import Target, json_response
from .errors import ApiError, bad_request, no_such_path
from .handlers import handle
from .requestlog import RequestCounter
from .schemas import KUBERNETES_VERSION

JSON = dict[str, Any]
log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

VERSION_INFO = {
    "major": "1",
    "minor": KUBERNETES_VERSION.split(".")[1],
    "emulationMajor": "1",
    "emulationMinor": KUBERNETES_VERSION.split(".")[1],
    "gitVersion": f"v{KUBERNETES_VERSION}.0",
    "gitCommit": "0" * 40,
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.24.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}
_NAMESPACE_SUBRESOURCES = ("status", "finalize")


def resolve(cluster: Cluster, path: str) -> Target | None:
    """The resource a URL names, or None when it names none (404)."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace: str | None = None
    if (
        len(rest) >= 3
        and rest[0] == "namespaces"
        and not (len(rest) == 3 and rest[2] in _NAMESPACE_SUBRESOURCES)
    ):
        namespace, rest = rest[1], rest[2:]
    if not 1 <= len(rest) <= 3:
        return None
    rtype = cluster.types.get(group, version, rest[0])
    if rtype is None:
        return None
    if namespace is not None and not rtype.namespaced:
        return None
    name = rest[1] if len(rest) > 1 else None
    if rtype.namespaced and name is not None and namespace is None:
        return None
    return Target(rtype, namespace, name, rest[2] if len(rest) > 2 else "")


def build_app(cluster: Cluster, address: Callable[[], str]) -> web.Application:
    """The aiohttp application; ``address`` gives ``host:port`` once the socket is bound."""

    requests = RequestCounter()

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.monotonic()
        requests.record(
            method=request.method,
            path=request.path,
            agent=request.headers.get("User-Agent", ""),
            watch=request.query.get("watch") in ("true", "1"),
            user=user_of(request.headers.get("Authorization")),
        )
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except ApiError as exc:
            status = exc.code
            return json_response(exc.status(), exc.code)
        except asyncio.CancelledError:
            status = 499  # the client went away (a watch or log stream ended by its reader)
            raise
        except web.HTTPException:
            raise
        except Exception as exc:
            log.exception("%s %s failed", request.method, request.path_qs)
            error = ApiError(500, "InternalError", f"Internal error occurred: {exc}")
            return json_response(error.status(), 500)
        finally:
            log.debug(
                "%s %s -> %d (%.1f ms) [%s]",
                request.method,
                request.path_qs,
                status,
                (time.monotonic() - started) * 1000,
                request.headers.get("User-Agent", ""),
            )

    async def dispatch(request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        if path == "/testing/requests":
            reset = request.query.get("reset") in ("true", "1")
            return json_response(requests.snapshot(reset=reset))
        fixed = _fixed_endpoint(cluster, request, path, address)
        if fixed is not None:
            return await fixed
        target = resolve(cluster, path)
        if target is None:
            raise no_such_path()
        return await _admitting(cluster, request, target)

    app = web.Application(middlewares=[errors], client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app


async def _admitting(cluster: Cluster, request: web.Request, target: Target) -> web.StreamResponse:
    """Serve a resource request with what ValidatingAdmissionPolicies see of it (who asks, for
    which resource; ``admission_policy.py``) and their Warn actions' ``Warning`` headers added to
    the answer, a refusal included, as kube-apiserver does."""
    context = admission_policy.RequestContext(
        store=cluster.store,
        types=cluster.types,
        user=user_of(request.headers.get("Authorization")),
        group=target.rtype.group,
        resource=target.rtype.plural,
        subresource=target.subresource,
        dry_run=bool(request.query.get("dryRun")),
        field_manager=request.query.get("fieldManager", ""),
    )
    with admission_policy.serving(context):
        try:
            response = await handle(cluster, request, target)
        except ApiError as exc:
            if not context.warnings:
                raise
            response = json_response(exc.status(), exc.code)
    if context.warnings and not response.prepared:
        for warning in context.warnings:
            response.headers.add("Warning", f"299 - {json.dumps(warning)}")
    return response


def _fixed_endpoint(
    cluster: Cluster,
    request: web.Request,
    path: str,
    address: Callable[[], str],
) -> Awaitable[web.StreamResponse] | None:
    async def answer(body: Any, status: int = 200) -> web.StreamResponse:
        if isinstance(body, bytes):
            return web.Response(body=body, status=status, content_type="application/json")
        if isinstance(body, str):
            return web.Response(text=body, status=status, content_type="text/plain")
        return json_response(body, status)

    parts = [p for p in path.split("/") if p]
    if path in ("/healthz", "/livez", "/readyz"):
        return answer("ok")
    if path == "/version":
        return answer(VERSION_INFO)
    if path == "/api":
        return answer(discovery.api_versions(address()))
    if path == "/apis":
        return answer(discovery.api_group_list(cluster.types))
    if parts[:1] == ["apis"] and len(parts) == 2:
        api_group = discovery.api_group(cluster.types, parts[1])
        return answer(api_group) if api_group is not None else None
    if (parts[:1] == ["api"] and len(parts) == 2) or (parts[:1] == ["apis"] and len(parts) == 3):
        group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
        listing = discovery.resource_list(cluster.types, group, version)
        return answer(listing) if listing is not None else None
    if path == "/openapi/v2":
        return _openapi_v2(request)
    if path == "/openapi/v3":
        return answer(cluster.openapi.root())
    if parts[:2] == ["openapi", "v3"]:
        document = cluster.openapi.document("/".join(parts[2:]))
        return answer(document) if document is not None else None
    if parts[:1] == ["testing"]:
        return _testing(cluster, request, parts[1:])
    return None


def _openapi_v2(request: web.Request) -> Awaitable[web.StreamResponse]:
    """An OpenAPI v2 document without definitions.

    Clients use v3 here; kubectl fetches v2 only to validate on the client what server-side
    validation cannot (a ``kind: List`` document), and skips kinds v2 does not describe.
    """

    async def answer() -> web.StreamResponse:
        if "protobuf" in request.headers.get("Accept", ""):
            title, version = b"Kubernetes", f"v{KUBERNETES_VERSION}.0".encode()
            info = b"\x0a" + bytes([len(title)]) + title + b"\x12" + bytes([len(version)]) + version
            body = b"\x0a\x032.0" + b"\x12" + bytes([len(info)]) + info
            return web.Response(body=body, content_type=_OPENAPI_V2_PROTOBUF)
        return json_response(
            {
                "swagger": "2.0",
                "info": {"title": "Kubernetes", "version": f"v{KUBERNETES_VERSION}.0"},
                "paths": {},
                "definitions": {},
            }
        )

    return answer()


_OPENAPI_V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"


async def _testing(cluster: Cluster, request: web.Request, parts: list[str]) -> web.StreamResponse:
    """Hooks for tests: ``POST /testing/pods/{ns}/{name}/kill`` and ``POST /testing/compact``."""
    if request.method != "POST":
        raise ApiError(405, "MethodNotAllowed", "testing hooks take POST")
    if parts == ["compact"]:
        return json_response({"resourceVersion": str(cluster.store.compact())})
    if len(parts) == 4 and parts[0] == "pods" and parts[3] == "kill":
        query = request.query
        exit_code = query.get("exitCode")
        cluster.kubelet.kill(
            parts[1],
            parts[2],
            query.get("mode", "kill"),
            reason=query.get("reason"),
            exit_code=int(exit_code) if exit_code else None,
        )
        return json_response({"killed": f"{parts[1]}/{parts[2]}"})
    raise bad_request(f"unknown testing hook /testing/{'/'.join(parts)}")


def kubeconfig(server: str, namespace: str = "default") -> str:
    """A kubeconfig for kubectl, helm, kopf and the ``kubernetes`` client (JSON is valid YAML)."""
    name = "ergon-test"
    return (
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "preferences": {},
                "clusters": [{"name": name, "cluster": {"server": server}}],
                "users": [{"name": name, "user": {"token": ADMIN_TOKEN}}],
                "contexts": [
                    {
                        "name": name,
                        "context": {"cluster": name, "user": name, "namespace": namespace},
                    }
                ],
                "current-context": name,
            },
            indent=2,
        )
        + "\n"
    )
