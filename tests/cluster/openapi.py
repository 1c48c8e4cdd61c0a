"""OpenAPI v3 documents, so ``kubectl apply`` validates on the server and merges correctly.

kubectl decides how to validate by reading ``/openapi/v3``: when the PATCH operation of a kind
lists the ``fieldValidation`` query parameter, it sends ``fieldValidation=Strict`` and lets the
server reject unknown fields (which ``registry.py`` does). It also reads the built-in kinds'
``x-kubernetes-patch-merge-key`` s here to compute strategic merge patches. Each group-version
document carries the operations for its resources and the schemas they reach; custom resources
get their CRD schema under the name a real server uses (``dev.ergon.v1alpha1.FlowRun``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .resources import ResourceType, TypeRegistry
from .schemas import KUBERNETES_VERSION, reachable_definitions

JSON = dict[str, Any]
_OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
_QUERY_PARAMS = ("dryRun", "fieldManager", "fieldValidation", "force", "pretty")


def group_version_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def schema_name(rtype: ResourceType) -> str:
    if rtype.definition and not rtype.custom:
        return rtype.definition
    reversed_group = ".".join(reversed(rtype.group.split(".")))
    return f"{reversed_group}.{rtype.version}.{rtype.kind}"


class OpenApi:
    """Builds documents on demand and caches them until the set of types changes."""

    def __init__(self, types: TypeRegistry) -> None:
        self._types = types
        self._cache_generation = -1
        self._documents: dict[str, bytes] = {}
        self._root: JSON | None = None

    def _refresh(self) -> None:
        if self._cache_generation != self._types.generation:
            self._documents.clear()
            self._root = None
            self._cache_generation = self._types.generation

    def document(self, path: str) -> bytes | None:
        """The v3 document for ``api/v1`` or ``apis/{group}/{version}``, as JSON bytes."""
        self._refresh()
        if path not in self._documents:
            built = self._build(path)
            if built is None:
                return None
            self._documents[path] = json.dumps(built, separators=(",", ":")).encode()
        return self._documents[path]

    def root(self) -> JSON:
        self._refresh()
        if self._root is not None:
            return self._root
        paths: JSON = {}
        group_versions = {(t.group, t.version) for t in self._types}
        for group, version in sorted(group_versions):
            path = group_version_path(group, version)
            document = self.document(path)
            digest = hashlib.sha512(document or b"").hexdigest()[:64].upper()
            paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
        self._root = {"paths": paths}
        return self._root

    def _build(self, path: str) -> JSON | None:
        parts = path.strip("/").split("/")
        if parts[:1] == ["api"] and len(parts) == 2:
            group, version = "", parts[1]
        elif parts[:1] == ["apis"] and len(parts) == 3:
            group, version = parts[1], parts[2]
        else:
            return None
        rtypes = self._types.resources(group, version)
        if not rtypes:
            return None
        schemas = reachable_definitions(
            [_OBJECT_META, *(t.definition for t in rtypes if t.definition and not t.custom)]
        )
        paths: JSON = {}
        for rtype in rtypes:
            if rtype.custom:
                schemas[schema_name(rtype)] = _custom_schema(rtype)
            paths.update(_paths(rtype))
        return {
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": f"v{KUBERNETES_VERSION}.0"},
            "paths": paths,
            "components": {"schemas": schemas},
        }


def _custom_schema(rtype: ResourceType) -> JSON:
    schema = dict(rtype.schema or {"type": "object"})
    properties = dict(schema.get("properties") or {})
    properties["apiVersion"] = {"type": "string"}
    properties["kind"] = {"type": "string"}
    properties["metadata"] = {"allOf": [{"$ref": f"#/components/schemas/{_OBJECT_META}"}]}
    schema["properties"] = properties
    schema["x-kubernetes-group-version-kind"] = [
        {"group": rtype.group, "version": rtype.version, "kind": rtype.kind}
    ]
    return schema


def _operation(rtype: ResourceType, action: str, verb_id: str, *, body: bool = False) -> JSON:
    ref = {"$ref": f"#/components/schemas/{schema_name(rtype)}"}
    op: JSON = {
        "operationId": f"{verb_id}{rtype.kind}",
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {
            "group": rtype.group,
            "version": rtype.version,
            "kind": rtype.kind,
        },
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": ref}}}
        },
    }
    if body:
        op["requestBody"] = {"content": {"application/json": {"schema": ref}}}
        op["parameters"] = [
            {"name": name, "in": "query", "schema": {"type": "string"}, "uniqueItems": True}
            for name in _QUERY_PARAMS
        ]
    return op


def _paths(rtype: ResourceType) -> JSON:
    prefix = "/" + group_version_path(rtype.group, rtype.version)
    if rtype.namespaced:
        prefix += "/namespaces/{namespace}"
    collection, item = f"{prefix}/{rtype.plural}", f"{prefix}/{rtype.plural}/{{name}}"
    out: JSON = {
        collection: {
            "get": _operation(rtype, "list", "list"),
            "post": _operation(rtype, "post", "create", body=True),
        },
        item: {
            "get": _operation(rtype, "get", "read"),
            "put": _operation(rtype, "put", "replace", body=True),
            "patch": _operation(rtype, "patch", "patch", body=True),
            "delete": _operation(rtype, "delete", "delete"),
        },
    }
    if rtype.has_status_subresource:
        out[f"{item}/status"] = {
            "get": _operation(rtype, "get", "readStatus"),
            "put": _operation(rtype, "put", "replaceStatus", body=True),
            "patch": _operation(rtype, "patch", "patchStatus", body=True),
        }
    return out
