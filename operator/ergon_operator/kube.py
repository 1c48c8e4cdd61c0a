"""The few Kubernetes API calls the operator makes, as async functions over the official client.

The client is synchronous; calls run in worker threads. Responses are read as plain JSON dicts
(`_preload_content=False`) — the decisions work on dicts, and skipping the client's model
classes keeps the operator light. 404 on delete and 409 on create mean "already done".

Every request is counted per verb and resource (`request_counts`): the operator's cost in API
requests is a number the benchmark and tests read, not a guess.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ergon_operator.resources import FLOWRUN_LABEL, GROUP, POOL_LABEL, VERSION

MERGE_PATCH = "application/merge-patch+json"
TIMEOUT = 30
PAGE = 500

_requests: Counter[tuple[str, str]] = Counter()


def count_request(verb: str, resource: str) -> None:
    """Count one API request (`verb` as in RBAC: get, list, watch, create, patch, delete)."""
    _requests[(verb, resource)] += 1


def request_counts() -> dict[tuple[str, str], int]:
    """The operator's own API requests so far, per (verb, resource) — kopf's watches excluded."""
    return dict(_requests)


def load_config() -> None:
    """In-cluster credentials when running in a pod, else the current kubeconfig."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]


class Kube:
    """FlowRuns, Signals and worker pods through the Kubernetes API."""

    def __init__(self) -> None:
        api = client.ApiClient()
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    async def list_worker_pods(
        self, namespace: str | None, *, limit: int = PAGE, continue_: str | None = None
    ) -> dict[str, Any]:
        """One page of worker pods (those carrying the worker label), filtered by the API
        server: the operator never receives pods that are not its own."""
        count_request("list", "pods")
        extra: dict[str, Any] = {"label_selector": FLOWRUN_LABEL, "limit": limit}
        if continue_:
            extra["_continue"] = continue_
        if namespace:
            return await self._call(self.core.list_namespaced_pod, namespace, **extra)
        return await self._call(self.core.list_pod_for_all_namespaces, **extra)

    def watch_worker_pods(
        self, namespace: str | None, *, resource_version: str, timeout_seconds: int
    ) -> Any:
        """Open a watch of worker pods from `resource_version` (with bookmarks); returns the
        raw streaming response (blocking: call from a thread; `close()` it to stop)."""
        count_request("watch", "pods")
        extra = _watch_args(FLOWRUN_LABEL, resource_version, timeout_seconds)
        if namespace:
            return self.core.list_namespaced_pod(namespace, **extra)
        return self.core.list_pod_for_all_namespaces(**extra)

    async def list_pool_deployments(
        self, namespace: str | None, *, limit: int = PAGE, continue_: str | None = None
    ) -> dict[str, Any]:
        """One page of worker pools' Deployments (label `ergon.dev/workerpool`)."""
        count_request("list", "deployments")
        extra: dict[str, Any] = {"label_selector": POOL_LABEL, "limit": limit}
        if continue_:
            extra["_continue"] = continue_
        if namespace:
            return await self._call(self.apps.list_namespaced_deployment, namespace, **extra)
        return await self._call(self.apps.list_deployment_for_all_namespaces, **extra)

    def watch_pool_deployments(
        self, namespace: str | None, *, resource_version: str, timeout_seconds: int
    ) -> Any:
        """Open a watch of worker pools' Deployments (see `watch_worker_pods`)."""
        count_request("watch", "deployments")
        extra = _watch_args(POOL_LABEL, resource_version, timeout_seconds)
        if namespace:
            return self.apps.list_namespaced_deployment(namespace, **extra)
        return self.apps.list_deployment_for_all_namespaces(**extra)

    async def list_workerpools(
        self, namespace: str | None, *, continue_: str | None = None
    ) -> dict[str, Any]:
        """One page of WorkerPools (the operator reads them all once at startup; kopf's watch
        keeps them up to date)."""
        count_request("list", "workerpools")
        extra: dict[str, Any] = {"limit": PAGE}
        if continue_:
            extra["_continue"] = continue_
        if namespace:
            return await self._call(
                self.custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                "workerpools",
                **extra,
            )
        return await self._call(
            self.custom.list_cluster_custom_object, GROUP, VERSION, "workerpools", **extra
        )

    async def create_deployment(
        self, namespace: str, manifest: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Create a Deployment; None if one of that name exists already."""
        count_request("create", "deployments")
        try:
            return await self._call(self.apps.create_namespaced_deployment, namespace, manifest)
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise

    async def patch_deployment(
        self, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Merge-patch a Deployment (replicas, or its template); None if it is gone."""
        count_request("patch", "deployments")
        try:
            return await self._call(
                self.apps.patch_namespaced_deployment,
                name,
                namespace,
                patch,
                _content_type=MERGE_PATCH,
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            return None

    async def delete_deployment(self, namespace: str, name: str) -> None:
        """Delete a Deployment; its ReplicaSets and pods follow (background propagation)."""
        count_request("delete", "deployments")
        try:
            await self._call(
                self.apps.delete_namespaced_deployment,
                name,
                namespace,
                body={"propagationPolicy": "Background"},
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def patch_workerpool_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Merge-patch a WorkerPool's status; returns it as written (None: deleted)."""
        return await self._patch_status("workerpools", namespace, name, status)

    async def create_pod(self, namespace: str, manifest: dict[str, Any]) -> dict[str, Any] | None:
        """Create a pod and return it as created; None if one of that name exists already."""
        count_request("create", "pods")
        try:
            return await self._call(self.core.create_namespaced_pod, namespace, manifest)
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """Read a Secret (a tenant's DSN Secret, the only one the operator reads); None if it
        does not exist."""
        count_request("get", "secrets")
        try:
            return await self._call(self.core.read_namespaced_secret, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def create_secret(
        self, namespace: str, manifest: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Create a Secret (a tenant's DSN Secret); None if one of that name exists already."""
        count_request("create", "secrets")
        try:
            return await self._call(self.core.create_namespaced_secret, namespace, manifest)
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise

    async def delete_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """Delete a pod; returns it as the API left it (terminating), None if it was gone."""
        count_request("delete", "pods")
        try:
            return await self._call(self.core.delete_namespaced_pod, name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            return None

    async def delete_flowrun(self, namespace: str, name: str, *, uid: str) -> None:
        """Delete a FlowRun (its TTL ran out), only if it is still the one with `uid`."""
        count_request("delete", "flowruns")
        body = {"preconditions": {"uid": uid}, "propagationPolicy": "Background"}
        try:
            await self._call(
                self.custom.delete_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                "flowruns",
                name,
                body=body,
            )
        except ApiException as exc:
            if exc.status not in (404, 409):  # gone, or re-created under another uid
                raise

    async def post_event(
        self, body: dict[str, Any], *, type: str, reason: str, message: str
    ) -> None:
        """A core/v1 Event about `body` (a FlowRun), as `kubectl describe` shows them."""
        meta = body.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name')}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": body.get("apiVersion"),
                "kind": body.get("kind"),
                "name": meta.get("name"),
                "namespace": namespace,
                "uid": meta.get("uid"),
            },
            "type": type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "ergon-operator"},
            "reportingComponent": "ergon-operator",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        count_request("create", "events")
        await self._call(self.core.create_namespaced_event, namespace, event)

    async def patch_flowrun_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Merge-patch a FlowRun's status; returns the FlowRun as written (None: deleted)."""
        return await self._patch_status("flowruns", namespace, name, status)

    async def patch_signal_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Merge-patch a Signal's status; returns the Signal as written (None: deleted)."""
        return await self._patch_status("signals", namespace, name, status)

    async def _patch_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        count_request("patch", f"{plural}/status")
        try:
            return await self._call(
                self.custom.patch_namespaced_custom_object_status,
                GROUP,
                VERSION,
                namespace,
                plural,
                name,
                {"status": status},
                _content_type=MERGE_PATCH,
            )
        except ApiException as exc:
            if exc.status != 404:  # deleted meanwhile: nothing to report on
                raise
            return None

    async def _call(self, method: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        def call() -> dict[str, Any]:
            response = method(*args, _preload_content=False, _request_timeout=TIMEOUT, **kwargs)
            data = response.data
            return json.loads(data) if data else {}

        return await asyncio.to_thread(call)


def _watch_args(selector: str, resource_version: str, timeout_seconds: int) -> dict[str, Any]:
    return {
        "label_selector": selector,
        "watch": True,
        "allow_watch_bookmarks": True,
        "resource_version": resource_version,
        "timeout_seconds": timeout_seconds,
        "_preload_content": False,
        "_request_timeout": (TIMEOUT, timeout_seconds + TIMEOUT),
    }
