"""The semantics of create, update, patch and delete: what kube-apiserver's generic registry does.

This layer turns a request into a stored object: it fills ``uid``, ``creationTimestamp`` and
``generation``; defaults, prunes and validates; keeps status and spec apart for types with a
status subresource (each write path ignores the other half, and only spec changes bump
``generation``); checks ``resourceVersion`` preconditions (409 on stale writes); tracks
managedFields; and implements deletion with finalizers, ``deletionTimestamp``, propagation
policies and graceful pod deletion. HTTP parsing lives in ``server.py``; controllers (garbage
collector, namespace and CRD cleanup, kubelet) call this same API in-process.
"""

from __future__ import annotations

import copy
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from . import apply as ssa
from . import events
from .admission import admit_pod
from .errors import (
    ApiError,
    Cause,
    already_exists,
    bad_request,
    conflict,
    forbidden,
    invalid,
    not_found,
    unsupported_media_type,
)
from .patching import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_PATCH,
    PatchError,
    json_patch,
    merge_patch,
    strategic_merge,
)
from .resources import ResourceType
from .schemas import SchemaNode
from .store import Store
from .strategies import Strategies
from .structural import default_and_prune, unknown_fields
from .validation import validate_custom

JSON = dict[str, Any]

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_SYSTEM_META = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "selfLink",
)


@dataclass
class Options:
    """Per-request knobs from the query string; ``warnings`` is filled for the response headers."""

    field_manager: str = "unknown"
    field_validation: str = "Ignore"
    dry_run: bool = False
    force: bool = False
    warnings: list[str] = field(default_factory=list)


@dataclass
class DeleteOptions:
    propagation: str | None = None
    grace_period: int | None = None
    precondition_uid: str | None = None
    precondition_rv: str | None = None
    dry_run: bool = False


