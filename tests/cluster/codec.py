"""Reading requests and writing responses the way kube-apiserver does.

The request target (which resource a URL names), query-string options, body decoding (JSON,
YAML for apply patches, Kubernetes protobuf) and JSON responses, shared by ``handlers.py`` and
``subresources.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml
from aiohttp import web

from . import protobuf
from .errors import bad_request, unsupported_media_type
from .patching import APPLY_PATCH
from .registry import Options
from .resources import ResourceType

if TYPE_CHECKING:
    from .cluster import Cluster


@dataclass(frozen=True)
class Target:
    rtype: ResourceType
    namespace: str | None  # None: all namespaces (or cluster-scoped)
    name: str | None
    subresource: str


def truthy(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1", "yes")


def json_response(
    body: Any,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def wants_table(request: web.Request) -> bool:
    return "as=Table" in request.headers.get("Accept", "")


def request_options(request: web.Request) -> Options:
    query = request.query
    agent = request.headers.get("User-Agent", "unknown")
    manager = query.get("fieldManager") or agent.split("/", 1)[0] or "unknown"
    validation = query.get("fieldValidation") or "Ignore"
    if validation not in ("Ignore", "Warn", "Strict"):
        raise bad_request(f"fieldValidation must be Ignore, Warn or Strict, not {validation!r}")
    return Options(
        field_manager=manager,
        field_validation=validation,
        dry_run=bool(query.get("dryRun")),
        force=truthy(query.get("force")),
    )


async def read_body(cluster: Cluster, request: web.Request) -> Any:
    raw = await request.read()
    content_type = request.content_type
    if not raw:
        return None
    if content_type == protobuf.CONTENT_TYPE:
        schema = cluster.protobuf_schema()
        if schema is None:
            raise unsupported_media_type(content_type, ["application/json", "application/yaml"])
        try:
            return protobuf.decode_body(raw, schema)
        except protobuf.ProtobufError as exc:
            raise bad_request(f"error decoding protobuf body: {exc}") from exc
    if "protobuf" in content_type or "cbor" in content_type:
        raise unsupported_media_type(content_type, ["application/json", "application/yaml"])
    try:
        if content_type in (APPLY_PATCH, "application/yaml"):
            return yaml.safe_load(raw)
        return json.loads(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise bad_request(f"error decoding request body: {exc}") from exc
