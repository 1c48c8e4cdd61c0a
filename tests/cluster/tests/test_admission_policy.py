"""ValidatingAdmissionPolicies and their bindings (admission_policy.py), driven through kubectl.

Each test binds its policies to its own namespace only (``matchResources.namespaceSelector`` on
``kubernetes.io/metadata.name``) and deletes them afterwards, so the shared cluster's other tests
never meet them. The policies check ``Gizmo`` s, a custom resource of this module's own.
"""

from __future__ import annotations

import json
import urllib.error
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest

from tests.cluster import cel
from tests.cluster.fixtures import TestCluster

pytestmark = pytest.mark.integration  # drives the test cluster in a subprocess

GIZMO_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gizmos.vap.example.com
spec:
  group: vap.example.com
  scope: Namespaced
  names: {plural: gizmos, singular: gizmo, kind: Gizmo}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                mode: {type: string}
                size: {type: integer, default: 1}
                memory: {type: string}
                forbidden: {type: boolean}
            status:
              type: object
              x-kubernetes-preserve-unknown-fields: true
"""

JSON = dict[str, Any]
Apply = Callable[..., None]


@pytest.fixture(scope="module")
def gizmos(test_cluster: TestCluster) -> None:
    test_cluster.kubectl("apply", "-f", "-", input=GIZMO_CRD)
    test_cluster.kubectl(
        "wait", "--for=condition=Established", "crd/gizmos.vap.example.com", "--timeout=10s"
    )


@pytest.fixture
def apply_policies(test_cluster: TestCluster, gizmos: None) -> Iterator[Apply]:
    """``apply(*objects)``: kubectl-apply policies and bindings, deleted when the test ends."""
    created: list[str] = []

    def apply(*objects: JSON) -> None:
        for obj in objects:
            test_cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))
            created.append(f"{obj['kind'].lower()}/{obj['metadata']['name']}")

    yield apply
    for name in reversed(created):
        test_cluster.kubectl("delete", name, "--ignore-not-found", check=False)


def policy(
    name: str,
    validations: list[JSON],
    *,
    operations: tuple[str, ...] = ("CREATE", "UPDATE"),
    resources: tuple[str, ...] = ("gizmos",),
    group: str = "vap.example.com",
    **spec: Any,
) -> JSON:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [group],
                        "apiVersions": ["v1"],
                        "operations": list(operations),
                        "resources": list(resources),
                    }
                ]
            },
            "validations": validations,
            **spec,
        },
    }


def binding(
    name: str,
    policy_name: str,
    namespace: str | None,
    actions: tuple[str, ...] = ("Deny",),
    *,
    labels: dict[str, str] | None = None,
) -> JSON:
    """A binding of ``policy_name`` limited to ``namespace`` (or to namespaces with ``labels``)."""
    selector = labels if labels is not None else {"kubernetes.io/metadata.name": namespace}
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": policy_name,
            "validationActions": list(actions),
            "matchResources": {"namespaceSelector": {"matchLabels": selector}},
        },
    }


def gizmo(name: str, **spec: Any) -> str:
    return json.dumps(
        {
            "apiVersion": "vap.example.com/v1",
            "kind": "Gizmo",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


def apply_gizmo(cluster: TestCluster, namespace: str, name: str, **spec: Any) -> tuple[bool, str]:
    """kubectl apply a Gizmo: whether it went through, and kubectl's stderr."""
    result = cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=gizmo(name, **spec), check=False
    )
    return result.returncode == 0, result.stderr.strip()


def refusal(cluster: TestCluster, path: str, body: JSON) -> JSON:
    """POST ``body`` and return the Status the server refuses it with."""
    with pytest.raises(urllib.error.HTTPError) as refused:
        cluster.request("POST", path, body=body)
    status = cast(JSON, json.loads(refused.value.read()))
    assert status["code"] == refused.value.code
    return status


