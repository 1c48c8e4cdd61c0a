"""The FlowRun and Signal CRDs in crds/: valid CustomResourceDefinitions, structural schemas,
the names, columns and CEL rules docs/kubernetes.md promises, and rules that do what they say."""

from __future__ import annotations

from typing import Any

import celpy
import pytest
from celpy.adapter import json_to_cel

from tests.chart.helm import load_crd
from tests.chart.schemas import openapi_schema, validate_builtin, walk

KINDS = ["FlowRun", "Signal"]

# The only places where arbitrary JSON is kept as is.
PRESERVE_UNKNOWN = {
    "FlowRun": {".spec.input", ".spec.signals.*", ".status.result", ".status.kopf"},
    "Signal": {".spec.payload", ".status.kopf"},
}


def _version(kind: str) -> dict[str, Any]:
    (version,) = load_crd(kind)["spec"]["versions"]
    return dict(version)


@pytest.mark.parametrize("kind", KINDS)
def test_crd_is_a_valid_custom_resource_definition(kind: str) -> None:
    validate_builtin(load_crd(kind))


@pytest.mark.parametrize(
    ("kind", "plural", "short_names"),
    [("FlowRun", "flowruns", ["fr"]), ("Signal", "signals", [])],
)
def test_names_scope_and_category(kind: str, plural: str, short_names: list[str]) -> None:
    crd = load_crd(kind)
    assert crd["metadata"]["name"] == f"{plural}.ergon.dev"
    spec = crd["spec"]
    assert spec["group"] == "ergon.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == kind
    assert spec["names"]["plural"] == plural
    assert spec["names"]["singular"] == kind.lower()
    assert spec["names"].get("shortNames", []) == short_names
    assert spec["names"]["categories"] == ["ergon"]
    version = _version(kind)
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


@pytest.mark.parametrize(
    ("kind", "columns"),
    [
        (
            "FlowRun",
            [
                ("FLOW", ".spec.flow"),
                ("PHASE", ".status.phase"),
                ("REASON", ".status.conditions[0].reason"),
                ("STEPS", ".status.stepsCompleted"),
                ("WAITING", ".status.waiting"),
                ("ATTEMPTS", ".status.attempts"),
                ("AGE", ".metadata.creationTimestamp"),
            ],
        ),
        (
            "Signal",
            [
                ("FLOWRUN", ".spec.flowRun"),
                ("SIGNAL", ".spec.name"),
                ("PHASE", ".status.phase"),
                ("AGE", ".metadata.creationTimestamp"),
            ],
        ),
    ],
)
def test_printer_columns(kind: str, columns: list[tuple[str, str]]) -> None:
    printed = _version(kind)["additionalPrinterColumns"]
    default = [(c["name"].upper(), c["jsonPath"]) for c in printed if c.get("priority", 0) == 0]
    assert default == columns
    paths = {path for path, _ in walk(openapi_schema(kind))}
    for column in printed:
        path = column["jsonPath"].replace("[0]", "[]")  # an index, as the real API accepts
        if path != ".metadata.creationTimestamp":
            assert path in paths, f"column {column['name']} shows a missing field"
        schema_type = dict(walk(openapi_schema(kind))).get(path, {}).get("type")
        if column["type"] in ("integer", "string") and schema_type:
            assert column["type"] == schema_type, column


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_structural(kind: str) -> None:
    """Kubernetes' structural-schema rules, plus: preserve-unknown-fields only where intended."""
    schema = openapi_schema(kind)
    assert schema["type"] == "object"
    assert schema["properties"]["metadata"] == {"type": "object"}
    preserved = set()
    for path, node in walk(schema):
        int_or_string = node.get("x-kubernetes-int-or-string") is True
        if node.get("x-kubernetes-preserve-unknown-fields") is True:
            preserved.add(path)
        elif not int_or_string:
            assert node.get("type") in {
                "object",
                "array",
                "string",
                "integer",
                "number",
                "boolean",
            }, f"{kind}{path} has no type"
        if int_or_string:
            assert "type" not in node
            assert node.get("anyOf", [{"type": "integer"}, {"type": "string"}]) == [
                {"type": "integer"},
                {"type": "string"},
            ]
        else:
            for junctor in ("anyOf", "allOf", "oneOf", "not"):
                assert junctor not in node, f"{kind}{path} uses {junctor}"
        assert not ("properties" in node and "additionalProperties" in node), path
        if node.get("type") == "array":
            assert "items" in node, f"{kind}{path} has no items schema"
        if node.get("x-kubernetes-list-type") == "map":
            keys = node["x-kubernetes-list-map-keys"]
            assert set(keys) <= set(node["items"].get("required", [])), path
        for value in node.get("enum", []):
            assert isinstance(value, str) and node["type"] == "string", path
        if "default" in node:
            assert node["type"] in {"object", "integer", "boolean"}, path
    assert preserved == PRESERVE_UNKNOWN[kind]


