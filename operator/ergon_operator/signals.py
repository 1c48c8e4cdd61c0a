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


def spec_deliveries(run: FlowRun) -> list[Delivery]:
    """Entries of `spec.signals` not yet delivered (`status.deliveredSignals` lists those that
    were). Each name is delivered once, with the payload it has when the operator first sees it;
    to signal the same name again, use a `Signal` resource.
    """
    delivered = set(run.status.delivered_signals)
    return [
        Delivery(name, payload, f"spec:{run.uid}:{name}")
        for name, payload in sorted(run.signals.items())
        if name not in delivered
    ]


@dataclass(frozen=True, slots=True)
class SignalDecision:
    """What to do with a Signal resource: deliver it (to `flow_id`), and its new status."""

    status: dict[str, Any]
    deliver_to: str | None = None


def decide_signal(signal: Signal, run: FlowRun | None, now: datetime) -> SignalDecision | None:
    """None when the Signal needs nothing (already delivered or rejected)."""
    if signal.phase in ("Delivered", "Rejected"):
        return None
    if not signal.signal:
        return SignalDecision({"phase": "Rejected", "message": "spec.name is empty"})
    if run is None or run.deleting:
        message = f"FlowRun {signal.flow_run!r} does not exist; the signal waits for it"
        if signal.status.get("message") == message and signal.phase == "Pending":
            return None
        return SignalDecision({"phase": "Pending", "message": message})
    if run.phase in TERMINAL_PHASES:
        return SignalDecision(
            {
                "phase": "Rejected",
                "message": f"FlowRun {run.name!r} has ended ({run.phase}); "
                "nothing waits for signals",
            }
        )
    return SignalDecision(
        {
            "phase": "Delivered",
            "deliveredAt": format_time(now),
            "message": f"delivered to FlowRun {run.name!r} (flow {run.uid})",
        },
        deliver_to=run.uid,
    )
