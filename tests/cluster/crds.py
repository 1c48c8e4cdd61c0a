"""CustomResourceDefinitions: checking them, and turning them into served resource types.

A CRD written through ``apiextensions.k8s.io/v1`` is completed (default names, the cleanup
finalizer, an ``Established`` status) and validated here before it is stored; once stored, the
:class:`CrdController` registers one :class:`~.resources.ResourceType` per served version, so the
very next request can use the new resource. Discovery and OpenAPI read the same registry.
Helm and kubectl wait for ``Established``; it is true from the first write because registration
is synchronous.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from .errors import Cause
from .registry import timestamp
from .resources import ResourceType, ScalePaths, TypeRegistry
from .store import Event, Store

JSON = dict[str, Any]
log = logging.getLogger(__name__)

CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"
CRD_KEY = "customresourcedefinitions.apiextensions.k8s.io"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def complete_and_validate(crd: JSON, old: JSON | None) -> list[Cause]:
    """Fill the defaults a real server fills, set status, and list what is wrong."""
    spec = crd.setdefault("spec", {})
    names = spec.setdefault("names", {})
    causes: list[Cause] = []
    group, plural, kind = spec.get("group", ""), names.get("plural", ""), names.get("kind", "")
    if not group:
        causes.append(Cause("FieldValueRequired", "Required value", "spec.group"))
    elif "." not in group:
        causes.append(
            Cause(
                "FieldValueInvalid",
                f'Invalid value: "{group}": should be a domain with at least one dot',
                "spec.group",
            )
        )
    if not plural:
        causes.append(Cause("FieldValueRequired", "Required value", "spec.names.plural"))
    elif not _DNS_LABEL.match(plural):
        causes.append(
            Cause(
                "FieldValueInvalid",
                f'Invalid value: "{plural}": a lowercase RFC '
                "1123 label must consist of lower case alphanumeric characters",
                "spec.names.plural",
            )
        )
    if not kind:
        causes.append(Cause("FieldValueRequired", "Required value", "spec.names.kind"))
    name = crd["metadata"].get("name", "")
    if plural and group and name != f"{plural}.{group}":
        causes.append(
            Cause(
                "FieldValueInvalid",
                f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group',
                "metadata.name",
            )
        )
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        causes.append(
            Cause(
                "FieldValueNotSupported",
                f'Unsupported value: "{spec.get("scope")}": '
                'supported values: "Cluster", "Namespaced"',
                "spec.scope",
            )
        )
    causes += _check_versions(spec.get("versions"))
    if old is not None:
        old_spec = old.get("spec") or {}
        for key in ("group", "scope"):
            if old_spec.get(key) != spec.get(key):
                causes.append(
                    Cause(
                        "FieldValueInvalid",
                        f'Invalid value: "{spec.get(key)}": field is immutable',
                        f"spec.{key}",
                    )
                )
    if causes:
        return causes
    names.setdefault("singular", kind.lower())
    names.setdefault("listKind", f"{kind}List")
    spec.setdefault("conversion", {"strategy": "None"})
    finalizers = crd["metadata"].setdefault("finalizers", [])
    if CLEANUP_FINALIZER not in finalizers and not crd["metadata"].get("deletionTimestamp"):
        finalizers.append(CLEANUP_FINALIZER)
    crd["status"] = _status(crd, old)
    return []


def _check_versions(versions: Any) -> list[Cause]:
    if not isinstance(versions, list) or not versions:
        return [
            Cause(
                "FieldValueInvalid",
                "Invalid value: []: must have exactly one version marked as storage version",
                "spec.versions",
            )
        ]
    causes = []
    if sum(1 for v in versions if isinstance(v, dict) and v.get("storage")) != 1:
        causes.append(
            Cause(
                "FieldValueInvalid",
                "Invalid value: must have exactly one version marked as storage version",
                "spec.versions",
            )
        )
    for index, version in enumerate(versions):
        schema = (
            (version.get("schema") or {}).get("openAPIV3Schema")
            if isinstance(version, dict)
            else None
        )
        path = f"spec.versions[{index}].schema.openAPIV3Schema"
        if not isinstance(schema, dict):
            causes.append(Cause("FieldValueRequired", "Required value: schemas are required", path))
        elif schema.get("type") != "object":
            causes.append(
                Cause(
                    "FieldValueRequired",
                    "Required value: must not be empty at the root",
                    f"{path}.type",
                )
            )
    return causes


def _status(crd: JSON, old: JSON | None) -> JSON:
    spec = crd["spec"]
    previous = (old or {}).get("status") or {}
    stamp = timestamp()

    def condition(kind: str, reason: str, message: str) -> JSON:
        for existing in previous.get("conditions") or []:
            if existing.get("type") == kind and existing.get("status") == "True":
                return dict(existing)
        return {
            "type": kind,
            "status": "True",
            "lastTransitionTime": stamp,
            "reason": reason,
            "message": message,
        }

    storage = next(v["name"] for v in spec["versions"] if v.get("storage"))
    stored = list(previous.get("storedVersions") or [])
    if storage not in stored:
        stored.append(storage)
    return {
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition(
                "Established", "InitialNamesAccepted", "the initial names have been accepted"
            ),
        ],
        "acceptedNames": dict(spec["names"]),
        "storedVersions": stored,
    }


def resource_types(crd: JSON) -> list[ResourceType]:
    spec = crd["spec"]
    names = spec["names"]
    storage = next(v["name"] for v in spec["versions"] if v.get("storage"))
    out = []
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        subresources = version.get("subresources") or {}
        scale = subresources.get("scale")
        out.append(
            ResourceType(
                group=spec["group"],
                version=version["name"],
                kind=names["kind"],
                plural=names["plural"],
                singular=names.get("singular") or names["kind"].lower(),
                namespaced=spec.get("scope") == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                subresources=frozenset(k for k in ("status", "scale") if k in subresources),
                has_generation=True,
                schema=(version.get("schema") or {}).get("openAPIV3Schema"),
                printer_columns=tuple(version.get("additionalPrinterColumns") or ()),
                scale=None
                if scale is None
                else ScalePaths(
                    spec_replicas=scale.get("specReplicasPath", ".spec.replicas"),
                    status_replicas=scale.get("statusReplicasPath", ".status.replicas"),
                    label_selector=scale.get("labelSelectorPath"),
                ),
                custom=True,
                storage_version=storage,
                extra={
                    "crd": crd["metadata"]["name"],
                    "selectable": tuple(
                        f.get("jsonPath", "").lstrip(".")
                        for f in version.get("selectableFields") or ()
                    ),
                },
            )
        )
    return out


class CrdController:
    """Keeps the type registry in step with stored CRDs (synchronously, from store events)."""

    def __init__(self, store: Store, types: TypeRegistry) -> None:
        self._store = store
        self._types = types
        self._registered: dict[str, tuple[str, str, str]] = {}  # crd name -> group, plural, key
        store.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        if event.storage_key != CRD_KEY:
            return
        name = event.obj["metadata"]["name"]
        if event.type == "DELETED":
            self._unregister(name, drop_objects=True)
            return
        self._unregister(name, drop_objects=False)
        rtypes = resource_types(event.obj)
        self._types.add_all(rtypes)
        if rtypes:
            first = rtypes[0]
            self._registered[name] = (first.group, first.plural, first.storage_key)
            log.debug("registered %s", name)

    def _unregister(self, name: str, *, drop_objects: bool) -> None:
        registered = self._registered.pop(name, None)
        if registered is None:
            return
        group, plural, storage_key = registered
        self._types.remove(group, plural)
        if drop_objects:
            self._store.drop_resource(storage_key)