@pytest.mark.parametrize("kind", KINDS)
def test_top_level_fields_are_described(kind: str) -> None:
    """`kubectl explain` shows these descriptions."""
    schema = openapi_schema(kind)
    assert schema.get("description")
    for part in ("spec", "status"):
        for name, field in schema["properties"][part]["properties"].items():
            assert field.get("description"), f"{kind}.{part}.{name} has no description"


def test_flowrun_spec_and_status_fields() -> None:
    schema = openapi_schema("FlowRun")
    spec = schema["properties"]["spec"]
    assert spec["required"] == ["flow", "input"]
    assert set(spec["properties"]) == {
        "flow",
        "input",
        "image",
        "version",
        "retry",
        "timeoutSeconds",
        "cancel",
        "signals",
        "podTemplate",
        "priority",
        "podGC",
        "ttlSecondsAfterFinished",
        "workerPool",
    }
    assert spec["properties"]["podGC"]["properties"]["strategy"]["enum"] == [
        "OnPodCompletion",
        "OnFlowRunCompletion",
        "OnFlowRunSuccess",
        "Never",
    ]
    assert spec["properties"]["priority"]["default"] == 0
    assert spec["properties"]["ttlSecondsAfterFinished"]["minimum"] == 0
    assert set(spec["properties"]["podTemplate"]["properties"]) == {
        "serviceAccountName",
        "resources",
        "env",
        "nodeSelector",
        "tolerations",
        "labels",
        "annotations",
        "volumes",
        "volumeMounts",
    }
    retry = spec["properties"]["retry"]["properties"]
    assert retry["maxAttempts"]["minimum"] == 1
    assert retry["backoffSeconds"]["minimum"] == 0
    assert retry["maxBackoffSeconds"]["minimum"] == 0
    assert spec["properties"]["timeoutSeconds"]["minimum"] == 1
    status = schema["properties"]["status"]["properties"]
    assert set(status) >= {
        "phase",
        "conditions",
        "observedGeneration",
        "flowId",
        "attempts",
        "podName",
        "stepsCompleted",
        "currentStep",
        "waitingFor",
        "waiting",
        "result",
        "error",
        "startedAt",
        "completedAt",
        "deliveredSignals",
        "lastPodEndedAt",
        "nextAttemptAt",
        "podProblemSince",
        "invalidSignals",
        "image",
        "version",
        "workerPool",
    }
    assert status["phase"]["enum"] == [
        "Pending",
        "Running",
        "Suspended",
        "Succeeded",
        "Failed",
        "Cancelled",
    ]
    assert set(status["waitingFor"]["properties"]) == {"signal", "timer", "child"}
    assert set(status["error"]["properties"]) == {"type", "message", "retryable"}
    assert status["error"]["properties"]["message"]["maxLength"] == 32768
    assert status["conditions"]["items"]["properties"]["message"]["maxLength"] == 32768
    assert set(status["conditions"]["items"]["properties"]) == {
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "observedGeneration",
    }