def test_deny_refuses_a_custom_resource_with_kube_apiservers_words(
    test_cluster: TestCluster, cluster_namespace: str, apply_policies: Apply
) -> None:
    ns = cluster_namespace
    apply_policies(
        policy(
            f"no-forbidden-{ns}",
            [
                {
                    "expression": "!has(object.spec.forbidden) || !object.spec.forbidden",
                    "message": "spec.forbidden must not be set",
                },
                {"expression": "object.spec.size <= 3", "reason": "Forbidden"},
            ],
        ),
        binding(f"no-forbidden-{ns}", f"no-forbidden-{ns}", ns),
    )
    prefix = (
        f"ValidatingAdmissionPolicy 'no-forbidden-{ns}' with binding 'no-forbidden-{ns}' "
        "denied request: "
    )

    ok, stderr = apply_gizmo(test_cluster, ns, "w1", forbidden=True)
    assert not ok
    assert stderr == f'The gizmos "w1" is invalid: : {prefix}spec.forbidden must not be set'
    created = test_cluster.kubectl(
        "create", "-n", ns, "-f", "-", input=gizmo("w1", forbidden=True), check=False
    )
    assert created.stderr.strip() == stderr

    # a validation's reason picks the code; without a message, the expression is the message
    ok, stderr = apply_gizmo(test_cluster, ns, "w2", size=5)
    assert not ok
    assert stderr == (
        'Error from server (Forbidden): error when creating "STDIN": gizmos.vap.example.com '
        f'"w2" is forbidden: {prefix}failed expression: object.spec.size <= 3'
    )

    status = refusal(
        test_cluster,
        f"/apis/vap.example.com/v1/namespaces/{ns}/gizmos",
        json.loads(gizmo("w3", forbidden=True)),
    )
    message = f"{prefix}spec.forbidden must not be set"
    assert status["code"] == 422 and status["reason"] == "Invalid"
    assert status["message"] == f'gizmos.vap.example.com "w3" is forbidden: {message}'
    assert status["details"] == {
        "name": "w3",
        "group": "vap.example.com",
        "kind": "gizmos",
        "causes": [{"message": message}],
    }

    assert apply_gizmo(test_cluster, ns, "w4", forbidden=False, size=2)[0]
    # the schema's default (size: 1) is applied before the policy runs
    assert apply_gizmo(test_cluster, ns, "w5")[0]
    dry_run = test_cluster.kubectl(
        "apply", "-n", ns, "--dry-run=server", "-f", "-", input=gizmo("w6", size=9), check=False
    )
    assert dry_run.returncode != 0 and "failed expression: object.spec.size <= 3" in dry_run.stderr


def test_warn_adds_a_warning_and_audit_does_nothing(
    test_cluster: TestCluster, cluster_namespace: str, apply_policies: Apply
) -> None:
    ns = cluster_namespace
    apply_policies(
        policy(f"small-{ns}", [{"expression": "object.spec.size <= 3", "message": "too big"}]),
        binding(f"small-warn-{ns}", f"small-{ns}", ns, ("Warn",)),
        binding(f"small-audit-{ns}", f"small-{ns}", ns, ("Audit",)),
    )
    ok, stderr = apply_gizmo(test_cluster, ns, "big", size=5)
    assert ok
    assert stderr == (
        f"Warning: Validation failed for ValidatingAdmissionPolicy 'small-{ns}' with binding "
        f"'small-warn-{ns}': too big"
    )
    assert apply_gizmo(test_cluster, ns, "small", size=1) == (True, "")


def test_binding_namespace_selector_picks_the_namespaces(
    test_cluster: TestCluster, cluster_namespace: str, apply_policies: Apply
) -> None:
    ns = cluster_namespace
    other = f"{ns}-b"
    test_cluster.kubectl("create", "namespace", other)
    try:
        test_cluster.kubectl("label", "namespace", ns, f"vap-guard={ns}")
        apply_policies(
            policy(f"guard-{ns}", [{"expression": "object.spec.size <= 3"}]),
            binding(f"guard-{ns}", f"guard-{ns}", None, labels={"vap-guard": ns}),
        )
        assert not apply_gizmo(test_cluster, ns, "w", size=5)[0]
        assert apply_gizmo(test_cluster, other, "w", size=5)[0]
        test_cluster.kubectl("label", "namespace", other, f"vap-guard={ns}")
        ok, stderr = apply_gizmo(test_cluster, other, "w", size=6)
        assert not ok and "failed expression: object.spec.size <= 3" in stderr
    finally:
        test_cluster.kubectl("delete", "namespace", other, "--wait=false", check=False)


