"""Counting the API requests clients make, for benchmarks and cost tests.

`POST /testing/requests` answers the counts since the server started (or since the last
`?reset=true`), grouped by User-Agent product (`kopf`, `OpenAPI-Generator`, `kubectl`, ...),
method, resource (with subresource) and whether it was a watch. The server's debug log has every
request too, but parsing it is slow at benchmark sizes; a counter is exact and cheap.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

_VERBS_WITHOUT_NAME = {"api", "apis"}


def resource_of(path: str) -> str:
    """`/api/v1/namespaces/ns/pods/p/log` -> `pods/log`; `/apis/g/v/flowruns` -> `flowruns`."""
    parts = [p for p in path.split("/") if p]
    if not parts or parts[0] not in _VERBS_WITHOUT_NAME:
        return path
    rest = parts[2:] if parts[0] == "api" else parts[3:]
    if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) > 2:
        rest = rest[2:]
    if not rest:
        return "discovery"
    resource = rest[0]
    if len(rest) >= 3:
        resource += "/" + rest[2]
    return resource


class RequestCounter:
    """Counts of requests by (agent, method, resource, watch)."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str, str, bool]] = Counter()

    def record(self, *, method: str, path: str, agent: str, watch: bool) -> None:
        product = agent.split("/", 1)[0] if agent else ""
        self.counts[(product, method, resource_of(path), watch)] += 1

    def snapshot(self, *, reset: bool = False) -> dict[str, Any]:
        rows = [
            {"agent": a, "method": m, "resource": r, "watch": w, "count": n}
            for (a, m, r, w), n in sorted(self.counts.items())
        ]
        total = sum(self.counts.values())
        if reset:
            self.counts.clear()
        return {"requests": rows, "total": total}