def timestamp(at: datetime | None = None) -> str:
    return (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def schema_node(rtype: ResourceType) -> SchemaNode:
    """The schema that patching, apply and validation walk for this type (cached on the type)."""
    node = rtype.extra.get("node")
    if node is None:
        if rtype.custom and rtype.schema is not None:
            node = SchemaNode.for_custom_resource(rtype.schema)
        else:
            node = SchemaNode.for_definition(rtype.definition or "")
        rtype.extra["node"] = node
    assert isinstance(node, SchemaNode)
    return node


class Registry:
    def __init__(self, store: Store, strategies: Strategies) -> None:
        self.store = store
        self.strategies = strategies
        # Set by the CRD controller: validates and completes CRD objects before they are stored.
        self.crd_hook: Callable[[JSON, JSON | None], list[Cause]] | None = None

    # presentation: the stored form vs. the version a request speaks

    def present(self, rtype: ResourceType, obj: JSON) -> JSON:
        if rtype.storage == "events" and rtype.group:
            return events.to_events_v1(obj)
        if obj.get("apiVersion") != rtype.api_version:
            return {**obj, "apiVersion": rtype.api_version}
        return obj

    def _to_storage(self, rtype: ResourceType, obj: JSON) -> JSON:
        if rtype.storage == "events" and rtype.group:
            return events.to_core(obj)
        if rtype.custom and rtype.storage_version:
            obj["apiVersion"] = f"{rtype.group}/{rtype.storage_version}"
        return obj

    # reads

    def get(self, rtype: ResourceType, namespace: str, name: str) -> JSON:
        obj = self.store.get(rtype.storage_key, namespace if rtype.namespaced else "", name)
        if obj is None:
            raise not_found(rtype.plural, name, rtype.group)
        return obj

    # create

    def create(
        self,
        rtype: ResourceType,
        namespace: str,
        body: Any,
        options: Options,
        *,
        managed_fields: list[JSON] | None = None,
    ) -> JSON:
        """Create (POST); ``managed_fields`` are kept as given (a create by server-side apply)."""
        obj = self._decode(rtype, body)
        meta = obj["metadata"]
        namespace = self._settle_namespace(rtype, namespace, meta)
        if not meta.get("name") and meta.get("generateName"):
            suffix = "".join(random.choices(_GENERATE_ALPHABET, k=5))
            meta["name"] = f"{meta['generateName']}{suffix}"
        name = str(meta.get("name") or "")
        for key in (*_SYSTEM_META, "resourceVersion"):
            meta.pop(key, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = timestamp()
        if rtype.has_generation or rtype.custom:
            meta["generation"] = 1
        meta.pop("managedFields", None)
        if rtype.custom and rtype.has_status_subresource:
            obj.pop("status", None)
        self._normalize(rtype, obj, options)
        self.strategies.prepare_create(rtype, obj)
        self._validate(rtype, obj, None)
        if name and self.store.get(rtype.storage_key, namespace, name) is not None:
            raise already_exists(rtype.plural, name, rtype.group)
        if rtype.kind == "Pod" and not rtype.group:
            admit_pod(self.store, namespace, obj)
        if namespace:
            self._check_namespace_open(namespace)
        if managed_fields is None:
            ssa.record_update(None, obj, schema_node(rtype), manager=options.field_manager)
        elif managed_fields:
            meta["managedFields"] = managed_fields
        self.strategies.after_write(rtype, obj)
        if options.dry_run:
            meta["resourceVersion"] = str(self.store.rv)
            return obj
        return self.store.put(rtype.storage_key, self._to_storage(rtype, obj))

    # update

    def update(
        self,
        rtype: ResourceType,
        namespace: str,
        name: str,
        body: Any,
        options: Options,
        subresource: str = "",
        *,
        managed: bool = False,
    ) -> JSON:
        """Replace an object (PUT); ``managed``: managedFields are already computed (apply)."""
        old = self.get(rtype, namespace, name)
        new = self._decode(rtype, body)
        meta = new["metadata"]
        if meta.get("name", name) != name:
            raise bad_request(
                f"the name of the object ({meta.get('name')}) does not match the "
                f"name on the URL ({name})"
            )
        meta["name"] = name
        self._settle_namespace(rtype, namespace, meta)
        expected_rv = meta.get("resourceVersion")
        if expected_rv and str(expected_rv) != old["metadata"]["resourceVersion"]:
            raise conflict(rtype.plural, name, rtype.group)
        presented_old = self.present(rtype, old)
        new = self._to_storage(rtype, new)
        return self._commit_update(rtype, old, new, options, subresource, managed, presented_old)

    def _commit_update(
        self,
        rtype: ResourceType,
        old: JSON,
        new: JSON,
        options: Options,
        subresource: str,
        managed: bool,
        presented_old: JSON,
    ) -> JSON:
        meta, old_meta = new["metadata"], old["metadata"]
        for key in _SYSTEM_META:
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        if not managed:
            meta["managedFields"] = old_meta.get("managedFields") or []
        if subresource == "status":
            status = new.get("status")
            new = {
                **copy.deepcopy(old),
                "metadata": {**copy.deepcopy(old_meta), "managedFields": meta["managedFields"]},
            }
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = status
        elif rtype.has_status_subresource:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        self._normalize(rtype, new, options)
        if old_meta.get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
            if added:
                raise invalid(
                    rtype.kind,
                    old_meta["name"],
                    rtype.group,
                    [
                        Cause(
                            "FieldValueForbidden",
                            "Forbidden: no new finalizers can be added if the object is being "
                            "deleted, "
                            f"found new finalizers {sorted(added)}",
                            "metadata.finalizers",
                        )
                    ],
                )
        self.strategies.prepare_update(rtype, new, old)
        if "generation" in old_meta and _spec_changed(rtype, old, new):
            meta["generation"] = int(old_meta["generation"]) + 1
        self._validate(rtype, new, old)
        if _same(old, new):
            return old
        if not managed:
            ssa.record_update(
                presented_old,
                new,
                schema_node(rtype),
                manager=options.field_manager,
                subresource=subresource,
            )
        self.strategies.after_write(rtype, new)
        if options.dry_run:
            return new
        if _ready_to_go(new):
            return self.store.remove(rtype.storage_key, new)
        return self.store.put(rtype.storage_key, new)

    # patch

    def patch(
        self,
        rtype: ResourceType,
        namespace: str,
        name: str,
        patch_type: str,
        body: Any,
        options: Options,
        subresource: str = "",
    ) -> JSON:
        if patch_type == APPLY_PATCH:
            return self._apply(rtype, namespace, name, body, options, subresource)
        old = self.present(rtype, self.get(rtype, namespace, name))
        try:
            if patch_type == MERGE_PATCH:
                if not isinstance(body, dict):
                    raise bad_request("merge patch must be a JSON object")
                patched = merge_patch(old, body)
            elif patch_type == JSON_PATCH:
                patched = json_patch(old, body)
            elif patch_type == STRATEGIC_PATCH:
                if rtype.custom:
                    raise unsupported_media_type(patch_type, [JSON_PATCH, MERGE_PATCH, APPLY_PATCH])
                patched = strategic_merge(old, body, schema_node(rtype))
            else:
                raise bad_request(f"unsupported patch type {patch_type}")
        except PatchError as exc:
            raise ApiError(422, "Invalid", str(exc)) from exc
        if not isinstance(patched, dict):
            raise bad_request("patch produced a non-object")
        patched.setdefault("metadata", {})
        if patched["metadata"].get("resourceVersion") in (None, ""):
            patched["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        return self.update(rtype, namespace, name, patched, options, subresource)

    def _apply(
        self,
        rtype: ResourceType,
        namespace: str,
        name: str,
        body: Any,
        options: Options,
        subresource: str,
    ) -> JSON:
        if not isinstance(body, dict):
            raise bad_request("apply patch must be an object")
        if options.field_manager in ("", "unknown") or options.field_manager is None:
            raise bad_request("PATCH requests of type apply require a fieldManager")
        config = copy.deepcopy(body)
        config.setdefault("metadata", {})
        config_name = config["metadata"].get("name")
        if config_name not in (None, name):
            raise bad_request(
                f"the name of the object ({config_name}) does not match the name "
                f"on the URL ({name})"
            )
        config["metadata"]["name"] = name
        node = schema_node(rtype)
        live_stored = self.store.get(rtype.storage_key, namespace if rtype.namespaced else "", name)
        if live_stored is None:
            if subresource:
                raise not_found(rtype.plural, name, rtype.group)
            created = ssa.apply(None, config, node, manager=options.field_manager, force=True)
            entries = created["metadata"].get("managedFields") or []
            return self.create(rtype, namespace, created, options, managed_fields=entries)
        live = self.present(rtype, live_stored)
        if rtype.has_status_subresource:
            if subresource == "status":
                kept = ("apiVersion", "kind", "metadata", "status")
                config = {k: v for k, v in config.items() if k in kept}
            else:
                config.pop("status", None)
        merged = ssa.apply(
            live,
            config,
            node,
            manager=options.field_manager,
            force=options.force,
            subresource=subresource,
        )
        merged["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
        return self.update(rtype, namespace, name, merged, options, subresource, managed=True)

    # delete

    def delete(
        self,
        rtype: ResourceType,
        namespace: str,
        name: str,
        options: DeleteOptions,
    ) -> tuple[JSON, bool]:
        """Delete or start deleting; returns the object and whether it is gone already."""
        obj = self.get(rtype, namespace, name)
        meta = obj["metadata"]
        if options.precondition_uid and options.precondition_uid != meta.get("uid"):
            raise conflict(
                rtype.plural,
                name,
                rtype.group,
                f"Precondition failed: UID in precondition: {options.precondition_uid}, "
                f"UID in object meta: {meta.get('uid')}",
            )
        if options.precondition_rv and options.precondition_rv != meta.get("resourceVersion"):
            raise conflict(
                rtype.plural,
                name,
                rtype.group,
                f"Precondition failed: ResourceVersion in precondition: "
                f"{options.precondition_rv}, ResourceVersion in object meta: "
                f"{meta.get('resourceVersion')}",
            )
        if rtype.kind == "Namespace" and name in ("default", "kube-system", "kube-public"):
            raise forbidden(rtype.plural, name, "", "this namespace may not be deleted")
        new = copy.deepcopy(obj)
        new_meta = new["metadata"]
        finalizers = list(new_meta.get("finalizers") or [])
        if options.propagation == "Foreground" and FOREGROUND not in finalizers:
            finalizers.append(FOREGROUND)
            finalizers = [f for f in finalizers if f != ORPHAN]
        elif options.propagation == "Orphan" and ORPHAN not in finalizers:
            finalizers.append(ORPHAN)
            finalizers = [f for f in finalizers if f != FOREGROUND]
        grace = self._grace_period(rtype, obj, options)
        spec_finalizers = None
        if rtype.kind == "Namespace":
            spec_finalizers = (new.get("spec") or {}).get("finalizers")
        if not finalizers and not grace and not spec_finalizers:
            if options.dry_run:
                return obj, True
            return self.store.remove(rtype.storage_key, obj), True
        if finalizers:
            new_meta["finalizers"] = finalizers
        now = datetime.now(UTC)
        current_grace = new_meta.get("deletionGracePeriodSeconds")
        if not new_meta.get("deletionTimestamp") or (grace or 0) < (current_grace or 0):
            new_meta["deletionTimestamp"] = timestamp(now + timedelta(seconds=grace or 0))
            new_meta["deletionGracePeriodSeconds"] = grace or 0
            if "generation" in new_meta and not obj["metadata"].get("deletionTimestamp"):
                new_meta["generation"] = int(new_meta["generation"]) + 1
        if rtype.kind == "Namespace" and not rtype.group:
            new.setdefault("status", {})["phase"] = "Terminating"
        if _same(obj, new) or options.dry_run:
            return obj, False
        if _ready_to_go(new):
            return self.store.remove(rtype.storage_key, new), True
        return self.store.put(rtype.storage_key, new), False

    def _grace_period(self, rtype: ResourceType, obj: JSON, options: DeleteOptions) -> int:
        """Seconds of graceful deletion: only running pods get any (the kubelet ends them)."""
        if rtype.kind != "Pod" or rtype.group:
            return 0
        phase = (obj.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed") or not (obj.get("spec") or {}).get("nodeName"):
            return 0
        if options.grace_period is not None:
            return max(0, int(options.grace_period))
        return int((obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30))

    # internals

    def _decode(self, rtype: ResourceType, body: Any) -> JSON:
        if not isinstance(body, dict):
            raise bad_request(
                f'{rtype.kind} in version "{rtype.version}" cannot be handled as a '
                f"{rtype.kind}: the body must be a JSON object"
            )
        obj = copy.deepcopy(body)
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if api_version and api_version != rtype.api_version:
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the "
                f"expected API version ({rtype.api_version})"
            )
        if kind and kind != rtype.kind:
            raise bad_request(
                f"the kind in the data ({kind}) does not match the expected kind ({rtype.kind})"
            )
        obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
        if not isinstance(obj.get("metadata"), dict):
            obj["metadata"] = {}
        return obj

    def _settle_namespace(self, rtype: ResourceType, namespace: str, meta: JSON) -> str:
        if not rtype.namespaced:
            meta.pop("namespace", None)
            return ""
        given = meta.get("namespace")
        if given and given != namespace:
            raise bad_request(
                "the namespace of the provided object does not match the namespace "
                "sent on the request"
            )
        meta["namespace"] = namespace
        return namespace

    def _check_namespace_open(self, namespace: str) -> None:
        ns = self.store.get("namespaces", "", namespace)
        if ns is None:
            raise not_found("namespaces", namespace)
        if ns["metadata"].get("deletionTimestamp"):
            raise ApiError(
                403,
                "Forbidden",
                f"unable to create new content in namespace {namespace} because it is being "
                "terminated",
                {"name": namespace, "kind": "namespaces"},
            )

    def _normalize(self, rtype: ResourceType, obj: JSON, options: Options) -> None:
        """Defaults and pruning (custom resources); unknown-field policy for every kind."""
        if rtype.custom:
            unknown = default_and_prune(obj, schema_node(rtype))
        elif rtype.definition and options.field_validation != "Ignore":
            unknown = unknown_fields(obj, schema_node(rtype))
        else:
            unknown = []
        if not unknown or options.field_validation == "Ignore":
            return
        messages = [f'unknown field "{path}"' for path in unknown]
        if options.field_validation == "Strict":
            raise bad_request(
                f'{rtype.kind} in version "{rtype.version}" cannot be handled as '
                f"a {rtype.kind}: strict decoding error: {', '.join(messages)}"
            )
        options.warnings.extend(messages)

    def _validate(self, rtype: ResourceType, obj: JSON, old: JSON | None) -> None:
        causes = self.strategies.validate(rtype, obj, old)
        if rtype.custom and rtype.schema is not None:
            causes += validate_custom(SchemaNode(rtype.schema), obj, old)
        if rtype.kind == "CustomResourceDefinition" and self.crd_hook is not None:
            causes += self.crd_hook(obj, old)
        if causes:
            raise invalid(rtype.kind, str(obj["metadata"].get("name", "")), rtype.group, causes)


def _spec_changed(rtype: ResourceType, old: JSON, new: JSON) -> bool:
    ignored = {"metadata", "apiVersion", "kind"}
    if rtype.has_status_subresource or not rtype.custom:
        ignored.add("status")
    keys = (set(old) | set(new)) - ignored
    return any(old.get(k) != new.get(k) for k in keys)


def _same(old: JSON, new: JSON) -> bool:
    """A write that changes nothing is not a write: no new resourceVersion, no event."""

    def strip(obj: JSON) -> JSON:
        meta = {
            k: v
            for k, v in obj["metadata"].items()
            if k not in ("resourceVersion", "managedFields")
        }
        return {**obj, "metadata": meta}

    return strip(old) == strip(new)


def _ready_to_go(obj: JSON) -> bool:
    """Being deleted, and nothing (finalizer, graceful pod shutdown) holds it any more."""
    meta = obj["metadata"]
    if not meta.get("deletionTimestamp") or meta.get("finalizers"):
        return False
    if (obj.get("spec") or {}).get("finalizers") and obj.get("kind") == "Namespace":
        return False
    return not meta.get("deletionGracePeriodSeconds")