def test_signal_spec_and_status_fields() -> None:
    schema = openapi_schema("Signal")
    spec = schema["properties"]["spec"]
    assert spec["required"] == ["flowRun", "name"]
    assert set(spec["properties"]) == {"flowRun", "name", "payload"}
    status = schema["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == ["Pending", "Delivered", "Rejected"]
    assert {"deliveredAt", "message"} <= set(status)


def _rules(kind: str) -> dict[str, list[dict[str, str]]]:
    return {
        path or ".": node["x-kubernetes-validations"]
        for path, node in walk(openapi_schema(kind))
        if "x-kubernetes-validations" in node
    }


def test_cel_rules_present() -> None:
    flowrun = {path: [r["rule"] for r in rules] for path, rules in _rules("FlowRun").items()}
    assert flowrun[".spec.flow"] == ["self == oldSelf"]
    assert flowrun[".spec.input"] == ["self == oldSelf"]
    assert flowrun[".spec"] == [
        "!has(self.workerPool) || (!has(self.image) && !has(self.version))",
        "has(self.workerPool) == has(oldSelf.workerPool)",
    ]
    assert flowrun[".spec.workerPool"] == ["self == oldSelf"]
    assert set(flowrun) == {
        ".spec",
        ".spec.workerPool",
        ".spec.flow",
        ".spec.input",
        ".spec.retry",
        ".spec.cancel",
        ".spec.signals",
        ".spec.podTemplate.env[]",
        ".spec.podTemplate.labels",
        ".spec.podTemplate.volumes[]",
    }
    signal = {path: [r["rule"] for r in rules] for path, rules in _rules("Signal").items()}
    assert signal == {".spec.flowRun": ["self == oldSelf"], ".spec.name": ["self == oldSelf"]}
    for kind in KINDS:
        for rules in _rules(kind).values():
            for rule in rules:
                assert rule.get("message"), f"{kind} rule {rule['rule']!r} has no message"


def _evaluate(rule: str, self_value: Any, old_value: Any = None) -> bool:
    environment = celpy.Environment()
    program = environment.program(environment.compile(rule))
    activation = {"self": json_to_cel(self_value)}
    if old_value is not None:
        activation["oldSelf"] = json_to_cel(old_value)
    return bool(program.evaluate(activation))


CEL_CASES = [
    # (kind, path, self, oldSelf or None for a create, allowed?)
    ("FlowRun", ".spec.flow", "a.b:C", "a.b:C", True),
    ("FlowRun", ".spec.flow", "a.b:D", "a.b:C", False),
    (
        "FlowRun",
        ".spec.input",
        {"order_id": "42", "amount": 99.5},
        {"order_id": "42", "amount": 99.5},
        True,
    ),
    (
        "FlowRun",
        ".spec.input",
        {"order_id": "43", "amount": 99.5},
        {"order_id": "42", "amount": 99.5},
        False,
    ),
    ("FlowRun", ".spec.input", {"order_id": "42"}, {"order_id": "42", "amount": 99.5}, False),
    ("FlowRun", ".spec.retry", {"backoffSeconds": 10, "maxBackoffSeconds": 300}, None, True),
    ("FlowRun", ".spec.retry", {"backoffSeconds": 10, "maxBackoffSeconds": 5}, None, False),
    ("FlowRun", ".spec.retry", {"maxAttempts": 2}, None, True),
    ("FlowRun", ".spec.cancel", True, False, True),
    ("FlowRun", ".spec.cancel", False, False, True),
    ("FlowRun", ".spec.cancel", False, True, False),
    ("FlowRun", ".spec.podTemplate.labels", {"team": "payments"}, None, True),
    ("FlowRun", ".spec.podTemplate.labels", {"ergon.dev/flowrun": "x"}, None, False),
    ("FlowRun", ".spec.podTemplate.env[]", {"name": "LOG_LEVEL", "value": "debug"}, None, True),
    ("FlowRun", ".spec.podTemplate.env[]", {"name": "ERGON_STORE", "value": "x"}, None, False),
    ("FlowRun", ".spec.signals", {"approval": True, "x" * 200: 1}, None, True),
    ("FlowRun", ".spec.signals", {"": True}, None, False),
    ("FlowRun", ".spec.signals", {"x" * 201: True}, None, False),
    ("Signal", ".spec.flowRun", "order-42", "order-42", True),
    ("Signal", ".spec.flowRun", "order-43", "order-42", False),
    ("Signal", ".spec.name", "approval", "approval", True),
    ("Signal", ".spec.name", "reject", "approval", False),
]


@pytest.mark.parametrize(("kind", "path", "new", "old", "allowed"), CEL_CASES)
def test_cel_rules_behave(kind: str, path: str, new: Any, old: Any, allowed: bool) -> None:
    rules = _rules(kind)[path]
    results = [_evaluate(rule["rule"], new, old) for rule in rules]
    assert all(results) is allowed, (rules, new, old)


def test_workerpool_spec_status_and_rules() -> None:
    schema = openapi_schema("WorkerPool")
    spec = schema["properties"]["spec"]
    assert spec["required"] == ["image", "imports"]
    assert set(spec["properties"]) == {
        "image",
        "version",
        "imports",
        "concurrency",
        "replicas",
        "scaleDownDelaySeconds",
        "leaseSeconds",
        "podTemplate",
    }
    # The pod template is FlowRun's, plus the termination grace of a worker being stopped.
    flowrun_template = openapi_schema("FlowRun")["properties"]["spec"]["properties"]["podTemplate"]
    template = dict(spec["properties"]["podTemplate"]["properties"])
    assert "terminationGracePeriodSeconds" in template
    del template["terminationGracePeriodSeconds"]
    assert template == flowrun_template["properties"]
    rules = {path: [r["rule"] for r in rs] for path, rs in _rules("WorkerPool").items()}
    assert rules["."] == ["size(self.metadata.name) <= 40"]
    assert rules[".spec.replicas"] == ["!has(self.min) || !has(self.max) || self.min <= self.max"]
    status = schema["properties"]["status"]["properties"]
    assert set(status["versions"]["items"]["properties"]) >= {
        "version",
        "image",
        "replicas",
        "flowsRunning",
        "flowsQueued",
        "state",
    }
    assert status["versions"]["items"]["properties"]["state"]["enum"] == [
        "Active",
        "Draining",
        "Drained",
    ]
