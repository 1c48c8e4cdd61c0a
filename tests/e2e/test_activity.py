"""Live status and concurrency limits end to end (issue 15): STEPS advances while a pod runs, and
with a limit of N never more than N worker pods run at once, queued runs starting in priority
order."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.environment import Environment, TestClusterEnvironment
from tests.e2e.test_flowruns import flowrun

pytestmark = pytest.mark.integration


def test_steps_advance_while_the_pod_runs(k8s: Environment, name: str) -> None:
    items = ["a", "b", "c", "d", "e", "f"]
    k8s.apply(flowrun(name, "examples.batch:BatchFlow", {"items": items, "seconds_per_item": 1.0}))
    seen: list[int] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        status = k8s.status(name)
        if status.get("phase") == "Running":
            seen.append(int(status.get("stepsCompleted") or 0))
        if status.get("phase") == "Succeeded":
            break
        time.sleep(0.3)
    assert k8s.status(name)["stepsCompleted"] == len(items)
    progress = sorted(set(seen))
    assert len([s for s in progress if 0 < s < len(items)]) >= 2, progress


LIMIT = 5


@pytest.fixture
def limited(k8s: Environment) -> Iterator[Environment]:
    """The operator restarted with ERGON_MAX_RUNNING_PODS=LIMIT (test cluster only)."""
    if not isinstance(k8s, TestClusterEnvironment):
        pytest.skip("needs an operator started with ERGON_MAX_RUNNING_PODS")
    k8s.operator_env["ERGON_MAX_RUNNING_PODS"] = str(LIMIT)
    k8s.restart_operator()
    try:
        yield k8s
    finally:
        del k8s.operator_env["ERGON_MAX_RUNNING_PODS"]
        k8s.restart_operator()


def test_a_limit_caps_running_pods_and_queued_runs_start_by_priority(
    limited: Environment, name: str
) -> None:
    k8s = limited
    work = {"items": ["a", "b"], "seconds_per_item": 1.5}
    # The first runs hold their slots long enough for every later run to be seen Queued, even
    # on a loaded machine (kubectl calls take a while there).
    hold = {"items": ["a", "b"], "seconds_per_item": 6}
    first = [f"{name}-f{i}" for i in range(LIMIT)]
    for run in first:  # fill every slot
        k8s.apply(flowrun(run, "examples.batch:BatchFlow", hold))
    for run in first:
        _wait(lambda run=run: bool(k8s.pods(run)), f"a pod for {run}")
    queued = {f"{name}-p{p}": p for p in (0, 5, 1, 9, 3)}
    for run, priority in queued.items():
        k8s.apply(flowrun(run, "examples.batch:BatchFlow", work, priority=priority))
    for run in queued:
        _wait(lambda run=run: _reason(k8s.status(run)) == "Queued", f"{run} queued")
    started: dict[str, float] = {}
    most = 0
    deadline = time.monotonic() + 120
    runs = [*first, *queued]
    while time.monotonic() < deadline and len(started) < len(queued):
        pods = _worker_pods(k8s)  # one listing: a consistent snapshot
        most = max(most, sum(1 for p in pods if _active(p)))
        for pod in pods:
            run = pod["metadata"]["labels"]["ergon.dev/flowrun"]
            if run in queued and run not in started:
                started[run] = time.monotonic()
        time.sleep(0.1)
    assert most <= LIMIT, f"{most} worker pods ran at once under a limit of {LIMIT}"
    for run in runs:
        assert k8s.wait_phase(run, "Succeeded", timeout=120)["phase"] == "Succeeded"
    # A run never starts before one of higher priority. Runs whose pods appeared in the same
    # poll (two slots freed at once) tie, so "before" allows one poll interval.
    for high in queued:
        for low in queued:
            if queued[high] > queued[low]:
                assert started[high] <= started[low] + 0.25, (high, low, started)


def _worker_pods(k8s: Environment) -> list[dict[str, Any]]:
    listing = k8s.kubectl("get", "pods", "-l", "ergon.dev/flowrun", "-o", "json").stdout
    return list(json.loads(listing)["items"])


def _reason(status: dict[str, Any]) -> str | None:
    return {c["type"]: c.get("reason") for c in status.get("conditions") or []}.get("Ready")


def _active(pod: dict[str, Any]) -> bool:
    phase = (pod.get("status") or {}).get("phase") or "Pending"
    return phase in ("Pending", "Running") and not pod["metadata"].get("deletionTimestamp")


def _wait(condition: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
