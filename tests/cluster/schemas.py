"""Schemas of built-in kinds, and one way to walk any schema (built-in or CRD) by field path.

The built-in definitions come from ``kubernetes-validate``, which ships the OpenAPI definitions of
each Kubernetes release converted to JSON Schema. :func:`builtin_definitions` converts them back
to the OpenAPI flavour the API server publishes (``$ref: #/components/schemas/...``, single
``type``, int-or-string as a format), once per process.

:class:`SchemaNode` is how the patching, apply, pruning and validation code asks "what is at this
field?" without caring whether the schema came from a definition with ``$ref`` s or from a CRD.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

JSON = dict[str, Any]
KUBERNETES_VERSION = "1.33"
_REF_PREFIX = "#/components/schemas/"
_OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


@functools.cache
def builtin_definitions() -> Mapping[str, JSON]:
    """All definitions of the Kubernetes release this server claims to be, OpenAPI-style."""
    root = resources.files("kubernetes_validate") / "kubernetes-json-schema"
    folder = root / f"v{KUBERNETES_VERSION}.0-local"
    raw = json.loads((folder / "_definitions.json").read_text())["$defs"]
    out = {name: _to_openapi(schema) for name, schema in raw.items()}
    out["io.k8s.apimachinery.pkg.util.intstr.IntOrString"] = {
        "type": "string",
        "format": "int-or-string",
        "x-kubernetes-int-or-string": True,
    }
    out["io.k8s.apimachinery.pkg.api.resource.Quantity"] = {
        "type": "string",
        "format": "quantity",
        "x-kubernetes-int-or-string": True,
    }
    return out


def _to_openapi(node: Any) -> Any:
    if isinstance(node, list):
        return [_to_openapi(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: JSON = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str):
            out[key] = _REF_PREFIX + value.rsplit("/", 1)[-1]
        elif key == "type" and isinstance(value, list):
            concrete = [t for t in value if t != "null"]
            if len(concrete) == 1:
                out[key] = concrete[0]
        elif key in ("properties", "patternProperties", "definitions") and isinstance(value, dict):
            out[key] = {name: _to_openapi(sub) for name, sub in value.items()}
        else:
            out[key] = _to_openapi(value)
    return out


def ref_name(schema: JSON) -> str | None:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith(_REF_PREFIX):
        return ref[len(_REF_PREFIX) :]
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], dict):
        return ref_name(all_of[0])
    return None


class SchemaNode:
    """A position in a schema; following ``$ref`` is invisible to the caller."""

    __slots__ = ("schema",)

    def __init__(self, schema: JSON) -> None:
        seen = 0
        while (name := ref_name(schema)) is not None and seen < 50:
            schema = builtin_definitions().get(name, {})
            seen += 1
        self.schema = schema

    @classmethod
    def for_definition(cls, name: str) -> SchemaNode:
        return cls(builtin_definitions().get(name, {}))

    @classmethod
    def for_custom_resource(cls, schema: JSON) -> SchemaNode:
        """A CRD's version schema, with ``metadata`` described as the ObjectMeta it really is."""
        properties = dict(schema.get("properties") or {})
        properties["metadata"] = {"$ref": _REF_PREFIX + _OBJECT_META}
        properties.setdefault("apiVersion", {"type": "string"})
        properties.setdefault("kind", {"type": "string"})
        return cls({**schema, "type": "object", "properties": properties})

    @property
    def type(self) -> str | None:
        value = self.schema.get("type")
        return value if isinstance(value, str) else None

    @property
    def is_free_form(self) -> bool:
        """Anything goes below here: no structure declared, or unknown fields explicitly kept."""
        if self.schema.get("x-kubernetes-preserve-unknown-fields"):
            return True
        if self.type is None and not self.schema.get("properties") and "items" not in self.schema:
            return True
        return (
            self.type == "object"
            and not self.schema.get("properties")
            and "additionalProperties" not in self.schema
        )

    def field(self, name: str) -> SchemaNode | None:
        """The schema of key ``name`` of an object here, or None if the key is unknown."""
        properties = self.schema.get("properties") or {}
        if name in properties:
            return SchemaNode(properties[name])
        additional = self.schema.get("additionalProperties")
        if isinstance(additional, dict):
            return SchemaNode(additional)
        if additional is True or self.is_free_form:
            return SchemaNode({"x-kubernetes-preserve-unknown-fields": True})
        return None

    def items(self) -> SchemaNode | None:
        items = self.schema.get("items")
        if isinstance(items, dict):
            return SchemaNode(items)
        if self.is_free_form:
            return SchemaNode({"x-kubernetes-preserve-unknown-fields": True})
        return None

    @property
    def list_type(self) -> str:
        """``atomic``, ``set`` or ``map``; patch-merge-key lists without list-type act as maps."""
        declared = self.schema.get("x-kubernetes-list-type")
        if isinstance(declared, str):
            return declared
        return "map" if self.patch_merge_key else "atomic"

    @property
    def map_keys(self) -> list[str]:
        keys = self.schema.get("x-kubernetes-list-map-keys")
        if isinstance(keys, list) and keys:
            return [str(k) for k in keys]
        return [self.patch_merge_key] if self.patch_merge_key else []

    @property
    def patch_merge_key(self) -> str | None:
        key = self.schema.get("x-kubernetes-patch-merge-key")
        return key if isinstance(key, str) else None

    @property
    def patch_strategies(self) -> frozenset[str]:
        value = self.schema.get("x-kubernetes-patch-strategy")
        return frozenset(value.split(",")) if isinstance(value, str) else frozenset()

    @property
    def map_type(self) -> str:
        value = self.schema.get("x-kubernetes-map-type")
        return value if isinstance(value, str) else "granular"


def reachable_definitions(roots: list[str]) -> dict[str, JSON]:
    """The definitions ``roots`` refer to, transitively: what one OpenAPI document must carry."""
    definitions = builtin_definitions()
    out: dict[str, JSON] = {}
    pending = [name for name in roots if name in definitions]
    while pending:
        name = pending.pop()
        if name in out:
            continue
        out[name] = definitions[name]
        pending.extend(n for n in _refs(definitions[name]) if n not in out and n in definitions)
    return out


def _refs(node: Any) -> list[str]:
    found: list[str] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            name = current.get("$ref")
            if isinstance(name, str) and name.startswith(_REF_PREFIX):
                found.append(name[len(_REF_PREFIX) :])
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)
    return found
