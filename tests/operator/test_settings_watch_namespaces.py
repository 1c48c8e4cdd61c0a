"""An operator confined to a list of namespaces (ERGON_WATCH_NAMESPACES): the setting, one
label-selected watch per namespace whose relisting touches only its own namespace, the WorkerPool
listing and the orphan sweep per namespace. Nothing lists across the cluster."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, cast

import pytest

import ergon
from ergon_operator.cache import Cache
from ergon_operator.cleanup import Sweeper, api_known_uids
from ergon_operator.kube import Kube
from ergon_operator.pool_controller import PoolController
from ergon_operator.settings import Settings, SettingsError
from ergon_operator.watching import LabelWatch, NamespacedWatches, deployment_watch, pod_watch

BASE = {"ERGON_STORE": "postgresql://u@db/ergon", "ERGON_STORE_SECRET": "pg"}


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, ()),
        ({"ERGON_WATCH_NAMESPACES": ""}, ()),
        ({"ERGON_WATCH_NAMESPACES": "team-a"}, ("team-a",)),
        ({"ERGON_WATCH_NAMESPACES": " team-a, team-b,,team-a "}, ("team-a", "team-b")),
        ({"ERGON_WATCH_NAMESPACE": "apps"}, ("apps",)),  # the one-namespace alias
        ({"ERGON_WATCH_NAMESPACES": "", "ERGON_WATCH_NAMESPACE": "apps"}, ("apps",)),
    ],
)
def test_watch_namespaces_from_the_environment(
    env: dict[str, str], expected: tuple[str, ...]
) -> None:
    assert Settings.from_env({**BASE, **env}).watch_namespaces == expected


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"ERGON_WATCH_NAMESPACES": "a,b", "ERGON_WATCH_NAMESPACE": "c"},
            "ERGON_WATCH_NAMESPACES (comma-separated) or ERGON_WATCH_NAMESPACE",
        ),
        ({"ERGON_WATCH_NAMESPACES": "a,Team_B"}, "ERGON_WATCH_NAMESPACES: 'Team_B' is not"),
        ({"ERGON_WATCH_NAMESPACE": "-x"}, "ERGON_WATCH_NAMESPACE: '-x' is not a namespace"),
    ],
)
def test_malformed_watch_namespaces_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings.from_env({**BASE, **env})


def test_one_or_no_namespace_is_one_plain_watch() -> None:
    kube = cast(Kube, _NamespacedKube())
    sinks: dict[str, Any] = {"put": print, "drop": print, "replace": print}
    everywhere = pod_watch(kube, **sinks)
    assert isinstance(everywhere, LabelWatch) and everywhere.namespace is None
    one = pod_watch(kube, namespaces=("a",), **sinks)
    assert isinstance(one, LabelWatch) and one.namespace == "a"
    two = deployment_watch(kube, namespaces=("a", "b"), **sinks)
    assert isinstance(two, NamespacedWatches) and two.namespaces == ("a", "b")


async def test_a_watch_per_namespace_and_a_relist_replaces_only_its_namespace() -> None:
    cache = Cache()
    kube = _NamespacedKube()
    watch = pod_watch(
        cast(Kube, kube),
        namespaces=("a", "b"),
        put=cache.put_pod,
        drop=cache.drop_pod,
        replace=cache.replace_pods,
    )
    assert isinstance(watch, NamespacedWatches)
    task = asyncio.create_task(watch.run())
    try:
        await _until(lambda: watch.synced.is_set() and len(kube.watches["a"]) >= 2)
        await _until(lambda: ("a", "p3") in cache.pods)
    finally:
        watch.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert None not in kube.lists, "nothing is listed across the cluster"
    assert kube.lists.count("a") == 2 and kube.lists.count("b") == 1  # a relisted after 410
    # a's relisting dropped p1 and brought p3; b's pod, not in a's listing, stayed.
    assert sorted(cache.pods) == [("a", "p3"), ("b", "pb")]


async def test_workerpools_are_listed_in_each_watched_namespace() -> None:
    kube = _NamespacedKube()
    settings = Settings(store="memory://", store_secret="s", watch_namespaces=("a", "b"))
    store = ergon.open_store("memory://")
    try:
        pools = PoolController(
            settings,
            ergon.Client(store),
            cast(Kube, kube),
            on_store_error=lambda exc: None,
            on_store_ok=lambda: None,
            run_versions=lambda key: frozenset(),
        )
        await pools._list_pools()
    finally:
        await store.close()
    assert kube.pool_lists == ["a", "b"]
    assert sorted(pools.pools) == [("a", "pool-a"), ("b", "pool-b")]


async def test_the_sweep_covers_each_watched_namespace_and_only_those() -> None:
    kube = _NamespacedKube()
    assert await api_known_uids(cast(Kube, kube), None, namespaces=("a", "b"))() == {"ua", "ub"}
    assert kube.flowrun_lists == ["a", "b"]
    store = ergon.open_store("memory://")
    try:
        client = ergon.Client(store)
        for namespace in ("a", "b", "c"):
            await client.schedule_by_name(
                "tests:Flow",
                {},
                flow_id=f"gone-{namespace}",
                origin=f"flowrun:{namespace}/x/gone-{namespace}",
            )

        async def nothing_exists() -> set[str]:
            return set()

        sweeper = Sweeper(store=store, known_uids=nothing_exists, namespaces=("a", "b"))
        result = await sweeper.sweep()
    finally:
        await store.close()
    assert sorted(result.cancelled) == ["gone-a", "gone-b"]  # namespace c is not ours


# --- helpers ----------------------------------------------------------------------------------


def _pod(name: str, namespace: str, rv: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "resourceVersion": rv,
            "labels": {"ergon.dev/flowrun": f"run-{name}"},
            "ownerReferences": [{"uid": f"run-{name}", "controller": True}],
        },
        "status": {"phase": "Running"},
    }


class _Stream:
    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.lines = [json.dumps(e).encode() + b"\n" for e in events]

    def stream(self, amt: Any = None, decode_content: bool = False) -> Any:
        yield from self.lines

    def release_conn(self) -> None:
        pass

    def close(self) -> None:
        pass


class _NamespacedKube:
    """Namespace a: p1, then (after its watch ends with 410 Gone) p3; namespace b: pb."""

    def __init__(self) -> None:
        self.lists: list[str | None] = []
        self.watches: dict[str | None, list[str]] = {"a": [], "b": []}
        self.pool_lists: list[str | None] = []
        self.flowrun_lists: list[str | None] = []
        self.custom = self

    async def list_worker_pods(
        self, namespace: str | None, *, limit: int = 500, continue_: str | None = None
    ) -> dict[str, Any]:
        self.lists.append(namespace)
        if namespace == "b":
            return {"metadata": {"resourceVersion": "15"}, "items": [_pod("pb", "b", "15")]}
        if self.lists.count("a") == 1:
            return {"metadata": {"resourceVersion": "10"}, "items": [_pod("p1", "a", "10")]}
        return {"metadata": {"resourceVersion": "20"}, "items": [_pod("p3", "a", "20")]}

    def watch_worker_pods(
        self, namespace: str | None, *, resource_version: str, timeout_seconds: int
    ) -> _Stream:
        self.watches.setdefault(namespace, []).append(resource_version)
        if namespace == "a" and len(self.watches["a"]) == 1:
            return _Stream([{"type": "ERROR", "object": {"code": 410, "message": "too old"}}])
        time.sleep(0.05)
        return _Stream([])

    list_pool_deployments = list_worker_pods
    watch_pool_deployments = watch_worker_pods

    async def list_workerpools(
        self, namespace: str | None, *, continue_: str | None = None
    ) -> dict[str, Any]:
        self.pool_lists.append(namespace)
        meta = {"name": f"pool-{namespace}", "namespace": namespace, "uid": f"u-{namespace}"}
        return {"metadata": {}, "items": [{"metadata": meta, "spec": {}}]}

    def list_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, **_: Any
    ) -> Any:
        self.flowrun_lists.append(namespace)
        items = [{"metadata": {"uid": f"u{namespace}"}}]
        return _Response({"metadata": {}, "items": items})


class _Response:
    def __init__(self, body: dict[str, Any]) -> None:
        self.data = json.dumps(body).encode()


async def _until(condition: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)
