"""Per-kind rules of the built-in resources: defaults, status resets, validation, immutability.

These are the parts of kube-apiserver's ``strategy.go`` files that clients can observe: a Pod
gets its defaults and ``status.phase: Pending`` and a node (there is no scheduler); a Secret's
``stringData`` becomes base64 ``data``; a Namespace gets its ``kubernetes`` finalizer; a Service a
cluster IP. Workload kinds (Deployments, StatefulSets, ...) get a status that reports them
available at once, because nothing runs their pods (README: known differences), except the kinds
a running controller reports on itself (``controlled``: Deployments and ReplicaSets, unless
``--no-deployment-controller``).
"""

from __future__ import annotations

import base64
import binascii
import copy
import ipaddress
from typing import Any

from . import admission_policy
from .builtins import NODE_NAME
from .errors import Cause, bad_request
from .resources import ResourceType
from .selectors import labels_match, selector_from_label_selector
from .validation import validate_name

JSON = dict[str, Any]

_WORKLOADS = frozenset({"Deployment", "ReplicaSet", "StatefulSet", "DaemonSet"})
CONTROLLED_WORKLOADS = frozenset({"Deployment", "ReplicaSet"})  # workloads.py reports on these
_LABEL_NAMED = frozenset({"Namespace", "Service"})
_PRIORITY_TOLERATIONS = [
    {
        "key": "node.kubernetes.io/not-ready",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 300,
    },
    {
        "key": "node.kubernetes.io/unreachable",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 300,
    },
]


