"""The reconciler against a fake API and an in-memory store: reads come from the cache, writes
update it, one failing part does not stop the others, and settled runs cost nothing."""

from __future__ import annotations

import copy
import logging
from typing import Any, cast

import pytest
from kubernetes.client.exceptions import ApiException

import ergon
from ergon_operator.kube import Kube
from ergon_operator.reconciler import Reconciler
from ergon_operator.settings import Settings
from ergon_operator.stores import SharedStores

SETTINGS = Settings(store="memory://", store_secret="ergon-postgres", worker_image="w:dev")
UID = "5f0c3e2a-0000-4000-8000-000000000001"
KEY = ("shop", "order-42")


class FakeKube:
    """Records every call; answers writes the way the API server does (the written object)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.refuse_pods: ApiException | None = None
        self.version = 100

    async def list_pool_deployments(self, namespace: str | None, **_: Any) -> dict[str, Any]:
        return {"items": [], "metadata": {"resourceVersion": "1"}}

    def watch_pool_deployments(self, namespace: str | None, **_: Any) -> Any:
        raise ConnectionError("no watch here")

    list_worker_pods = list_pool_deployments
    list_workerpools = list_pool_deployments
    watch_worker_pods = watch_pool_deployments

    def _bump(self, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        body = copy.deepcopy(body)
        body.setdefault("metadata", {})["resourceVersion"] = str(self.version)
        return body

    async def create_pod(self, namespace: str, manifest: dict[str, Any]) -> dict[str, Any] | None:
        self.calls.append(("create", manifest["metadata"]["name"]))
        if self.refuse_pods is not None:
            raise self.refuse_pods
        pod = self._bump(manifest)
        pod["metadata"].update(namespace=namespace, uid=f"pod-{self.version}")
        pod["status"] = {"phase": "Pending"}
        return pod

    async def delete_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("delete", name))
        return None

    async def patch_flowrun_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        self.calls.append(("patch", "flowruns/status"))
        self.status_patches.append(status)
        body = self._bump(self.flowrun)
        body["status"] = {**(body.get("status") or {}), **status}
        body["status"] = {k: v for k, v in body["status"].items() if v is not None}
        self.flowrun = body
        return body

    async def patch_signal_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        self.calls.append(("patch", "signals/status"))
        body = self._bump(self.signal)
        body["status"] = status
        self.signal = body
        return body

    async def post_event(
        self, body: dict[str, Any], *, type: str, reason: str, message: str
    ) -> None:
        self.calls.append(("event", reason))

    async def delete_flowrun(self, namespace: str, name: str, *, uid: str) -> None:
        self.calls.append(("delete", name))

    flowrun: dict[str, Any]
    signal: dict[str, Any]
    status_patches: list[dict[str, Any]]


def flowrun_body(**status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "ergon.dev/v1alpha1",
        "kind": "FlowRun",
        "metadata": {
            "name": KEY[1],
            "namespace": KEY[0],
            "uid": UID,
            "generation": 1,
            "resourceVersion": "1",
            "creationTimestamp": "2026-11-24T12:00:00Z",
        },
        "spec": {"flow": "examples.orders:OrderFlow", "input": {"order_id": "42"}},
        "status": status,
    }


@pytest.fixture
async def setup() -> Any:
    kube = FakeKube()
    kube.status_patches = []
    store = ergon.open_store("memory://")
    reconciler = Reconciler(SETTINGS, store, cast(Kube, kube))
    yield reconciler, kube, store
    await store.close()


async def test_a_new_flowrun_gets_its_pod_and_a_second_look_costs_no_request(setup: Any) -> None:
    reconciler, kube, store = setup
    kube.flowrun = flowrun_body()
    reconciler.flowrun_event("ADDED", kube.flowrun)
    await reconciler.reconcile(KEY)
    assert ("create", "order-42-1") in kube.calls
    assert kube.status_patches[-1]["phase"] == "Pending"
    assert (await store.get_flow(UID)) is not None
    await reconciler.reconcile(KEY)  # the pod now exists: "starting" becomes "executing"
    before = len(kube.calls)
    await reconciler.reconcile(KEY)  # nothing changed: the cache holds our own writes
    assert kube.calls[before:] == []
    assert kube.calls.count(("create", "order-42-1")) == 1


async def test_a_refused_pod_does_not_stop_the_status_and_is_reported(setup: Any) -> None:
    reconciler, kube, _ = setup
    kube.flowrun = flowrun_body()
    kube.refuse_pods = ApiException(status=403, reason="Forbidden")
    kube.refuse_pods.body = '{"message": "exceeded quota: pods=0"}'
    reconciler.flowrun_event("ADDED", kube.flowrun)
    with pytest.raises(ApiException):
        await reconciler.reconcile(KEY)
    assert ("event", "PodRejected") in kube.calls
    assert kube.status_patches, "the status was still written"
    assert reconciler._rejected[UID] == "exceeded quota: pods=0"
    # Through the queue: the failure schedules a backoff timer instead of raising.
    await reconciler._reconcile_key(KEY)
    assert reconciler.timers.due(KEY) is not None


async def test_a_settled_run_costs_nothing_at_startup(setup: Any) -> None:
    reconciler, kube, _ = setup

    class NoStore:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"the store was used: {name}")

    reconciler.stores = SharedStores(cast(ergon.Store, NoStore()))
    body = flowrun_body(phase="Succeeded", observedGeneration=1)
    reconciler.flowrun_event(None, body)  # the initial listing
    await reconciler.reconcile(KEY)
    assert kube.calls == []


async def test_a_pending_signal_from_the_cache_is_delivered_with_its_generation(
    setup: Any,
) -> None:
    reconciler, kube, _ = setup
    kube.flowrun = flowrun_body()
    reconciler.flowrun_event("ADDED", kube.flowrun)
    await reconciler.reconcile(KEY)
    kube.signal = {
        "metadata": {
            "name": "approve",
            "namespace": "shop",
            "uid": "sig-1",
            "generation": 1,
            "resourceVersion": "5",
        },
        "spec": {"flowRun": "order-42", "name": "approval", "payload": {"ok": True}},
    }
    reconciler.signal_event(None, kube.signal)  # rediscovered by the initial listing
    await reconciler.reconcile(KEY)
    assert kube.signal["status"]["phase"] == "Delivered"
    assert kube.signal["status"]["observedGeneration"] == 1


async def test_a_store_outage_is_logged_once(setup: Any, caplog: pytest.LogCaptureFixture) -> None:
    reconciler, kube, _ = setup

    class DownStore:
        def __getattr__(self, name: str) -> Any:
            async def fail(*args: Any, **kwargs: Any) -> None:
                raise ergon.StoreError("connection refused")

            return fail

    healthy = reconciler.stores
    reconciler.stores = SharedStores(cast(ergon.Store, DownStore()))
    kube.flowrun = flowrun_body()
    reconciler.flowrun_event("ADDED", kube.flowrun)
    with caplog.at_level(logging.INFO, logger="ergon.operator"):
        for _ in range(3):
            await reconciler._reconcile_key(KEY)
        reconciler.stores = healthy
        await reconciler._reconcile_key(KEY)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unreachable" in m for m in messages) == 1
    assert sum("reachable again" in m for m in messages) == 1
