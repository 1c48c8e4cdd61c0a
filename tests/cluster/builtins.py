"""The built-in resource types: what a v1.33 API server lists in discovery.

Only storage and the semantics in ``strategies.py`` stand behind most of them: a StatefulSet is
stored and served, but no controller turns it into pods (Deployments and ReplicaSets have theirs:
``workloads.py``). The OpenAPI definition names point into the schemas shipped by
``kubernetes-validate`` (see ``schemas.py``).
"""

from __future__ import annotations

from dataclasses import replace

from .resources import ResourceType

_DEFINITION_PACKAGES = {
    "": "io.k8s.api.core",
    "apiextensions.k8s.io": "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions",
}

_ALL = ("all",)
_STATUS = frozenset({"status"})
_STATUS_SCALE = frozenset({"status", "scale"})
_READ_CREATE = ("create",)


def _t(
    group: str,
    version: str,
    kind: str,
    plural: str,
    *,
    namespaced: bool = True,
    short: tuple[str, ...] = (),
    categories: tuple[str, ...] = (),
    sub: frozenset[str] = frozenset(),
    generation: bool = False,
    verbs: tuple[str, ...] | None = None,
) -> ResourceType:
    package = _DEFINITION_PACKAGES.get(group, f"io.k8s.api.{group.split('.')[0]}")
    rtype = ResourceType(
        group=group,
        version=version,
        kind=kind,
        plural=plural,
        singular=kind.lower(),
        namespaced=namespaced,
        short_names=short,
        categories=categories,
        subresources=sub,
        has_generation=generation,
        definition=f"{package}.{version}.{kind}",
    )
    return rtype if verbs is None else replace(rtype, verbs=verbs)


BUILTIN_TYPES: tuple[ResourceType, ...] = (
    _t(
        "",
        "v1",
        "Namespace",
        "namespaces",
        namespaced=False,
        short=("ns",),
        sub=frozenset({"status", "finalize"}),
    ),
    _t(
        "",
        "v1",
        "Pod",
        "pods",
        short=("po",),
        categories=_ALL,
        sub=frozenset({"status", "log", "eviction"}),
    ),
    _t("", "v1", "ConfigMap", "configmaps", short=("cm",)),
    _t("", "v1", "Secret", "secrets"),
    _t("", "v1", "ServiceAccount", "serviceaccounts", short=("sa",), sub=frozenset({"token"})),
    _t("", "v1", "Service", "services", short=("svc",), categories=_ALL, sub=_STATUS),
    _t("", "v1", "Endpoints", "endpoints", short=("ep",)),
    _t("", "v1", "Event", "events", short=("ev",)),
    _t("", "v1", "Node", "nodes", namespaced=False, short=("no",), sub=_STATUS),
    _t("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", short=("pvc",), sub=_STATUS),
    _t(
        "",
        "v1",
        "PersistentVolume",
        "persistentvolumes",
        namespaced=False,
        short=("pv",),
        sub=_STATUS,
    ),
    _t(
        "",
        "v1",
        "ReplicationController",
        "replicationcontrollers",
        short=("rc",),
        categories=_ALL,
        sub=_STATUS_SCALE,
        generation=True,
    ),
    _t("", "v1", "LimitRange", "limitranges", short=("limits",)),
    _t("", "v1", "ResourceQuota", "resourcequotas", short=("quota",), sub=_STATUS),
    _t("", "v1", "PodTemplate", "podtemplates"),
    _t(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        short=("deploy",),
        categories=_ALL,
        sub=_STATUS_SCALE,
        generation=True,
    ),
    _t(
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
        short=("rs",),
        categories=_ALL,
        sub=_STATUS_SCALE,
        generation=True,
    ),
    _t(
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        short=("sts",),
        categories=_ALL,
        sub=_STATUS_SCALE,
        generation=True,
    ),
    _t(
        "apps",
        "v1",
        "DaemonSet",
        "daemonsets",
        short=("ds",),
        categories=_ALL,
        sub=_STATUS,
        generation=True,
    ),
    _t("apps", "v1", "ControllerRevision", "controllerrevisions"),
    _t("batch", "v1", "Job", "jobs", categories=_ALL, sub=_STATUS, generation=True),
    _t(
        "batch",
        "v1",
        "CronJob",
        "cronjobs",
        short=("cj",),
        categories=_ALL,
        sub=_STATUS,
        generation=True,
    ),
    _t(
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        short=("hpa",),
        categories=_ALL,
        sub=_STATUS,
        generation=True,
    ),
    _t("rbac.authorization.k8s.io", "v1", "Role", "roles"),
    _t("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
    _t("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", namespaced=False),
    _t(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        namespaced=False,
    ),
    _t(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        short=("pdb",),
        sub=_STATUS,
        generation=True,
    ),
    _t(
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        short=("netpol",),
        generation=True,
    ),
    _t(
        "networking.k8s.io",
        "v1",
        "Ingress",
        "ingresses",
        short=("ing",),
        sub=_STATUS,
        generation=True,
    ),
    _t("networking.k8s.io", "v1", "IngressClass", "ingressclasses", namespaced=False),
    _t("coordination.k8s.io", "v1", "Lease", "leases"),
    replace(_t("events.k8s.io", "v1", "Event", "events", short=("ev",)), storage="events"),
    _t(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        namespaced=False,
        short=("crd", "crds"),
        sub=_STATUS,
        generation=True,
    ),
    _t(
        "scheduling.k8s.io",
        "v1",
        "PriorityClass",
        "priorityclasses",
        namespaced=False,
        short=("pc",),
    ),
    _t("storage.k8s.io", "v1", "StorageClass", "storageclasses", namespaced=False, short=("sc",)),
    _t(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        namespaced=False,
    ),
    _t(
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        namespaced=False,
    ),
    # enforced by admission_policy.py
    _t(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingAdmissionPolicy",
        "validatingadmissionpolicies",
        namespaced=False,
        categories=("api-extensions",),
        sub=_STATUS,
        generation=True,
    ),
    _t(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingAdmissionPolicyBinding",
        "validatingadmissionpolicybindings",
        namespaced=False,
        categories=("api-extensions",),
        generation=True,
    ),
    _t(
        "authorization.k8s.io",
        "v1",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
        namespaced=False,
        verbs=_READ_CREATE,
    ),
    _t(
        "authorization.k8s.io",
        "v1",
        "SelfSubjectRulesReview",
        "selfsubjectrulesreviews",
        namespaced=False,
        verbs=_READ_CREATE,
    ),
)

# Reviews are answered, not stored: this server authorizes everything.
REVIEW_KINDS = frozenset({"SelfSubjectAccessReview", "SelfSubjectRulesReview"})

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
NODE_NAME = "test-node"