class Strategies:
    """Kind-specific behaviour, looked up by kind for the built-in (non-custom) types."""

    def __init__(
        self, *, workload_status: bool = True, controlled: frozenset[str] = frozenset()
    ) -> None:
        self._workload_status = workload_status
        self._controlled = controlled
        self._next_cluster_ip = ipaddress.IPv4Address("10.96.0.10")

    # create / update

    def prepare_create(self, rtype: ResourceType, obj: JSON) -> None:
        if rtype.custom:
            return
        kind = rtype.kind
        if kind == "Pod":
            _default_pod_spec(obj.setdefault("spec", {}), scheduled=True)
            obj["status"] = {"phase": "Pending", "qosClass": _qos_class(obj["spec"])}
        elif kind == "Secret":
            _fold_string_data(obj)
            obj.setdefault("type", "Opaque")
        elif kind == "Namespace":
            obj["spec"] = {"finalizers": ["kubernetes"]}
            obj["status"] = {"phase": "Active"}
        elif kind == "Service":
            self._default_service(obj)
        elif kind in _WORKLOADS:
            _default_workload(obj)
            obj.pop("status", None)  # as every workload strategy's PrepareForCreate
        elif kind == "Node":
            obj.setdefault("status", {})
        elif rtype.has_status_subresource:
            obj.pop("status", None)
        if _admission_policy_kind(rtype):
            admission_policy.default(kind, obj)
        if kind == "Namespace":
            labels = obj["metadata"].setdefault("labels", {})
            labels["kubernetes.io/metadata.name"] = obj["metadata"]["name"]

    def prepare_update(self, rtype: ResourceType, obj: JSON, old: JSON) -> None:
        if rtype.custom:
            return
        kind = rtype.kind
        if kind == "Secret":
            _fold_string_data(obj, old)
        elif kind == "Namespace":
            obj.setdefault("spec", old.get("spec", {}))
            labels = obj["metadata"].setdefault("labels", {})
            labels["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
        elif kind == "Pod":
            _default_pod_spec(obj.setdefault("spec", {}), scheduled=True)
        elif kind == "Service":
            spec = obj.setdefault("spec", {})
            spec.setdefault("clusterIP", (old.get("spec") or {}).get("clusterIP"))
            self._default_service(obj)
        elif kind in _WORKLOADS:
            _default_workload(obj)
        elif _admission_policy_kind(rtype):
            admission_policy.default(kind, obj)

    def after_write(self, rtype: ResourceType, obj: JSON) -> None:
        """Status a controller would converge to; applied before storing the write.

        First, as kube-apiserver's validating admission runs after defaulting and validation,
        the ValidatingAdmissionPolicies bound to this write (``admission_policy.py``).
        """
        admission_policy.admit(rtype, obj)
        if _admission_policy_kind(rtype) and rtype.kind == admission_policy.POLICY_KIND:
            obj["status"] = admission_policy.policy_status(obj)
        if rtype.custom or rtype.kind not in _WORKLOADS or not self._workload_status:
            return
        if rtype.kind in self._controlled:
            return
        obj["status"] = _available_status(rtype.kind, obj)

    # validation

    def validate(self, rtype: ResourceType, obj: JSON, old: JSON | None) -> list[Cause]:
        causes: list[Cause] = []
        if old is None:
            label = rtype.kind in _LABEL_NAMED
            causes += validate_name(str(obj["metadata"].get("name", "")), label=label)
        if rtype.custom:
            return causes
        if rtype.kind == "Pod":
            causes += _validate_pod(obj, old)
        if rtype.kind in _WORKLOADS and rtype.group == "apps":
            causes += _validate_workload(obj, old)
        if _admission_policy_kind(rtype):
            causes += admission_policy.validate(rtype.kind, obj)
        if rtype.kind in ("Secret", "ConfigMap") and old is not None and old.get("immutable"):
            for key in ("data", "binaryData", "stringData"):
                if obj.get(key) != old.get(key):
                    causes.append(
                        Cause(
                            "FieldValueForbidden",
                            "Forbidden: field is immutable when `immutable` is set",
                            key,
                        )
                    )
        return causes

    # helpers

    def _default_service(self, obj: JSON) -> None:
        spec = obj.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if not spec.get("clusterIP"):
            spec["clusterIP"] = str(self._next_cluster_ip)
            self._next_cluster_ip += 1
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
        for port in spec.get("ports") or []:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
        obj["status"] = obj.get("status") or {"loadBalancer": {}}


def _admission_policy_kind(rtype: ResourceType) -> bool:
    return rtype.group == admission_policy.GROUP and rtype.kind in (
        admission_policy.POLICY_KIND,
        admission_policy.BINDING_KIND,
    )


def _fold_string_data(obj: JSON, old: JSON | None = None) -> None:
    data = obj.get("data") or {}
    for key, value in data.items():
        try:
            base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise bad_request(
                f'Secret in version "v1" cannot be handled as a Secret: illegal base64 data '
                f"for key {key!r}"
            ) from exc
    string_data = obj.pop("stringData", None) or {}
    for key, value in string_data.items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    if data:
        obj["data"] = data


def _default_pod_spec(spec: JSON, *, scheduled: bool) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    spec.setdefault("priority", 0)
    account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    spec["serviceAccountName"] = spec["serviceAccount"] = account
    if scheduled:
        spec.setdefault("nodeName", NODE_NAME)
        spec.setdefault("tolerations", copy.deepcopy(_PRIORITY_TOLERATIONS))
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        image = str(container.get("image", ""))
        tag = image.rsplit("/", 1)[-1]
        latest = ":" not in tag or tag.endswith(":latest")
        always = latest and "@" not in tag
        container.setdefault("imagePullPolicy", "Always" if always else "IfNotPresent")
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        container.setdefault("resources", {})
        for port in container.get("ports") or []:
            port.setdefault("protocol", "TCP")


def _qos_class(spec: JSON) -> str:
    resources = [c.get("resources") or {} for c in spec.get("containers") or []]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    if all(
        r.get("limits") and r.get("requests", r.get("limits")) == r.get("limits") for r in resources
    ):
        return "Guaranteed"
    return "Burstable"


def _validate_pod(obj: JSON, old: JSON | None) -> list[Cause]:
    spec = obj.get("spec") or {}
    containers = spec.get("containers")
    causes: list[Cause] = []
    if not containers:
        return [Cause("FieldValueRequired", "Required value", "spec.containers")]
    seen: set[str] = set()
    for index, container in enumerate(containers):
        path = f"spec.containers[{index}]"
        name = str(container.get("name", ""))
        if not name:
            causes.append(Cause("FieldValueRequired", "Required value", f"{path}.name"))
        elif name in seen:
            causes.append(
                Cause("FieldValueDuplicate", f'Duplicate value: "{name}"', f"{path}.name")
            )
        seen.add(name)
        if not container.get("image"):
            causes.append(Cause("FieldValueRequired", "Required value", f"{path}.image"))
    if old is not None and _frozen_pod_spec(spec) != _frozen_pod_spec(old.get("spec") or {}):
        causes.append(
            Cause(
                "FieldValueForbidden",
                "Forbidden: pod updates may not change fields other than "
                "`spec.containers[*].image`,"
                "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` "
                "(only additions to existing tolerations),`spec.terminationGracePeriodSeconds` "
                "(allow it to be set to 1 if it was previously negative)",
                "spec",
            )
        )
    return causes


def _frozen_pod_spec(spec: JSON) -> JSON:
    """The pod spec minus what may change after creation."""
    frozen = copy.deepcopy(spec)
    for key in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds"):
        frozen.pop(key, None)
    for key in ("containers", "initContainers"):
        for container in frozen.get(key) or []:
            container.pop("image", None)
    return frozen


def _validate_workload(obj: JSON, old: JSON | None) -> list[Cause]:
    """The apps/v1 rules controllers rely on: a non-empty selector that matches the template's
    labels and never changes, ``replicas`` >= 0, and the template's restartPolicy ``Always``."""
    spec = obj.get("spec") or {}
    causes: list[Cause] = []
    replicas = spec.get("replicas")
    if isinstance(replicas, int) and replicas < 0:
        causes.append(
            Cause(
                "FieldValueInvalid",
                f"Invalid value: {replicas}: must be greater than or equal to 0",
                "spec.replicas",
            )
        )
    selector = spec.get("selector")
    if not isinstance(selector, dict):
        causes.append(Cause("FieldValueRequired", "Required value", "spec.selector"))
    elif not (selector.get("matchLabels") or selector.get("matchExpressions")):
        causes.append(
            Cause(
                "FieldValueInvalid",
                "Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), "
                "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is "
                f"invalid for {str(obj.get('kind', '')).lower()}",
                "spec.selector",
            )
        )
    else:
        template = spec.get("template") or {}
        labels = (template.get("metadata") or {}).get("labels") or {}
        if not labels_match(
            selector_from_label_selector(selector), {"metadata": {"labels": labels}}
        ):
            shown = ", ".join(f'"{k}":"{v}"' for k, v in sorted(labels.items()))
            causes.append(
                Cause(
                    "FieldValueInvalid",
                    f"Invalid value: map[string]string{{{shown}}}: `selector` does not match "
                    "template `labels`",
                    "spec.template.metadata.labels",
                )
            )
        policy = (template.get("spec") or {}).get("restartPolicy", "Always")
        if policy != "Always":
            causes.append(
                Cause(
                    "FieldValueNotSupported",
                    f'Unsupported value: "{policy}": supported values: "Always"',
                    "spec.template.spec.restartPolicy",
                )
            )
    old_selector = (old.get("spec") or {}).get("selector") if old is not None else None
    if old is not None and _normal_selector(old_selector) != _normal_selector(selector):
        causes.append(
            Cause("FieldValueInvalid", "Invalid value: field is immutable", "spec.selector")
        )
    return causes


def _normal_selector(selector: Any) -> Any:
    if not isinstance(selector, dict):
        return selector
    return {k: v for k, v in selector.items() if v}


def _default_workload(obj: JSON) -> None:
    spec = obj.setdefault("spec", {})
    kind = obj.get("kind")
    if kind != "DaemonSet":
        spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    if kind == "Deployment":
        spec.setdefault("progressDeadlineSeconds", 600)
        strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
        if strategy.get("type", "RollingUpdate") == "RollingUpdate":
            strategy.setdefault("rollingUpdate", {"maxUnavailable": "25%", "maxSurge": "25%"})
    if kind == "StatefulSet":
        spec.setdefault("podManagementPolicy", "OrderedReady")
        spec.setdefault(
            "updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
        )
    template = spec.get("template")
    if isinstance(template, dict):
        template.setdefault("metadata", {}).setdefault("creationTimestamp", None)
        _default_pod_spec(template.setdefault("spec", {}), scheduled=False)


def _available_status(kind: str, obj: JSON) -> JSON:
    spec = obj.get("spec") or {}
    replicas = int(spec.get("replicas", 1))
    generation = obj["metadata"].get("generation", 1)
    if kind == "DaemonSet":
        return {
            "currentNumberScheduled": 1,
            "desiredNumberScheduled": 1,
            "numberReady": 1,
            "numberAvailable": 1,
            "updatedNumberScheduled": 1,
            "numberMisscheduled": 0,
            "observedGeneration": generation,
        }
    status: JSON = {
        "observedGeneration": generation,
        "replicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
    }
    if kind in ("Deployment", "StatefulSet"):
        status["updatedReplicas"] = replicas
    if kind == "StatefulSet":
        status["currentReplicas"] = replicas
    if kind == "Deployment":
        stamp = obj["metadata"].get("creationTimestamp")
        status["conditions"] = [
            {
                "type": "Available",
                "status": "True",
                "reason": "MinimumReplicasAvailable",
                "message": "Deployment has minimum availability.",
                "lastUpdateTime": stamp,
                "lastTransitionTime": stamp,
            },
            {
                "type": "Progressing",
                "status": "True",
                "reason": "NewReplicaSetAvailable",
                "message": f'ReplicaSet "{obj["metadata"]["name"]}" has successfully progressed.',
                "lastUpdateTime": stamp,
                "lastTransitionTime": stamp,
            },
        ]
    if kind == "ReplicaSet":
        status["fullyLabeledReplicas"] = replicas
    return status
