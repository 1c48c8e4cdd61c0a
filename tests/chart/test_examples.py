"""examples/k8s/: valid against the CRDs, and what the docs and kind scripts say they are; and the
CRD schemas reject the bad specs docs/kubernetes.md says the schema rejects."""

from __future__ import annotations

import copy
import importlib
import importlib.util
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

from tests.chart.helm import EXAMPLES_DIR
from tests.chart.schemas import validate_custom

EXAMPLES = sorted(EXAMPLES_DIR.glob("*.yaml"))


def _load(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((EXAMPLES_DIR / name).read_text()))


def test_the_examples_exist() -> None:
    assert [path.name for path in EXAMPLES] == [
        "flowrun-approval.yaml",
        "flowrun-on-pool.yaml",
        "flowrun-order.yaml",
        "flowrun-settlement.yaml",
        "signal-approval.yaml",
        "workerpool-orders.yaml",
    ]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_example_matches_its_crd(path: Path) -> None:
    (resource,) = list(yaml.safe_load_all(path.read_text()))
    assert "namespace" not in resource["metadata"], "examples go into the namespace given with -n"
    validate_custom(resource)


def test_examples_are_what_the_docs_say() -> None:
    order = _load("flowrun-order.yaml")
    assert order["metadata"]["name"] == "order-42"
    assert order["spec"]["flow"] == "examples.orders:OrderFlow"
    assert order["spec"]["input"] == {"order_id": "42", "amount": 99.5}
    approval = _load("flowrun-approval.yaml")
    assert approval["spec"]["flow"] == "examples.approval:ApprovalFlow"
    signal = _load("signal-approval.yaml")
    assert signal["kind"] == "Signal"
    assert signal["spec"]["flowRun"] == approval["metadata"]["name"]
    assert signal["spec"]["name"] == "approval"
    assert signal["spec"]["payload"] == {"approved": True, "by": "ops"}
    settlement = _load("flowrun-settlement.yaml")
    assert settlement["spec"]["flow"] == "examples.settlement:SettlementFlow"
    pool = _load("workerpool-orders.yaml")
    on_pool = _load("flowrun-on-pool.yaml")
    assert on_pool["spec"]["workerPool"] == pool["metadata"]["name"] == "orders"
    assert on_pool["spec"]["flow"].split(":")[0] in pool["spec"]["imports"]


@pytest.mark.parametrize(
    "name", ["flowrun-order.yaml", "flowrun-approval.yaml", "flowrun-settlement.yaml"]
)
def test_example_input_fits_its_flow(name: str) -> None:
    """When the example's flow module exists, its input must validate against the Flow model."""
    spec = _load(name)["spec"]
    module_name, _, class_name = spec["flow"].partition(":")
    if importlib.util.find_spec(module_name.split(".")[0]) is None or (
        importlib.util.find_spec(module_name) is None
    ):
        pytest.skip(f"{module_name} is not written yet")
    flow_class = getattr(importlib.import_module(module_name), class_name)
    flow_class.model_validate(spec["input"])


def _order() -> dict[str, Any]:
    return _load("flowrun-order.yaml")


def _with(path: str, value: Any) -> dict[str, Any]:
    """The order example with the dotted ``path`` set to ``value`` (deleted when value is ...)."""
    resource = copy.deepcopy(_order())
    *parents, last = path.split(".")
    node = resource
    for key in parents:
        node = node.setdefault(key, {})
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return resource


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("spec.flow", ...),
        ("spec.input", ...),
        ("spec.flow", "examples.orders.OrderFlow"),
        ("spec.flow", "examples/orders:OrderFlow"),
        ("spec.flow", ":OrderFlow"),
        ("spec.input", "not an object"),
        ("spec.retry.maxAttempts", 0),
        ("spec.retry.backoffSeconds", -1),
        ("spec.retry.maxAttempts", "3"),
        ("spec.timeoutSeconds", 0),
        ("spec.cancel", "yes"),
        ("spec.podTemplate.serviceAccountName", "Not_A_Name"),
        ("spec.podTemplate.resources", {"limits": {"memory": "lots"}}),
        ("spec.podTemplate.tolerations", [{"operator": "Maybe"}]),
        ("spec.retries", {"maxAttempts": 3}),
        ("status.phase", "Done"),
    ],
)
def test_schema_rejects_bad_flowrun(path: str, value: Any) -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate_custom(_with(path, value))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("spec.flow", "orders:OrderFlow"),
        ("spec.flow", "pkg.sub.mod:Outer.Inner"),
        ("spec.input", {}),
        ("spec.input", {"nested": {"any": ["json", 1, 2.5, True, None]}}),
        ("spec.signals", {"approval": {"approved": True}, "note": "text", "count": 3}),
        (
            "spec.podTemplate",
            {
                "serviceAccountName": "flows",
                "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": 1}},
                "env": [
                    {"name": "LOG_LEVEL", "value": "debug"},
                    {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "api", "key": "k"}}},
                ],
                "nodeSelector": {"pool": "flows"},
                "tolerations": [
                    {
                        "key": "dedicated",
                        "operator": "Equal",
                        "value": "flows",
                        "effect": "NoSchedule",
                    }
                ],
                "labels": {"team": "payments"},
                "annotations": {"note": "x"},
            },
        ),
        (
            "status",
            {
                "phase": "Suspended",
                "waitingFor": {"timer": "2026-11-24T20:00:00Z"},
                "waiting": "timer:2026-11-24T20:00:00Z",
                "attempts": 1,
                "stepsCompleted": 2,
                "conditions": [
                    {
                        "type": "Succeeded",
                        "status": "Unknown",
                        "reason": "Suspended",
                        "lastTransitionTime": "2026-11-24T19:00:00Z",
                    }
                ],
                "result": None,
                "deliveredSignals": ["approval"],
            },
        ),
    ],
)
def test_schema_accepts_good_flowrun(path: str, value: Any) -> None:
    validate_custom(_with(path, value))


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "approval"},
        {"flowRun": "approval-7"},
        {"flowRun": "Approval_7", "name": "approval"},
        {"flowRun": "approval-7", "name": ""},
    ],
)
def test_schema_rejects_bad_signal(spec: dict[str, Any]) -> None:
    signal = _load("signal-approval.yaml")
    signal["spec"] = spec
    with pytest.raises(jsonschema.ValidationError):
        validate_custom(signal)


@pytest.mark.parametrize("payload", [True, "ok", 3, [1, 2], {"approved": False}])
def test_signal_payload_is_any_json(payload: Any) -> None:
    signal = _load("signal-approval.yaml")
    signal["spec"]["payload"] = payload
    validate_custom(signal)
