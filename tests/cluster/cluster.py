"""One test cluster in one process: the store, its controllers, and the kubelet, wired together.

Everything is built per instance (no module state), so a test can run two clusters in one
process. :class:`Cluster` is what the HTTP layer serves; ``__main__`` and the fixtures only
start and stop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import protobuf
from .builtins import BUILTIN_TYPES, DEFAULT_NAMESPACES, NODE_NAME
from .crds import CrdController, complete_and_validate
from .errors import ApiError
from .gc import GarbageCollector
from .kubelet import Kubelet
from .openapi import OpenApi
from .registry import Options, Registry
from .resources import TypeRegistry
from .store import Event, Store
from .strategies import CONTROLLED_WORKLOADS, Strategies
from .workloads import WorkloadControllers

JSON = dict[str, Any]
log = logging.getLogger(__name__)


@dataclass
class ClusterConfig:
    """Knobs; defaults suit tests (fast restarts, bounded history)."""

    workdir: Path = field(default_factory=Path.cwd)
    kubeconfig: Path | None = None
    history_size: int = 10_000
    bookmark_interval: float = 60.0
    watch_timeout: float = 1800.0
    restart_backoff: float = 1.0
    max_restart_backoff: float = 30.0
    workload_status: bool = True
    deployment_controller: bool = True  # Deployments -> ReplicaSets -> Pods (workloads.py)
    kubectl: Path | None = None  # its embedded protobuf descriptors decode protobuf bodies
    pod_log_dir: Path | None = None  # pods' output also kept in files here (podlogs.py)


class Cluster:
    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.store = Store(config.history_size)
        self.types = TypeRegistry()
        self.types.add_all(BUILTIN_TYPES)
        strategies = Strategies(
            workload_status=config.workload_status,
            controlled=CONTROLLED_WORKLOADS if config.deployment_controller else frozenset(),
        )
        self.registry = Registry(self.store, strategies)
        self.registry.crd_hook = complete_and_validate
        self.crds = CrdController(self.store, self.types)
        self.gc = GarbageCollector(self.store, self.registry, self.types)
        self.workloads: WorkloadControllers | None = None
        if config.deployment_controller:
            self.workloads = WorkloadControllers(self.store, self.registry, self.types)
        pod_type, event_type = self.types.get("", "v1", "pods"), self.types.get("", "v1", "events")
        assert pod_type is not None and event_type is not None
        self.kubelet = Kubelet(
            self.store,
            self.registry,
            pod_type,
            event_type,
            workdir=config.workdir,
            base_env=self._pod_base_env(),
            restart_backoff=config.restart_backoff,
            max_backoff=config.max_restart_backoff,
            log_dir=config.pod_log_dir,
        )
        self.openapi = OpenApi(self.types)
        self._tasks: list[asyncio.Task[None]] = []
        self._protobuf: protobuf.Schema | None = None
        self.store.subscribe(self._on_event)

    def _pod_base_env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.config.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.config.kubeconfig)
        return env

    def protobuf_schema(self) -> protobuf.Schema | None:
        """Message descriptors for protobuf bodies, read from kubectl on first use."""
        if self._protobuf is None and self.config.kubectl is not None:
            self._protobuf = protobuf.load_schema(self.config.kubectl)
        return self._protobuf

    async def start(self) -> None:
        self._bootstrap()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self.gc.run()))
        if self.workloads is not None:
            self._tasks.append(loop.create_task(self.workloads.run()))

    async def stop(self) -> None:
        for task in self._tasks:  # first, so no controller starts pods while the kubelet stops
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.kubelet.shutdown()
        self.store.close_watches()

    def _bootstrap(self) -> None:
        system = Options(field_manager="kube-apiserver")
        for name in DEFAULT_NAMESPACES:
            self._create("", "v1", "namespaces", "", {"metadata": {"name": name}}, system)
        self._create(
            "",
            "v1",
            "nodes",
            "",
            {
                "metadata": {
                    "name": NODE_NAME,
                    "labels": {"kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux"},
                },
                "status": {
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "KubeletReady",
                            "message": "kubelet is posting ready status",
                        }
                    ],
                    "addresses": [
                        {"type": "InternalIP", "address": "127.0.0.1"},
                        {"type": "Hostname", "address": NODE_NAME},
                    ],
                    "capacity": {"cpu": str(os.cpu_count() or 1), "pods": "1000"},
                    "allocatable": {"cpu": str(os.cpu_count() or 1), "pods": "1000"},
                    "nodeInfo": {
                        "kubeletVersion": "v1.33.0",
                        "operatingSystem": "linux",
                        "architecture": "amd64",
                        "containerRuntimeVersion": "process://",
                    },
                },
            },
            system,
        )

    def _create(
        self, group: str, version: str, plural: str, namespace: str, body: JSON, options: Options
    ) -> None:
        rtype = self.types.get(group, version, plural)
        assert rtype is not None
        with contextlib.suppress(ApiError):
            self.registry.create(rtype, namespace, {**body}, options)

    def _on_event(self, event: Event) -> None:
        """The service-account controller: every new namespace gets a ``default`` account."""
        if event.storage_key == "namespaces" and event.type == "ADDED":
            name = event.obj["metadata"]["name"]
            asyncio.get_running_loop().call_soon(
                self._create,
                "",
                "v1",
                "serviceaccounts",
                name,
                {"metadata": {"name": "default"}},
                Options(field_manager="kube-controller-manager"),
            )
