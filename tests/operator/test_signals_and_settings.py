"""Signal decisions, status patches and the operator's settings."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ergon_operator.reconciler import status_patch
from ergon_operator.resources import FlowRun, Signal
from ergon_operator.settings import Settings, SettingsError
from ergon_operator.signals import decide_signal, spec_deliveries

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def run(phase: str | None = "Suspended", signals: dict[str, object] | None = None,
        delivered: list[str] | None = None) -> FlowRun:  # fmt: skip
    return FlowRun.parse(
        {
            "metadata": {"name": "approval-7", "namespace": "ns", "uid": "uid-7"},
            "spec": {
                "flow": "examples.approval:ApprovalFlow",
                "input": {},
                "signals": signals or {},
            },
            "status": {"phase": phase, "deliveredSignals": delivered or []},
        }
    )


def signal(phase: str | None = None) -> Signal:
    return Signal.parse(
        {
            "metadata": {"name": "s1", "namespace": "ns", "uid": "sig-uid"},
            "spec": {"flowRun": "approval-7", "name": "approval", "payload": {"approved": True}},
            "status": {"phase": phase} if phase else {},
        }
    )


def test_spec_signals_are_delivered_once_each_with_a_stable_id() -> None:
    pending = spec_deliveries(run(signals={"b": 2, "approval": {"approved": True}}))
    assert [(d.name, d.payload, d.signal_id) for d in pending] == [
        ("approval", {"approved": True}, "spec:uid-7:approval"),
        ("b", 2, "spec:uid-7:b"),
    ]
    assert spec_deliveries(run(signals={"approval": 1}, delivered=["approval"])) == []


def test_a_signal_for_a_missing_flowrun_waits() -> None:
    decision = decide_signal(signal(), None, NOW)
    assert decision is not None and decision.deliver_to is None
    assert decision.status["phase"] == "Pending"
    assert "does not exist" in decision.status["message"]


def test_a_signal_for_an_ended_flowrun_is_rejected() -> None:
    decision = decide_signal(signal(), run("Succeeded"), NOW)
    assert decision is not None and decision.status["phase"] == "Rejected"
    assert "has ended (Succeeded)" in decision.status["message"]


def test_a_signal_is_delivered_to_the_flowruns_flow() -> None:
    decision = decide_signal(signal(), run("Suspended"), NOW)
    assert decision is not None and decision.deliver_to == "uid-7"
    assert decision.status["phase"] == "Delivered"
    assert decision.status["deliveredAt"] == "2026-11-24T12:00:00Z"
    assert decide_signal(signal("Delivered"), run(), NOW) is None


def test_status_patch_sends_only_changes_and_deletes_with_null() -> None:
    current = {
        "phase": "Running",
        "podName": "x-1",
        "waitingFor": {"signal": "a"},
        "waiting": "signal:a",
    }
    desired = {
        "phase": "Running",
        "podName": "x-1",
        "waitingFor": None,
        "waiting": "",
        "attempts": 1,
    }
    assert status_patch(current, desired) == {"waitingFor": None, "waiting": "", "attempts": 1}
    assert status_patch(desired | {"waitingFor": None}, desired) == {}


def test_settings_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "ERGON_STORE": "postgresql://u@db/ergon",
            "ERGON_STORE_SECRET": "pg/url",
            "ERGON_WORKER_IMAGE": "me/worker:1",
            "ERGON_WATCH_NAMESPACE": "apps",
            "ERGON_HEALTH_PORT": "9090",
        }
    )
    assert (settings.store_secret, settings.store_secret_key) == ("pg", "url")
    assert (settings.worker_image, settings.watch_namespaces, settings.health_port) == (
        "me/worker:1",
        ("apps",),
        9090,
    )
    defaults = Settings.from_env({"ERGON_STORE": "postgresql://x", "ERGON_STORE_SECRET": "s"})
    assert defaults.store_secret_key == "dsn" and defaults.watch_namespaces == ()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "ERGON_STORE is not set"),
        ({"ERGON_STORE": "postgresql://x"}, "ERGON_STORE_SECRET is not set"),
        (
            {"ERGON_STORE": "p://x", "ERGON_STORE_SECRET": "s", "ERGON_HEALTH_PORT": "http"},
            "port number",
        ),
    ],
)
def test_bad_settings_say_what_to_set(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)
