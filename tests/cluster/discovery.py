"""Discovery documents: ``/api``, ``/apis``, ``/apis/{group}`` and per-group-version lists.

Served in the classic (unaggregated) form; kubectl and client-go ask for aggregated discovery
first and fall back when the response's content type is plain JSON, as it is here. Everything
is computed from the live :class:`~.resources.TypeRegistry`, so a CRD shows up the moment it
is registered.
"""

from __future__ import annotations

from typing import Any

from .resources import ResourceType, TypeRegistry

JSON = dict[str, Any]

_SUBRESOURCES: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    # name -> (group, version, kind or "" for the parent's, verbs)
    "status": ("", "", "", ("get", "patch", "update")),
    "scale": ("autoscaling", "v1", "Scale", ("get", "patch", "update")),
    "log": ("", "", "Pod", ("get",)),
    "eviction": ("policy", "v1", "Eviction", ("create",)),
    "token": ("authentication.k8s.io", "v1", "TokenRequest", ("create",)),
    "finalize": ("", "", "", ("update",)),
}


def api_versions(address: str) -> JSON:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
    }


def _group(types: TypeRegistry, group: str) -> JSON:
    versions = types.versions(group)
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": entries, "preferredVersion": entries[0]}


def api_group_list(types: TypeRegistry) -> JSON:
    groups = [_group(types, g) for g in types.groups() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(types: TypeRegistry, group: str) -> JSON | None:
    if not group or not types.versions(group):
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(types, group)}


def resource_list(types: TypeRegistry, group: str, version: str) -> JSON | None:
    rtypes = types.resources(group, version)
    if not rtypes:
        return None
    resources: list[JSON] = []
    for rtype in sorted(rtypes, key=lambda t: t.plural):
        resources.append(_resource(rtype))
        for sub in sorted(rtype.subresources):
            resources.append(_subresource(rtype, sub))
    group_version = f"{group}/{version}" if group else version
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }


def _resource(rtype: ResourceType) -> JSON:
    out: JSON = {
        "name": rtype.plural,
        "singularName": rtype.singular,
        "namespaced": rtype.namespaced,
        "kind": rtype.kind,
        "verbs": list(rtype.verbs),
    }
    if rtype.short_names:
        out["shortNames"] = list(rtype.short_names)
    if rtype.categories:
        out["categories"] = list(rtype.categories)
    return out


def _subresource(rtype: ResourceType, sub: str) -> JSON:
    group, version, kind, verbs = _SUBRESOURCES.get(sub, ("", "", "", ("get",)))
    out: JSON = {
        "name": f"{rtype.plural}/{sub}",
        "singularName": "",
        "namespaced": rtype.namespaced,
        "kind": kind or rtype.kind,
        "verbs": list(verbs),
    }
    if group:
        out["group"], out["version"] = group, version
    return out