def test_operations_and_old_object(
    test_cluster: TestCluster, cluster_namespace: str, apply_policies: Apply
) -> None:
    ns = cluster_namespace
    apply_policies(
        policy(
            f"mode-immutable-{ns}",
            [
                {
                    "expression": "oldObject != null && request.operation == 'UPDATE'",
                    "message": "not an update",
                },
                {
                    "expression": "object.spec.mode == oldObject.spec.mode",
                    "messageExpression": "'mode may not change from ' + oldObject.spec.mode",
                },
            ],
            operations=("UPDATE",),
        ),
        binding(f"mode-immutable-{ns}", f"mode-immutable-{ns}", ns),
        policy(
            f"create-size-{ns}",
            [{"expression": "oldObject == null && object.spec.size <= 3"}],
            operations=("CREATE",),
        ),
        binding(f"create-size-{ns}", f"create-size-{ns}", ns),
    )
    assert apply_gizmo(test_cluster, ns, "w", mode="fast", size=2)[0]
    ok, stderr = apply_gizmo(test_cluster, ns, "w", mode="slow", size=2)
    assert not ok and stderr.endswith("denied request: mode may not change from fast")
    # an UPDATE that keeps the mode passes, and the CREATE-only size rule does not apply to it
    assert apply_gizmo(test_cluster, ns, "w", mode="fast", size=9)[0]
    ok, stderr = apply_gizmo(test_cluster, ns, "w2", mode="fast", size=9)
    assert not ok and "failed expression: oldObject == null && object.spec.size <= 3" in stderr
    # the status subresource is another resource (gizmos/status): the rules do not name it
    test_cluster.kubectl(
        "patch", "-n", ns, "gizmo", "w", "--subresource=status", "--type=merge",
        "-p", '{"status": {"phase": "Ready"}}',
    )  # fmt: skip


def test_variables_quantities_and_match_conditions(
    test_cluster: TestCluster, cluster_namespace: str, apply_policies: Apply
) -> None:
    ns = cluster_namespace
    apply_policies(
        policy(
            f"memory-{ns}",
            [
                {
                    "expression": "isQuantity(object.spec.memory)",
                    "messageExpression": "object.spec.memory + ' is not a quantity'",
                },
                {
                    "expression": "!variables.memory.isGreaterThan(variables.limit)",
                    "messageExpression": (
                        "'memory ' + object.spec.memory + ' is above ' + "
                        "string(variables.limit.asApproximateFloat())"
                    ),
                },
                {"expression": "variables.memory.compareTo(quantity('1Mi')) >= 0"},
            ],
            variables=[
                {"name": "memory", "expression": "quantity(object.spec.memory)"},
                {"name": "limit", "expression": "quantity('8Gi')"},
            ],
            matchConditions=[
                {"name": "has-memory", "expression": "has(object.spec.memory)"},
                {"name": "not-exempt", "expression": "!object.metadata.name.startsWith('x-')"},
            ],
        ),
        binding(f"memory-{ns}", f"memory-{ns}", ns),
    )
    assert apply_gizmo(test_cluster, ns, "exact", memory="8192Mi")[0]
    assert apply_gizmo(test_cluster, ns, "no-memory")[0]  # matchConditions: not checked
    assert apply_gizmo(test_cluster, ns, "x-exempt", memory="64Gi")[0]
    ok, stderr = apply_gizmo(test_cluster, ns, "big", memory="9Gi")
    assert not ok and stderr.endswith("denied request: memory 9Gi is above 8.589934592e+09")
    ok, stderr = apply_gizmo(test_cluster, ns, "tiny", memory="512Ki")
    assert not ok
    assert stderr.endswith("failed expression: variables.memory.compareTo(quantity('1Mi')) >= 0")
    ok, stderr = apply_gizmo(test_cluster, ns, "junk", memory="lots")
    assert not ok and stderr.endswith("denied request: lots is not a quantity")


