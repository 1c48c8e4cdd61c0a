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

Volumes and a read-only root: the pod's ``emptyDir``, ``configMap`` and ``secret`` volumes are
directories under the kubelet's state directory (``pods/UID/volumes/NAME``; a missing Secret or
ConfigMap keeps the pod ``ContainerCreating`` with ``FailedMount`` Events, as on a real node).
A container with ``volumeMounts`` or ``securityContext.readOnlyRootFilesystem`` starts through
``sandbox.py`` in its own user and mount namespaces (``unshare``), which binds the volumes onto
their mount paths and makes every other mount read-only. Where user namespaces do not work such
a container fails with ``CreateContainerError``: it never runs with a writable root instead. The
pod's directories go when the pod does.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .builtins import NODE_NAME
from .errors import ApiError, bad_request, not_found
from .podenv import (
    VOLUME_KINDS,
    ConfigError,
    MountError,
    Volume,
    container_argv,
    container_env,
    pod_volumes,
)
from .podlogs import ContainerLog
from .podstatus import running, terminal, waiting
from .registry import DeleteOptions, Options, Registry, timestamp
from .resources import ResourceType
from .store import Event, Store

JSON = dict[str, Any]
log = logging.getLogger(__name__)
_MANAGER = "kubelet"
SANDBOX = Path(__file__).with_name("sandbox.py")
# The unshare binary; tests point this at `false` to see a machine without user namespaces.
UNSHARE_ENV = "ERGON_TEST_CLUSTER_UNSHARE"
_NAMESPACES = ("--user", "--map-root-user", "--mount", "--propagation", "private", "--")


