"""Pod status as the kubelet reports it: phase, conditions and container states.

Pure functions over a status dict, so the kubelet's life-cycle code reads as "the process started"
or "the process ended" and the field-by-field shape Kubernetes clients expect lives here.
"""

from __future__ import annotations

from typing import Any

from .registry import timestamp

JSON = dict[str, Any]


def _base(status: JSON, pod: JSON) -> None:
    status.setdefault("startTime", timestamp())
    status["hostIP"] = "127.0.0.1"
    status["hostIPs"] = [{"ip": "127.0.0.1"}]
    status.setdefault("qosClass", "BestEffort")


def _conditions(status: JSON, *, ready: bool, reason: str = "") -> None:
    stamp = timestamp()
    previous = {c.get("type"): c for c in status.get("conditions") or []}
    out = []
    for kind, value in (
        ("PodReadyToStartContainers", True),
        ("Initialized", True),
        ("Ready", ready),
        ("ContainersReady", ready),
        ("PodScheduled", True),
    ):
        text = "True" if value else "False"
        old = previous.get(kind)
        if old is not None and old.get("status") == text:
            out.append(old)
            continue
        condition = {
            "type": kind,
            "status": text,
            "lastProbeTime": None,
            "lastTransitionTime": stamp,
        }
        if not value and reason:
            condition["reason"] = reason
        out.append(condition)
    status["conditions"] = out


def _container_statuses(
    pod: JSON,
    state: JSON,
    restarts: int,
    ready: bool,
    last: JSON | None = None,
    container_id: str = "",
) -> list[JSON]:
    """One entry per container; containers after the first mirror it (they are not run)."""
    out = []
    for container in pod["spec"].get("containers") or []:
        entry: JSON = {
            "name": container.get("name"),
            "image": container.get("image", ""),
            "imageID": "",
            "ready": ready,
            "started": "running" in state,
            "restartCount": restarts,
            "state": state,
            "lastState": {"terminated": last} if last else {},
        }
        if container_id:
            entry["containerID"] = container_id
        out.append(entry)
    return out


def waiting(
    status: JSON, pod: JSON, reason: str, message: str, restarts: int, last: JSON | None = None
) -> None:
    _base(status, pod)
    status["phase"] = "Running" if restarts else "Pending"
    _conditions(status, ready=False, reason="ContainersNotReady")
    status["containerStatuses"] = _container_statuses(
        pod, {"waiting": {"reason": reason, "message": message}}, restarts, False, last
    )


def running(status: JSON, pod: JSON, started: str, pid: int, restarts: int) -> None:
    _base(status, pod)
    status["phase"] = "Running"
    status["podIP"] = "127.0.0.1"
    status["podIPs"] = [{"ip": "127.0.0.1"}]
    _conditions(status, ready=True)
    last = None
    for entry in status.get("containerStatuses") or []:
        last = (entry.get("lastState") or {}).get("terminated")
        break
    status["containerStatuses"] = _container_statuses(
        pod,
        {"running": {"startedAt": started}},
        restarts,
        True,
        last,
        container_id=f"process://{pid}",
    )


def terminal(
    status: JSON, pod: JSON, terminated: JSON, restarts: int, reason: str, message: str
) -> None:
    _base(status, pod)
    succeeded = terminated["exitCode"] == 0 and not reason
    status["phase"] = "Succeeded" if succeeded else "Failed"
    if reason:
        status["reason"], status["message"] = reason, message
    _conditions(status, ready=False, reason="PodCompleted" if succeeded else "PodFailed")
    last = None
    for entry in status.get("containerStatuses") or []:
        last = (entry.get("lastState") or {}).get("terminated")
        break
    status["containerStatuses"] = _container_statuses(
        pod,
        {"terminated": terminated},
        restarts,
        False,
        last,
        container_id=terminated.get("containerID", ""),
    )