def test_built_in_kinds_are_checked_too(
    test_cluster: TestCluster, cluster_namespace: str, apply_policies: Apply
) -> None:
    ns = cluster_namespace
    apply_policies(
        policy(
            f"no-password-{ns}",
            [
                {
                    "expression": "!has(object.data) || !('password' in object.data)",
                    "message": "passwords belong in Secrets",
                    "reason": "Forbidden",
                }
            ],
            group="",
            resources=("configmaps",),
        ),
        binding(f"no-password-{ns}", f"no-password-{ns}", ns),
    )
    # a typed command: kubectl sends this one as protobuf
    refused = test_cluster.kubectl(
        "create", "configmap", "-n", ns, "c", "--from-literal=password=x", check=False
    )
    assert refused.returncode != 0
    assert refused.stderr.strip() == (
        'error: failed to create configmap: configmaps "c" is forbidden: '
        f"ValidatingAdmissionPolicy 'no-password-{ns}' with binding 'no-password-{ns}' denied "
        "request: passwords belong in Secrets"
    )
    test_cluster.kubectl("create", "configmap", "-n", ns, "c", "--from-literal=user=x")


def test_bad_expressions(
    test_cluster: TestCluster, cluster_namespace: str, apply_policies: Apply
) -> None:
    ns = cluster_namespace
    # what does not compile is refused when the policy is written, as kube-apiserver does
    broken = policy(f"broken-{ns}", [{"expression": "object.spec.size <"}])
    written = test_cluster.kubectl("apply", "-f", "-", input=json.dumps(broken), check=False)
    assert written.returncode != 0
    assert written.stderr.strip() == (
        f'The ValidatingAdmissionPolicy "broken-{ns}" is invalid: spec.validations[0].expression: '
        'Invalid value: "object.spec.size <": compilation failed: ERROR: <input>:1:19: Syntax '
        "error: mismatched input '<EOF>'\n | object.spec.size <\n | ..................^"
    )
    undeclared = policy(
        f"undeclared-{ns}", [{"expression": "objekt.spec.size < 3 && variables.nope"}]
    )
    written = test_cluster.kubectl("apply", "-f", "-", input=json.dumps(undeclared), check=False)
    assert "undeclared reference to 'objekt'" in written.stderr
    assert "undefined field 'nope'" in written.stderr

    # a Kubernetes CEL library the test cluster lacks: accepted, reported in status.typeChecking,
    # a compilation error at admission (failurePolicy Fail denies, Ignore admits)
    unsupported = "url('https://' + object.spec.mode).getHost() == 'example.com'"
    typo = "object.spec.sise < 3"
    apply_policies(
        policy(f"url-{ns}", [{"expression": unsupported}, {"expression": typo}]),
        binding(f"url-{ns}", f"url-{ns}", ns),
        policy(
            f"lenient-{ns}",
            [{"expression": unsupported}, {"expression": "object.spec.mode != ''"}],
            failurePolicy="Ignore",
        ),
        binding(f"lenient-{ns}", f"lenient-{ns}", ns),
    )
    status = json.loads(
        test_cluster.kubectl(
            "get", "validatingadmissionpolicy", f"url-{ns}", "-o", "jsonpath={.status}"
        ).stdout
    )
    assert status["observedGeneration"] == 1
    warnings = status["typeChecking"]["expressionWarnings"]
    assert [w["fieldRef"] for w in warnings] == [
        "spec.validations[0].expression",
        "spec.validations[1].expression",
    ]
    assert (
        "'url' (a Kubernetes CEL library) is not supported by the test cluster"
        in (warnings[0]["warning"])
    )
    assert warnings[1]["warning"] == (
        "vap.example.com/v1, Kind=Gizmo: ERROR: <input>:1:13: undefined field 'sise'\n"
        " | object.spec.sise < 3\n | ............^\n"
    )
    ok, stderr = apply_gizmo(test_cluster, ns, "w", mode="fast")
    assert not ok
    assert stderr.startswith(
        f"The gizmos \"w\" is invalid: : ValidatingAdmissionPolicy 'url-{ns}' with binding "
        f"'url-{ns}' denied request: compilation error: expression '{unsupported}' does not "
        "compile in the test cluster: ERROR: <input>:1:1: 'url'"
    )
    test_cluster.kubectl("delete", "validatingadmissionpolicybinding", f"url-{ns}")
    # runtime errors follow failurePolicy as well: Ignore admits (no spec.mode here)
    assert apply_gizmo(test_cluster, ns, "w", size=2)[0]
    apply_policies(
        policy(f"strict-{ns}", [{"expression": "object.spec.mode == 'x'"}]),
        binding(f"strict-{ns}", f"strict-{ns}", ns),
    )
    ok, stderr = apply_gizmo(test_cluster, ns, "w2", size=2)
    assert not ok
    assert stderr.endswith(
        "denied request: expression 'object.spec.mode == 'x'' resulted in error: no such key: mode"
    )


