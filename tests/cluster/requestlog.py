"""Counting the API requests clients make, for benchmarks, cost tests and the RBAC test.

`GET /testing/requests` answers the counts since the server started (or since the last
`?reset=true`), one row per distinct request shape:

- `agent`: the User-Agent product (`kopf`, `OpenAPI-Generator`, `kubectl`, `Helm`, ...);
- `user`: who the bearer token authenticates as (`authn.py`: `kubernetes-admin` for the
  kubeconfig's token, `system:serviceaccount:NS:NAME` for a ServiceAccount token);
- `method`, `watch`;
- `group` (`""` for the core group), `resource` (with its subresource: `pods/log`,
  `flowruns/status`), `namespace` (`""` for a cluster-scoped request: a cluster-scoped
  resource, or a namespaced one listed or watched across all namespaces);
- `verb`: the RBAC verb the request needs (`get`, `list`, `watch`, `create`, `update`,
  `patch`, `delete`, `deletecollection`), None for non-resource URLs (discovery, OpenAPI,
  `/version`, which every authenticated user may read).

The server's debug log has every request too, but parsing it is slow at benchmark sizes; a
counter is exact and cheap.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

_API_ROOTS = {"api", "apis"}
_NAMESPACE_SUBRESOURCES = ("status", "finalize")


@dataclass(frozen=True, slots=True)
class ResourcePath:
    """What a resource URL names (kube-apiserver's path scheme)."""

    group: str
    namespace: str  # "" for cluster scope
    resource: str  # plural, with "/subresource" when there is one
    name: str | None


def parse_path(path: str) -> ResourcePath | None:
    """`/api/v1/namespaces/ns/pods/p/log` -> ("", "ns", "pods/log", "p");
    `/apis/g/v/flowruns` -> ("g", "", "flowruns", None); None for non-resource URLs."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, rest = "", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, rest = parts[1], parts[3:]
    else:
        return None
    namespace = ""
    if (
        len(rest) >= 3
        and rest[0] == "namespaces"
        and not (len(rest) == 3 and rest[2] in _NAMESPACE_SUBRESOURCES)
    ):
        namespace, rest = rest[1], rest[2:]
    if not 1 <= len(rest) <= 3:
        return None
    resource = rest[0] + (f"/{rest[2]}" if len(rest) == 3 else "")
    return ResourcePath(group, namespace, resource, rest[1] if len(rest) >= 2 else None)


def resource_of(path: str) -> str:
    """`/api/v1/namespaces/ns/pods/p/log` -> `pods/log`; `/apis/g/v/flowruns` -> `flowruns`;
    `discovery` for `/api/v1` and `/apis/g/v`, the path itself for other non-resource URLs."""
    target = parse_path(path)
    if target is not None:
        return target.resource
    parts = [p for p in path.split("/") if p]
    if parts and parts[0] in _API_ROOTS:
        return "discovery"
    return path


def verb_of(method: str, *, watch: bool, named: bool) -> str | None:
    """The RBAC verb of a resource request (kube-apiserver's RequestInfo)."""
    method = method.upper()
    if method == "GET":
        return "watch" if watch else "get" if named else "list"
    if method == "DELETE":
        return "delete" if named else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method)


_Key = tuple[str, str, str, str, str, str, bool, str | None]


class RequestCounter:
    """Counts of requests by (agent, user, method, group, namespace, resource, watch, verb)."""

    def __init__(self) -> None:
        self.counts: Counter[_Key] = Counter()

    def record(self, *, method: str, path: str, agent: str, watch: bool, user: str = "") -> None:
        product = agent.split("/", 1)[0] if agent else ""
        target = parse_path(path)
        if target is None:
            key: _Key = (product, user, method, "", "", resource_of(path), watch, None)
        else:
            verb = verb_of(method, watch=watch, named=target.name is not None)
            group, namespace, resource = target.group, target.namespace, target.resource
            key = (product, user, method, group, namespace, resource, watch, verb)
        self.counts[key] += 1

    def snapshot(self, *, reset: bool = False) -> dict[str, Any]:
        rows = [
            {
                "agent": agent,
                "user": user,
                "method": method,
                "group": group,
                "namespace": namespace,
                "resource": resource,
                "watch": watch,
                "verb": verb,
                "count": n,
            }
            for (agent, user, method, group, namespace, resource, watch, verb), n in sorted(
                self.counts.items(), key=lambda item: repr(item[0])
            )
        ]
        total = sum(self.counts.values())
        if reset:
            self.counts.clear()
        return {"requests": rows, "total": total}
