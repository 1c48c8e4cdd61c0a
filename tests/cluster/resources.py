"""The resource types the server currently serves, built-in and custom.

A :class:`ResourceType` says everything the rest of the server needs to know about one
group/version/resource: names for discovery, scope, subresources, and which schema validates it.
The :class:`TypeRegistry` is the live set; CRDs add and remove entries at run time, so discovery,
OpenAPI and routing always read it instead of keeping copies.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]


@dataclass(frozen=True)
class ScalePaths:
    """JSON paths of a custom resource's scale subresource (``.spec.replicas`` style)."""

    spec_replicas: str
    status_replicas: str
    label_selector: str | None = None


@dataclass(frozen=True)
class ResourceType:
    """One served group/version/resource.

    Several versions of a custom resource share one ``storage_key``: objects live once in the
    store and are presented in whichever served version a request names (the CRD conversion
    strategy ``None``).
    """

    group: str
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: frozenset[str] = frozenset()
    verbs: tuple[str, ...] = (
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    )
    has_generation: bool = False
    definition: str | None = None
    schema: JSON | None = None
    printer_columns: tuple[JSON, ...] = ()
    scale: ScalePaths | None = None
    custom: bool = False
    storage_version: str = ""
    storage: str = ""  # shares another resource's storage (events.k8s.io Events are core Events)
    extra: JSON = field(default_factory=dict, compare=False, hash=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def storage_key(self) -> str:
        if self.storage:
            return self.storage
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def has_status_subresource(self) -> bool:
        return "status" in self.subresources

    @property
    def group_kind(self) -> str:
        """``Kind.group`` as used in 422 messages (``FlowRun.ergon.dev "x" is invalid``)."""
        return f"{self.kind}.{self.group}" if self.group else self.kind


class TypeRegistry:
    """The live set of served resource types, indexed the ways requests look them up."""

    def __init__(self) -> None:
        self._by_gv: dict[tuple[str, str], dict[str, ResourceType]] = {}
        self._group_versions: dict[str, list[str]] = {}
        self.generation = 0  # bumped on every change; caches of discovery/OpenAPI key on it

    def add(self, rtype: ResourceType) -> None:
        self._by_gv.setdefault((rtype.group, rtype.version), {})[rtype.plural] = rtype
        versions = self._group_versions.setdefault(rtype.group, [])
        if rtype.version not in versions:
            versions.append(rtype.version)
        self.generation += 1

    def remove(self, group: str, plural: str) -> None:
        """Drop every version of one resource (a deleted CRD)."""
        for (g, v), plurals in list(self._by_gv.items()):
            if g == group and plurals.pop(plural, None) is not None and not plurals:
                del self._by_gv[(g, v)]
                self._group_versions[g].remove(v)
                if not self._group_versions[g]:
                    del self._group_versions[g]
        self.generation += 1

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_gv.get((group, version), {}).get(plural)

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        group, _, version = api_version.rpartition("/")
        for rtype in self._by_gv.get((group, version), {}).values():
            if rtype.kind == kind:
                return rtype
        return None

    def by_storage_key(self, storage_key: str) -> ResourceType | None:
        """The type in the group's preferred version for a stored resource."""
        plural, _, group = storage_key.partition(".")
        for version in self.versions(group):
            rtype = self.get(group, version, plural)
            if rtype is not None:
                return rtype
        return None

    def resources(self, group: str, version: str) -> list[ResourceType]:
        return list(self._by_gv.get((group, version), {}).values())

    def groups(self) -> list[str]:
        return list(self._group_versions)

    def versions(self, group: str) -> list[str]:
        """Served versions of a group, preferred first (Kubernetes version priority)."""
        return sorted(self._group_versions.get(group, []), key=version_priority)

    def __iter__(self) -> Iterator[ResourceType]:
        for plurals in self._by_gv.values():
            yield from plurals.values()

    def add_all(self, rtypes: Iterable[ResourceType]) -> None:
        for rtype in rtypes:
            self.add(rtype)


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Sort key putting GA before beta before alpha, higher numbers first (v2 > v1 > v1beta1)."""
    import re

    match = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not match:
        return (3, 0, 0, version)
    major, stage, minor = match.groups()
    stage_rank = {None: 0, "beta": 1, "alpha": 2}[stage]
    return (stage_rank, -int(major), -int(minor or 0), version)