def test_policy_and_binding_validation(test_cluster: TestCluster) -> None:
    bad_binding = binding("bad-binding", "", None, ("Deny", "Warn", "Shout"), labels={})
    written = test_cluster.kubectl("apply", "-f", "-", input=json.dumps(bad_binding), check=False)
    assert written.stderr.strip().splitlines() == [
        'The ValidatingAdmissionPolicyBinding "bad-binding" is invalid: ',
        "* spec.policyName: Required value",
        '* spec.validationActions[2]: Unsupported value: "Shout": supported values: "Audit", '
        '"Deny", "Warn"',
        '* spec.validationActions: Invalid value: []admissionregistration.ValidationAction{"Deny", '
        '"Warn", "Shout"}: must not contain both Deny and Warn (repeating the same validation '
        "failure information in the API response and headers serves no purpose)",
    ]
    with_params = policy("with-params", [{"expression": "true"}])
    with_params["spec"]["paramKind"] = {"apiVersion": "v1", "kind": "ConfigMap"}
    written = test_cluster.kubectl("apply", "-f", "-", input=json.dumps(with_params), check=False)
    assert "spec.paramKind: Forbidden: paramKind is not supported by the test cluster" in (
        written.stderr
    )


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("quantity('1Gi') == quantity('1024Mi')", True),
        ("quantity('8Gi').isGreaterThan(quantity('8000Mi'))", True),
        ("quantity('500m').isLessThan(quantity('1'))", True),
        ("quantity('1.5').compareTo(quantity('1500m'))", 0),
        ("quantity('2k').asInteger()", 2000),
        ("quantity('1e3').asApproximateFloat()", 1000.0),
        ("quantity('1.5').isInteger()", False),
        ("quantity('1').add(quantity('500m')).sub(1) == quantity('0.5')", True),
        ("quantity('-3Ki').sign()", -1),
        ("isQuantity('8Gi') && !isQuantity('8 GB') && !isQuantity('1Q')", True),
    ],
)
def test_quantity_library(expression: str, expected: Any) -> None:
    assert cel.evaluate(cel.program(expression), {}) == expected


def test_quantity_errors_read_like_kubernetes() -> None:
    with pytest.raises(cel.CelError, match=r"^quantities must match the regular expression"):
        cel.evaluate(cel.program("quantity('lots')"), {})
    with pytest.raises(cel.CelError, match=r"^cannot convert value to integer$"):
        cel.evaluate(cel.program("quantity('1.5').asInteger()"), {})
    with pytest.raises(cel.CelUnsupported, match=r"undeclared reference to 'quantity'"):
        cel.program("'1'.quantity()")
