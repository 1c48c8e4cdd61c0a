"""The few Kubernetes API calls the operator makes, as async functions over the official client.

The client is synchronous; calls run in worker threads. Responses are read as plain JSON dicts
(`_preload_content=False`) — the decisions work on dicts, and skipping the client's model
classes keeps the operator light. 404 on delete and 409 on create mean "already done".
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ergon_operator.resources import FLOWRUN_LABEL, GROUP, VERSION

MERGE_PATCH = "application/merge-patch+json"
TIMEOUT = 30


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
        self.custom = client.CustomObjectsApi(api)

    async def get_flowrun(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(
            self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, "flowruns", name
        )

    async def list_flowruns(self, namespace: str | None) -> list[dict[str, Any]]:
        if namespace:
            data = await self._call(
                self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, "flowruns"
            )
        else:
            data = await self._call(
                self.custom.list_cluster_custom_object, GROUP, VERSION, "flowruns"
            )
        return list(data.get("items") or [])

    async def get_signal(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(
            self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, "signals", name
        )

    async def list_pods(self, namespace: str, flowrun: str) -> list[dict[str, Any]]:
        data = await self._call(
            self.core.list_namespaced_pod, namespace, label_selector=f"{FLOWRUN_LABEL}={flowrun}"
        )
        return list(data.get("items") or [])

    async def create_pod(self, namespace: str, manifest: dict[str, Any]) -> bool:
        """Create a pod; False if one of that name exists already."""
        try:
            await self._call(self.core.create_namespaced_pod, namespace, manifest)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def delete_pod(self, namespace: str, name: str) -> None:
        try:
            await self._call(self.core.delete_namespaced_pod, name, namespace)
        except ApiException as exc:
            if exc.status != 404:
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
        await self._call(self.core.create_namespaced_event, namespace, event)

    async def patch_flowrun_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        await self._patch_status("flowruns", namespace, name, status)

    async def patch_signal_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        await self._patch_status("signals", namespace, name, status)

    async def _patch_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        try:
            await self._call(
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

    async def _get(self, method: Any, *args: Any) -> dict[str, Any] | None:
        try:
            return await self._call(method, *args)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def _call(self, method: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        def call() -> dict[str, Any]:
            response = method(*args, _preload_content=False, _request_timeout=TIMEOUT, **kwargs)
            data = response.data
            return json.loads(data) if data else {}

        return await asyncio.to_thread(call)