class ContainerError(Exception):
    """The container cannot be created as specified (``CreateContainerError``)."""


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
    start_error: str = ""  # why the sandbox could not start the last container (StartError)
    mount_targets: list[str] = field(default_factory=list)  # the container's mount paths
    created_dirs: list[Path] = field(default_factory=list)  # made here for missing mount points
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
        log_dir: Path | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self._store = store
        self._registry = registry
        self._pod_type = pod_type
        self._event_type = event_type
        self._workdir = workdir
        self._base_env = base_env
        self._restart_backoff = restart_backoff
        self._max_backoff = max_backoff
        self._log_dir = log_dir  # container output is also kept here (podlogs.ContainerLog)
        # Pods' volume directories (pods/UID/...); without one, a temporary directory made on
        # first use and removed at shutdown.
        self._state_dir = state_dir
        self._own_state_dir = False
        self._unshare = os.environ.get(UNSHARE_ENV) or "unshare"
        self._namespaces_probe: asyncio.Task[str] | None = None
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
            self._remove_pod_files(runner)

    async def _run(self, runner: PodRunner) -> None:
        restarts, backoff = 0, self._restart_backoff
        while (pod := self._pod(runner)) is not None and not _deleting(pod):
            container = pod["spec"]["containers"][0]
            try:
                volumes = pod_volumes(self._store, pod)
            except MountError as exc:
                # A real kubelet mounts volumes before it creates the container: the pod stays
                # ContainerCreating, with FailedMount Events, until the object appears.
                self._set_status(runner, waiting, pod, "ContainerCreating", "", restarts)
                self._record(runner, "FailedMount", str(exc), warning=True)
                runner.needs_config = True
                await self._sleep(runner, None)
                runner.needs_config = False
                continue
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
            sandbox = None
            if _needs_sandbox(container):
                try:
                    sandbox = await self._sandbox_spec(runner, container, volumes)
                except ContainerError as exc:
                    self._set_status(
                        runner, waiting, pod, "CreateContainerError", str(exc), restarts
                    )
                    self._record(runner, "Failed", f"Error: {exc}", warning=True)
                    await self._sleep(runner, None)
                    continue
            exit_code, reason, started = await self._run_once(
                runner, pod, argv, env, restarts, sandbox
            )
            kill, runner.kill_request = runner.kill_request, None
            pid = runner.process.pid if runner.process else 0
            terminated = {
                "exitCode": exit_code,
                "reason": reason,
                "startedAt": started,
                "finishedAt": timestamp(),
                "containerID": f"process://{pid}",
            }
            if reason == "StartError" and runner.start_error:
                terminated["message"] = runner.start_error
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
        sandbox: JSON | None = None,
    ) -> tuple[int, str, str]:
        """Start the process (through the sandbox when ``sandbox`` is its spec), wait for it."""
        container = pod["spec"]["containers"][0]
        log_path = None
        if self._log_dir is not None:
            pod_dir = f"{runner.namespace}_{runner.name}_{runner.uid}"
            log_path = self._log_dir / pod_dir / str(container["name"]) / f"{restarts}.log"
        runner.previous_log, runner.log = runner.log, ContainerLog(log_path)
        workdir = self._working_directory(container)
        started = timestamp()
        runner.start_error = ""
        launch, report_fd = argv, -1
        pass_fds: tuple[int, ...] = ()
        if sandbox is not None:
            report_fd, write_fd = os.pipe()
            pass_fds = (write_fd,)
            spec = {**sandbox, "workingDir": str(workdir), "reportFd": write_fd}
            launch = [*self._sandbox_argv(spec), *argv]
        try:
            process = await asyncio.create_subprocess_exec(
                *launch,
                env=env,
                cwd=workdir,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                pass_fds=pass_fds,
            )
        except OSError as exc:
            runner.log.append(f"exec {launch[0]!r} failed: {exc}\n".encode())
            runner.log.close()
            if report_fd >= 0:
                os.close(report_fd)
            return 128, "StartError", started
        finally:
            for fd in pass_fds:
                os.close(fd)  # the child's copy is the only writer left
        runner.process = process
        reader = asyncio.get_running_loop().create_task(_pump(process, runner.log))
        if report_fd >= 0:
            runner.start_error = await self._await_sandbox(runner, report_fd)
            if runner.start_error:
                self._record(runner, "Failed", f"Error: {runner.start_error}", warning=True)
                _kill_group(process, signal.SIGKILL)  # normally gone already
                await process.wait()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(reader, timeout=2)
                return 128, "StartError", started
        log.debug("pod %s/%s: started pid %d: %s", runner.namespace, runner.name, process.pid, argv)
        self._set_status(runner, running, pod, started, process.pid, restarts)
        self._record(runner, "Started", f"Started container {container['name']}")
        if runner.stop_deadline is not None:  # deleted while starting
            self._start_stop(runner)
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

    # volumes and the sandbox

    async def _sandbox_spec(
        self, runner: PodRunner, container: JSON, volumes: dict[str, Volume]
    ) -> JSON:
        """sandbox.py's spec for this container, its volumes written out; or ContainerError."""
        problem = await self._user_namespaces()
        if problem:
            raise ContainerError(problem)
        mounts: list[JSON] = []
        written: set[str] = set()
        for mount in container.get("volumeMounts") or []:
            name, target = str(mount.get("name", "")), str(mount.get("mountPath", ""))
            volume = volumes.get(name)
            if volume is None:
                raise ContainerError(
                    f'cannot find volume "{name}" to mount into container "{container["name"]}"'
                )
            if not volume.supported:
                raise ContainerError(
                    f'volume "{name}" is a {volume.kind} volume; the test cluster provides only '
                    f"{', '.join(VOLUME_KINDS)} volumes"
                )
            if mount.get("subPath") or mount.get("subPathExpr"):
                raise ContainerError(f'volume mount "{name}": the test cluster has no subPath')
            if not target.startswith("/"):
                raise ContainerError(f'volume mount "{name}": mountPath {target!r} is not absolute')
            try:
                source = self._volume_directory(runner, volume, write=name not in written)
            except OSError as exc:
                raise ContainerError(f'volume "{name}": {exc}') from None
            written.add(name)
            read_only = volume.read_only or bool(mount.get("readOnly"))
            mounts.append({"source": str(source), "target": target, "readOnly": read_only})
        runner.mount_targets = [str(m["target"]) for m in mounts]
        security = container.get("securityContext") or {}
        return {
            "mounts": mounts,
            "readOnlyRoot": bool(security.get("readOnlyRootFilesystem")),
            # This machine stands in for the image: what the container runs must stay visible
            # when a volume is mounted over one of its parents (a checkout under /tmp).
            "image": [str(self._workdir), sys.prefix, sys.base_prefix],
        }

    def _volume_directory(self, runner: PodRunner, volume: Volume, *, write: bool) -> Path:
        """The volume's host directory: an emptyDir lives as long as the pod (it survives
        container restarts); configMap and secret files are written afresh at each start."""
        if "/" in volume.name or volume.name in ("", ".", ".."):
            raise OSError(f"invalid volume name {volume.name!r}")
        directory = self._pod_directory(runner) / "volumes" / volume.name
        if volume.kind == "emptyDir":
            if not directory.is_dir():
                directory.mkdir(parents=True)
                directory.chmod(0o777)  # as a real kubelet makes it
            return directory
        if write:
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
            for path, (data, mode) in volume.files.items():
                file = directory / path
                file.parent.mkdir(parents=True, exist_ok=True)
                file.write_bytes(data)
                file.chmod(mode & 0o777)
        return directory

    def _pod_directory(self, runner: PodRunner) -> Path:
        if self._state_dir is None:
            self._state_dir = Path(tempfile.mkdtemp(prefix="ergon-kubelet-"))
            self._own_state_dir = True
        return self._state_dir / "pods" / runner.uid

    def _sandbox_argv(self, spec: JSON) -> list[str]:
        """unshare + sandbox.py; the container's argv follows."""
        sandbox = [sys.executable, "-I", "-S", str(SANDBOX), json.dumps(spec), "--"]
        return [self._unshare, *_NAMESPACES, *sandbox]

    async def _await_sandbox(self, runner: PodRunner, report_fd: int) -> str:
        """Read the sandbox's report until its exec closes the pipe: "" or why it failed."""
        lines = (await _read_until_eof(report_fd, timeout=30)).decode(errors="replace")
        error, ready = "", False
        for line in lines.splitlines():
            kind, _, text = line.partition(" ")
            if kind == "created":
                runner.created_dirs.append(Path(text))
            elif kind == "error":
                error = error or text
            elif kind == "ready":
                ready = True
        if not error and not ready:  # unshare itself failed, or the sandbox died
            error = "the sandbox did not start the container (unshare failed?); see its log"
        return error

    async def _user_namespaces(self) -> str:
        """Why the sandbox cannot work on this machine, or "" (probed once, then remembered)."""
        if self._namespaces_probe is None:
            self._namespaces_probe = asyncio.get_running_loop().create_task(self._probe())
        return await asyncio.shield(self._namespaces_probe)

    async def _probe(self) -> str:
        """Run the sandbox with a read-only root once: does it work here?"""
        spec = {"mounts": [], "readOnlyRoot": True, "workingDir": "/"}
        argv = [*self._sandbox_argv(spec), sys.executable, "-I", "-S", "-c", ""]
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            output, _ = await asyncio.wait_for(process.communicate(), timeout=30)
            failure = "" if process.returncode == 0 else f"exit code {process.returncode}"
            detail = output.decode(errors="replace").strip()
        except (OSError, TimeoutError) as exc:
            failure, detail = type(exc).__name__, str(exc)
        if not failure:
            return ""
        problem = (
            "readOnlyRootFilesystem and volume mounts need user namespaces, which do not work "
            f"on this machine ({self._unshare} {' '.join(_NAMESPACES[:-1])}: {failure}"
            f"{': ' + detail if detail else ''}); the test cluster does not run such a "
            "container with a writable root filesystem"
        )
        log.error("kubelet: %s", problem)
        return problem

    def _remove_pod_files(self, runner: PodRunner) -> None:
        """The pod is gone: remove its volumes and the mount points made for it."""
        if self._state_dir is not None:
            shutil.rmtree(self._state_dir / "pods" / runner.uid, ignore_errors=True)
        for directory in runner.created_dirs:
            users = [
                other
                for other in self._runners.values()
                if any(_is_under(Path(t), directory) for t in other.mount_targets)
            ]
            if users:  # another pod mounts something there: it removes the directory later
                users[0].created_dirs.append(directory)
            else:
                _remove_empty_directories(directory)
        runner.created_dirs = []

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
        if self._own_state_dir and self._state_dir is not None:
            shutil.rmtree(self._state_dir, ignore_errors=True)

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


def _needs_sandbox(container: JSON) -> bool:
    security = container.get("securityContext") or {}
    return bool(container.get("volumeMounts") or security.get("readOnlyRootFilesystem"))


async def _read_until_eof(fd: int, timeout: float) -> bytes:
    """Everything written to the pipe ``fd`` until its writers close it (then ``fd`` is closed)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    pipe = os.fdopen(fd, "rb", buffering=0)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        return await asyncio.wait_for(reader.read(), timeout=timeout)
    except TimeoutError:
        return b""
    finally:
        transport.close()


def _is_under(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents


def _remove_empty_directories(top: Path) -> None:
    """Remove ``top`` and the directories below it, bottom up, as long as they are empty."""
    for root, _, _ in sorted(os.walk(top), key=lambda entry: -len(entry[0])):
        with contextlib.suppress(OSError):
            os.rmdir(root)
