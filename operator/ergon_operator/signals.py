"""Signals to flows: from `spec.signals` on a FlowRun and from `Signal` resources. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ergon_operator.resources import TERMINAL_PHASES, FlowRun, Signal, format_time


@dataclass(frozen=True, slots=True)
class Delivery:
    """One signal to send to a flow; `signal_id` makes sending it again a no-op."""

    name: str
    payload: Any
    signal_id: str


# A `spec.signals` key becomes the signal id `spec:<uid>:<name>`, and ids have at most 255
# characters; the CRD enforces the same limit on the keys.
MAX_SPEC_SIGNAL_NAME = 200


def signal_name_problem(name: str) -> str | None:
    """Why `name` cannot be a `spec.signals` key, or None if it can."""
    if not name:
        return "a signal name cannot be empty"
    if len(name) > MAX_SPEC_SIGNAL_NAME:
        return f"a signal name in spec.signals has at most {MAX_SPEC_SIGNAL_NAME} characters"
    if "\x00" in name:
        return "a signal name cannot contain NUL"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "a signal name cannot contain an unpaired surrogate"
    return None


def invalid_spec_signals(run: FlowRun) -> dict[str, str]:
    """The `spec.signals` keys that cannot be delivered, with why (the CRD refuses them, so
    these come only from a cluster running an older CRD)."""
    problems = {name: signal_name_problem(name) for name in run.signals}
    return {name: problem for name, problem in sorted(problems.items()) if problem is not None}


def spec_deliveries(run: FlowRun) -> list[Delivery]:
    """Entries of `spec.signals` not yet delivered (`status.deliveredSignals` lists those that
    were). Each name is delivered once, with the payload it has when the operator first sees it;
    to signal the same name again, use a `Signal` resource. Invalid names are skipped, never
    raised about: `decide` reports them, and nothing else about the run is held up.
    """
    delivered = set(run.status.delivered_signals)
    return [
        Delivery(name, payload, f"spec:{run.uid}:{name}")
        for name, payload in sorted(run.signals.items())
        if name not in delivered and signal_name_problem(name) is None
    ]


@dataclass(frozen=True, slots=True)
class SignalDecision:
    """What to do with a Signal resource: deliver it (to `flow_id`), and its new status."""

    status: dict[str, Any]
    deliver_to: str | None = None


def decide_signal(signal: Signal, run: FlowRun | None, now: datetime) -> SignalDecision | None:
    """None when the Signal needs nothing (already delivered or rejected). Every status written
    carries `observedGeneration`, the Signal's generation it reflects."""
    if signal.phase in ("Delivered", "Rejected"):
        return None
    seen = {"observedGeneration": signal.generation}
    if not signal.signal:
        return SignalDecision({"phase": "Rejected", "message": "spec.name is empty", **seen})
    if run is None or run.deleting:
        message = f"FlowRun {signal.flow_run!r} does not exist; the signal waits for it"
        if (
            signal.status.get("message") == message
            and signal.phase == "Pending"
            and signal.status.get("observedGeneration") == signal.generation
        ):
            return None
        return SignalDecision({"phase": "Pending", "message": message, **seen})
    if run.phase in TERMINAL_PHASES:
        return SignalDecision(
            {
                "phase": "Rejected",
                "message": f"FlowRun {run.name!r} has ended ({run.phase}); "
                "nothing waits for signals",
                **seen,
            }
        )
    return SignalDecision(
        {
            "phase": "Delivered",
            "deliveredAt": format_time(now),
            "message": f"delivered to FlowRun {run.name!r} (flow {run.uid})",
            **seen,
        },
        deliver_to=run.uid,
    )
