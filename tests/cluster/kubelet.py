"""The process kubelet: each Pod's first container runs as a local subprocess.

For every Pod the store holds, a :class:`PodRunner` task walks the life a real kubelet gives it:
resolve env (a missing Secret/ConfigMap/key keeps the pod ``Pending`` with
``CreateContainerConfigError`` until it appears), start ``command + args`` in its own process
group, report ``Running`` with ``startTime``/``podIP``/conditions, record the exit as a
``terminated`` state (``Completed``/``Error``, 128+signal for signals), and then either restart
(``Always``/``OnFailure``, with a doubling back-off shown as ``CrashLoopBackOff``) or finish
(``Succeeded``/``Failed``).

Deletion is graceful: ``deletionTimestamp`` appears at once, the process group gets SIGTERM,
then SIGKILL when ``deletionGracePeriodSeconds`` run out, and only when the process is gone does
the kubelet remove the Pod object, as a real one does. :meth:`Kubelet.kill` lets tests end a
process abruptly (OOM, crash, node loss, eviction).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .builtins import NODE_NAME
from .errors import ApiError, bad_request, not_found
from .podenv import ConfigError, container_argv, container_env
from .podlogs import ContainerLog
from .podstatus import running, terminal, waiting
from .registry import DeleteOptions, Options, Registry, timestamp
from .resources import ResourceType
from .store import Event, Store

JSON = dict[str, Any]
log = logging.getLogger(__name__)
_MANAGER = "kubelet"


@dataclass(frozen=True)
class KillRequest:
    """How a test wants a pod's process to die and be reported."""

    reason: str
    exit_code: int
    pod_reason: str = ""  # set: the pod fails for good (node lost, evicted), no restart
    message: str = ""
    delete: bool = False


KILL_MODES: dict[str, KillRequest] = {
    "kill": KillRequest("Error", 137),
    "oom": KillRequest("OOMKilled", 137),
    "node-lost": KillRequest(
        "ContainerStatusUnknown",
        137,
        pod_reason="NodeLost",
        message="Node test-node which was running the pod is unresponsive",
    ),
    "evict": KillRequest(
        "Error", 137, pod_reason="Evicted", message="The node was low on resource: memory."
    ),
    "delete": KillRequest("Error", 137, delete=True),
}


@dataclass(eq=False)
class PodRunner:
    uid: str
    namespace: str
    name: str
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    process: asyncio.subprocess.Process | None = None
    log: ContainerLog | None = None
    previous_log: ContainerLog | None = None
    kill_request: KillRequest | None = None
    needs_config: bool = False  # waiting for a Secret or ConfigMap to appear
    stop_deadline: float | None = None
    stop_task: asyncio.Task[None] | None = None
    task: asyncio.Task[None] | None = None


class Kubelet:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        pod_type: ResourceType,
        event_type: ResourceType,
        *,
        workdir: Path,
        base_env: dict[str, str],
        restart_backoff: float = 1.0,
        max_backoff: float = 30.0,
    ) -> None:
        self._store = store
        self._registry = registry
        self._pod_type = pod_type
        self._event_type = event_type
        self._workdir = workdir
        self._base_env = base_env
        self._restart_backoff = restart_backoff
        self._max_backoff = max_backoff
        self._runners: dict[str, PodRunner] = {}
        store.subscribe(self._on_event)

    # store events

    def _on_event(self, event: Event) -> None:
        if event.storage_key in ("secrets", "configmaps"):
            namespace = event.obj["metadata"].get("namespace")
            for waiting in self._runners.values():
                if waiting.needs_config and waiting.namespace == namespace:
                    waiting.wake.set()
            return
        if event.storage_key != "pods":
            return
        meta = event.obj["metadata"]
        uid = str(meta["uid"])
        runner: PodRunner | None = self._runners.get(uid)
        if event.type == "DELETED":
            if runner is not None:
                self._request_stop(runner, grace=0)
                runner.wake.set()
            return
        if runner is None:
            phase = (event.obj.get("status") or {}).get("phase")
            if event.type != "ADDED" or phase in ("Succeeded", "Failed"):
                return
            runner = PodRunner(uid, meta["namespace"], meta["name"])
            self._runners[uid] = runner
            self._record(
                runner,
                "Scheduled",
                f"Successfully assigned {runner.namespace}/{runner.name} to {NODE_NAME}",
                component="default-scheduler",
            )
            runner.task = asyncio.get_running_loop().create_task(self._lifecycle(runner))
            return
        if meta.get("deletionTimestamp"):
            if runner.stop_deadline is None and runner.process is not None:
                container = event.obj["spec"]["containers"][0]["name"]
                self._record(runner, "Killing", f"Stopping container {container}")
            self._request_stop(runner, grace=int(meta.get("deletionGracePeriodSeconds") or 0))
            runner.wake.set()

    # the life of one pod

    async def _lifecycle(self, runner: PodRunner) -> None:
        try:
            await self._run(runner)
            await self._finish(runner)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("kubelet: pod %s/%s failed", runner.namespace, runner.name)
        finally:
            _kill_group(runner.process, signal.SIGKILL)
            self._runners.pop(runner.uid, None)

    async def _run(self, runner: PodRunner) -> None:
        restarts, backoff = 0, self._restart_backoff
        while (pod := self._pod(runner)) is not None and not _deleting(pod):
            container = pod["spec"]["containers"][0]
            try:
                env = container_env(self._store, pod, container, self._base_env)
                argv = container_argv(container, env)
            except ConfigError as exc:
                self._set_status(
                    runner, waiting, pod, "CreateContainerConfigError", str(exc), restarts
                )
                self._record(runner, "Failed", f"Error: {exc}", warning=True)
                runner.needs_config = True
                await self._sleep(runner, None)
                runner.needs_config = False
                continue
            if not argv:
                self._set_status(
                    runner,
                    waiting,
                    pod,
                    "CreateContainerError",
                    "the test cluster has no images: set the container's command",
                    restarts,
                )
                await self._sleep(runner, None)
                continue
            exit_code, reason, started = await self._run_once(runner, pod, argv, env, restarts)
            kill, runner.kill_request = runner.kill_request, None
            pid = runner.process.pid if runner.process else 0
            terminated = {
                "exitCode": exit_code,
                "reason": reason,
                "startedAt": started,
                "finishedAt": timestamp(),
                "containerID": f"process://{pid}",
            }
            pod = self._pod(runner)
            if pod is None:
                return
            if kill is not None and (kill.pod_reason or kill.delete):
                self._set_status(
                    runner, terminal, pod, terminated, restarts, kill.pod_reason, kill.message
                )
                if kill.delete:
                    self._force_delete(runner)
                return
            policy = pod["spec"].get("restartPolicy", "Always")
            if _deleting(pod) or policy == "Never" or (policy == "OnFailure" and exit_code == 0):
                self._set_status(runner, terminal, pod, terminated, restarts, "", "")
                return
            restarts += 1
            message = (
                f"back-off {backoff:g}s restarting failed container={container['name']} "
                f"pod={runner.name}_{runner.namespace}({runner.uid})"
            )
            self._set_status(
                runner, waiting, pod, "CrashLoopBackOff", message, restarts, terminated
            )
            self._record(
                runner,
                "BackOff",
                f"Back-off restarting failed container {container['name']} in pod {runner.name}",
                warning=True,
            )
            await self._sleep(runner, backoff)
            backoff = min(backoff * 2, self._max_backoff)

    async def _run_once(
        self,
        runner: PodRunner,
        pod: JSON,
        argv: list[str],
        env: dict[str, str],
        restarts: int,
    ) -> tuple[int, str, str]:
        container = pod["spec"]["containers"][0]
        runner.previous_log, runner.log = runner.log, ContainerLog()
        workdir = self._working_directory(container)
        started = timestamp()
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                env=env,
                cwd=workdir,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            runner.log.append(f"exec {argv[0]!r} failed: {exc}\n".encode())
            runner.log.close()
            return 128, "StartError", started
        runner.process = process
        log.debug("pod %s/%s: started pid %d: %s", runner.namespace, runner.name, process.pid, argv)
        self._set_status(runner, running, pod, started, process.pid, restarts)
        self._record(runner, "Started", f"Started container {container['name']}")
        if runner.stop_deadline is not None:  # deleted while starting
            self._start_stop(runner)
        reader = asyncio.get_running_loop().create_task(_pump(process, runner.log))
        code = await process.wait()
        _kill_group(process, signal.SIGKILL)  # the container's other processes die with it
        try:
            await asyncio.wait_for(reader, timeout=2)
        except TimeoutError:
            runner.log.close()
        exit_code = code if code >= 0 else 128 - code
        kill = runner.kill_request
        if kill is not None:
            return kill.exit_code, kill.reason, started
        return exit_code, "Completed" if exit_code == 0 else "Error", started

    def _working_directory(self, container: JSON) -> Path:
        """The container's workingDir if this machine has it, else the configured default."""
        wanted = Path(str(container.get("workingDir") or self._workdir))
        if wanted.is_dir():
            return wanted
        log.debug("workingDir %s does not exist here; using %s", wanted, self._workdir)
        return self._workdir

    async def _sleep(self, runner: PodRunner, seconds: float | None) -> None:
        """Wait for a wake-up (deletion, config change) or the back-off, whichever is first."""
        runner.wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(runner.wake.wait(), timeout=seconds)

    async def _finish(self, runner: PodRunner) -> None:
        """Stay until the pod is deleted; then end the process and remove the object."""
        while (pod := self._pod(runner)) is not None and not _deleting(pod):
            await self._sleep(runner, None)
        if runner.stop_task is not None:
            await runner.stop_task
        if pod is not None:
            with contextlib.suppress(ApiError):
                self._registry.delete(
                    self._pod_type,
                    runner.namespace,
                    runner.name,
                    DeleteOptions(grace_period=0, precondition_uid=runner.uid),
                )

    # stopping

    def _request_stop(self, runner: PodRunner, grace: int) -> None:
        deadline = asyncio.get_running_loop().time() + grace
        if runner.stop_deadline is None or deadline < runner.stop_deadline:
            runner.stop_deadline = deadline
        self._start_stop(runner)

    def _start_stop(self, runner: PodRunner) -> None:
        running = runner.process is not None and runner.process.returncode is None
        if running and runner.stop_task is None:
            runner.stop_task = asyncio.get_running_loop().create_task(self._stop(runner))

    async def _stop(self, runner: PodRunner) -> None:
        """SIGTERM, then SIGKILL at the deadline (which a later delete may bring forward)."""
        process = runner.process
        if process is None or process.returncode is not None:
            return
        _kill_group(process, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        while process.returncode is None:
            remaining = (runner.stop_deadline or 0) - loop.time()
            if remaining <= 0:
                _kill_group(process, signal.SIGKILL)
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(process.wait()), timeout=min(remaining, 0.5))
        await process.wait()

    def _force_delete(self, runner: PodRunner) -> None:
        with contextlib.suppress(ApiError):
            self._registry.delete(
                self._pod_type,
                runner.namespace,
                runner.name,
                DeleteOptions(grace_period=0, precondition_uid=runner.uid),
            )

    # test hooks and log access

    def kill(
        self,
        namespace: str,
        name: str,
        mode: str,
        reason: str | None = None,
        exit_code: int | None = None,
    ) -> None:
        runner = self._runner(namespace, name)
        if mode not in KILL_MODES:
            raise bad_request(f"unknown kill mode {mode!r}; use one of {sorted(KILL_MODES)}")
        request = KILL_MODES[mode]
        if reason is not None or exit_code is not None:
            request = KillRequest(
                reason or request.reason,
                request.exit_code if exit_code is None else exit_code,
                request.pod_reason,
                request.message,
                request.delete,
            )
        if runner is None or runner.process is None or runner.process.returncode is not None:
            raise bad_request(f'pod "{name}" has no running process')
        runner.kill_request = request
        _kill_group(runner.process, signal.SIGKILL)

    def container_log(
        self, namespace: str, name: str, container: str | None, previous: bool
    ) -> ContainerLog:
        pod = self._store.get("pods", namespace, name)
        if pod is None:
            raise not_found("pods", name)
        names = [c.get("name") for c in pod["spec"].get("containers") or []]
        if container and container not in names:
            raise bad_request(f"container {container} is not valid for pod {name}")
        runner = self._runner(namespace, name)
        chosen = None
        if runner is not None:
            chosen = runner.previous_log if previous else runner.log
        if chosen is None:
            raise bad_request(
                f'container "{container or names[0]}" in pod "{name}" is waiting '
                "to start: ContainerCreating"
            )
        return chosen

    def _runner(self, namespace: str, name: str) -> PodRunner | None:
        pod = self._store.get("pods", namespace, name)
        if pod is None:
            raise not_found("pods", name)
        return self._runners.get(str(pod["metadata"]["uid"]))

    async def shutdown(self) -> None:
        """Stop every process (SIGTERM, a moment, SIGKILL) and cancel the runners."""
        runners = list(self._runners.values())
        for runner in runners:
            _kill_group(runner.process, signal.SIGTERM)
        waits = [r.process.wait() for r in runners if r.process and r.process.returncode is None]
        if waits:
            await asyncio.wait([asyncio.ensure_future(w) for w in waits], timeout=2)
        for runner in runners:
            _kill_group(runner.process, signal.SIGKILL)
            if runner.task is not None:
                runner.task.cancel()
        for runner in runners:
            if runner.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await runner.task

    # status

    def _pod(self, runner: PodRunner) -> JSON | None:
        pod = self._store.get("pods", runner.namespace, runner.name)
        if pod is None or pod["metadata"]["uid"] != runner.uid:
            return None
        return pod

    def _set_status(self, runner: PodRunner, build: Callable[..., None], *args: Any) -> None:
        """Write the status ``build(status, *args)`` makes of the pod's current status."""
        pod = self._pod(runner)
        if pod is None:
            return
        new = copy.deepcopy(pod)
        build(new.setdefault("status", {}), *args)
        with contextlib.suppress(ApiError):
            self._registry.update(
                self._pod_type,
                runner.namespace,
                runner.name,
                new,
                Options(field_manager=_MANAGER),
                "status",
            )

    def _record(
        self,
        runner: PodRunner,
        reason: str,
        message: str,
        *,
        warning: bool = False,
        component: str = "kubelet",
    ) -> None:
        """Post a core/v1 Event about the pod, as the kubelet and scheduler do."""
        stamp = timestamp()
        event = {
            "metadata": {"generateName": f"{runner.name}.", "namespace": runner.namespace},
            "involvedObject": {
                "kind": "Pod",
                "apiVersion": "v1",
                "namespace": runner.namespace,
                "name": runner.name,
                "uid": runner.uid,
            },
            "reason": reason,
            "message": message,
            "type": "Warning" if warning else "Normal",
            "source": {"component": component, "host": NODE_NAME},
            "count": 1,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "reportingComponent": component,
            "reportingInstance": NODE_NAME,
        }
        with contextlib.suppress(ApiError):
            self._registry.create(
                self._event_type, runner.namespace, event, Options(field_manager=component)
            )


async def _pump(process: asyncio.subprocess.Process, sink: ContainerLog) -> None:
    assert process.stdout is not None
    try:
        while chunk := await process.stdout.read(65536):
            sink.append(chunk)
    finally:
        sink.close()


def _kill_group(process: asyncio.subprocess.Process | None, sig: signal.Signals) -> None:
    if process is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _deleting(pod: JSON) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))
