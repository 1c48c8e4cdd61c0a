"""The Helm chart helm/ergon rendered by the real helm: lint, the main value combinations, RBAC,
the operator's settings, Secret handling, values.schema.json, and the CRDs taken from crds/."""

from __future__ import annotations

import base64
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helm import (
    CHART_DIR,
    CRD_FILES,
    CRDS_DIR,
    DEPLOY_POSTGRES,
    EXISTING_SECRET,
    find,
    helm_install_args,
    one,
    render,
    render_error,
    run_helm,
    value_args,
)
from tests.chart.schemas import validate_builtin

COMBINATIONS: dict[str, dict[str, Any]] = {
    "existing-secret": EXISTING_SECRET,
    "deploy-postgres": DEPLOY_POSTGRES,
    "watch-namespace": {**EXISTING_SECRET, "operator.watchNamespace": "flows"},
    "deploy-extra-namespaces": {
        **DEPLOY_POSTGRES,
        "worker.extraNamespaces": ["team-a", "team-b"],
        "postgres.persistence.enabled": False,
        "imagePullSecrets": [{"name": "regcred"}],
    },
}

# Exactly the verbs the operator uses (tests/e2e/test_zz_security.py derives them from the
# request log of the whole e2e session and compares them with the installed Roles).
OPERATOR_RULES = [
    {
        "apiGroups": ["ergon.dev"],
        "resources": ["flowruns", "signals", "workerpools"],
        "verbs": ["list", "watch"],
    },
    {
        "apiGroups": ["ergon.dev"],
        "resources": ["flowruns/status", "signals/status", "workerpools/status"],
        "verbs": ["patch"],
    },
    {"apiGroups": ["ergon.dev"], "resources": ["flowruns"], "verbs": ["delete"]},
    {
        "apiGroups": ["ergon.dev"],
        "resources": ["flowruns/finalizers", "workerpools/finalizers"],
        "verbs": ["update"],
    },
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch", "create", "delete"]},
    {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "verbs": ["list", "watch", "create", "patch", "delete"],
    },
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]
LEASE_RULES = [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "resourceNames": ["ergon-operator"],
        "verbs": ["get", "update"],
    },
]
POD_FIELDS = {
    "POD_NAME": {"fieldRef": {"fieldPath": "metadata.name"}},
    "POD_NAMESPACE": {"fieldRef": {"fieldPath": "metadata.namespace"}},
}
CLUSTER_ONLY_RULES = [
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["list", "watch"],
    },
]


def _env(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {var["name"]: var.get("value", var.get("valueFrom")) for var in container["env"]}


@pytest.mark.parametrize("values", [DEPLOY_POSTGRES, EXISTING_SECRET], ids=["deploy", "existing"])
def test_helm_lint_is_clean(values: dict[str, Any]) -> None:
    out = run_helm("lint", CHART_DIR, "--strict", *value_args(values))
    assert "1 chart(s) linted, 0 chart(s) failed" in out
    assert "[WARNING]" not in out and "[ERROR]" not in out, out


@pytest.mark.parametrize("combination", COMBINATIONS)
def test_rendered_manifests_match_kubernetes_schemas(combination: str) -> None:
    docs = render(COMBINATIONS[combination], include_crds=True)
    assert docs
    for doc in docs:
        validate_builtin(doc)


@pytest.mark.parametrize("combination", COMBINATIONS)
def test_labels_follow_helm_conventions(combination: str) -> None:
    for doc in render(COMBINATIONS[combination]):
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "ergon"
        assert labels["app.kubernetes.io/instance"] == "ergon"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "ergon-0.1.0"
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["app.kubernetes.io/component"] in {"operator", "worker", "postgres"}


def test_operator_deployment() -> None:
    docs = render(EXISTING_SECRET)
    deployment = one(docs, "Deployment", "ergon-operator")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "ergon-operator"
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/ergon-dev/ergon:0.1.0"
    assert container["command"] == ["ergon-operator"]
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert container["ports"] == [{"name": "health", "containerPort": 8080, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    budget = one(docs, "PodDisruptionBudget", "ergon-operator")
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"] == spec["selector"]


def test_leader_election_lease_role_in_the_release_namespace() -> None:
    for values in (EXISTING_SECRET, COMBINATIONS["watch-namespace"]):
        docs = render(values)
        role = one(docs, "Role", "ergon-operator-leader-election")
        assert role["metadata"]["namespace"] == "ergon"
        assert role["rules"] == LEASE_RULES
        binding = one(docs, "RoleBinding", "ergon-operator-leader-election")
        assert binding["metadata"]["namespace"] == "ergon"
        assert binding["roleRef"]["name"] == role["metadata"]["name"]
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "ergon-operator", "namespace": "ergon"}
        ]
    named = render({**EXISTING_SECRET, "operator.leaderElection.leaseName": "mine"})
    assert _env(one(named, "Deployment"))["ERGON_LEASE_NAME"] == "mine"
    role = one(named, "Role", "ergon-operator-leader-election")
    assert role["rules"][1]["resourceNames"] == ["mine"]


def test_without_leader_election_one_replica_replaced_with_recreate() -> None:
    values = {
        **EXISTING_SECRET,
        "operator.leaderElection.enabled": False,
        "operator.replicas": 1,
    }
    docs = render(values)
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert _env(deployment)["ERGON_LEADER_ELECTION"] == "false"
    assert not find(docs, "Role") and not find(docs, "PodDisruptionBudget")
    message = render_error({**values, "operator.replicas": 2})
    assert "operator.replicas > 1 needs operator.leaderElection.enabled=true" in message


def test_one_replica_gets_no_disruption_budget() -> None:
    docs = render({**EXISTING_SECRET, "operator.replicas": 1})
    assert not find(docs, "PodDisruptionBudget")
    assert not find(
        render({**EXISTING_SECRET, "operator.podDisruptionBudget.enabled": False}),
        "PodDisruptionBudget",
    )


def test_operator_settings_with_existing_secret() -> None:
    docs = render({**EXISTING_SECRET, "postgres.existingSecretKey": "url"})
    env = _env(one(docs, "Deployment"))
    assert env == {
        "ERGON_STORE": {"secretKeyRef": {"name": "ergon-store", "key": "url"}},
        "ERGON_STORE_SECRET": "ergon-store/url",
        "ERGON_TENANCY": "shared",
        "ERGON_TENANT_SECRETS": "provision",
        "ERGON_TENANT_PREFIX": "ergon_ns_",
        "ERGON_WORKER_IMAGE": "ghcr.io/ergon-dev/ergon:0.1.0-worker",
        "ERGON_WORKER_SERVICE_ACCOUNT": "ergon-worker",
        "ERGON_WORKER_POLICY": json.dumps(
            {
                "annotationKeys": [],
                "configMaps": [],
                "envNames": [],
                "images": ["ghcr.io/ergon-dev/ergon:*", "ghcr.io/ergon-dev/ergon@*"],
                "labelKeys": [],
                "maxResources": {"cpu": "4", "ephemeral-storage": "10Gi", "memory": "8Gi"},
                "mountPaths": ["/mnt/*", "/data/*"],
                "nodeSelector": {},
                "secrets": [],
                "serviceAccounts": [],
                "tmpSizeLimit": "1Gi",
                "tolerations": [],
            },
            separators=(",", ":"),
        ),
        "ERGON_WATCH_NAMESPACES": "",
        "ERGON_HEALTH_PORT": "8080",
        "ERGON_MAX_RUNNING_PODS": "",
        "ERGON_MAX_RUNNING_PODS_PER_NAMESPACE": "",
        "ERGON_POD_START_GRACE_SECONDS": "300",
        "ERGON_POD_GC_STRATEGY": "OnFlowRunCompletion",
        "ERGON_TTL_SECONDS_AFTER_FINISHED": "",
        "ERGON_ORPHAN_SWEEP_SECONDS": "300",
        "ERGON_FLOW_RECORD_RETENTION": "",
        "ERGON_LEADER_ELECTION": "true",
        "ERGON_LEASE_NAME": "ergon-operator",
        **POD_FIELDS,
    }
    assert not find(docs, "Secret"), "the chart never holds a user's DSN"
    assert not find(docs, "StatefulSet")


def test_operator_settings_for_kind_images() -> None:
    values = {
        **DEPLOY_POSTGRES,
        "image.repository": "ergon",
        "image.tag": "dev",
        "operator.watchNamespace": "flows",
        "operator.healthPort": 9090,
    }
    deployment = one(render(values), "Deployment")
    env = _env(deployment)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "ergon:dev"
    assert env["ERGON_WORKER_IMAGE"] == "ergon:dev-worker"
    assert json.loads(env["ERGON_WORKER_POLICY"])["images"] == ["ergon:*", "ergon@*"]
    assert env["ERGON_WATCH_NAMESPACES"] == "flows"
    assert env["ERGON_HEALTH_PORT"] == "9090"
    assert container["ports"][0]["containerPort"] == 9090
    assert env["ERGON_STORE"] == {"secretKeyRef": {"name": "ergon-postgres", "key": "dsn"}}
    assert env["ERGON_STORE_SECRET"] == "ergon-postgres/dsn"


def test_worker_image_can_be_set_apart() -> None:
    env = _env(
        one(
            render(
                {
                    **EXISTING_SECRET,
                    "worker.image.repository": "ghcr.io/acme/flows",
                    "worker.image.tag": "1.4.0",
                }
            ),
            "Deployment",
        )
    )
    assert env["ERGON_WORKER_IMAGE"] == "ghcr.io/acme/flows:1.4.0"


def test_cluster_wide_rbac() -> None:
    docs = render(EXISTING_SECRET)
    # The only Role is the one for the Lease (test_leader_election_lease_role_...).
    assert [r["metadata"]["name"] for r in find(docs, "Role")] == ["ergon-operator-leader-election"]
    role = one(docs, "ClusterRole")
    assert role["rules"] == OPERATOR_RULES + CLUSTER_ONLY_RULES
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "ergon-operator", "namespace": "ergon"}
    ]


def test_watch_namespace_gives_a_role_and_nothing_cluster_wide() -> None:
    docs = render(COMBINATIONS["watch-namespace"])
    assert not find(docs, "ClusterRole") and not find(docs, "ClusterRoleBinding")
    role = one(docs, "Role", "ergon-operator")
    assert role["metadata"]["namespace"] == "flows"
    assert role["rules"] == OPERATOR_RULES
    binding = one(docs, "RoleBinding", "ergon-operator")
    assert binding["metadata"]["namespace"] == "flows"
    assert binding["roleRef"]["kind"] == "Role"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "ergon-operator", "namespace": "ergon"}
    ]
    workers = [
        sa for sa in find(docs, "ServiceAccount") if sa["metadata"]["name"] == "ergon-worker"
    ]
    assert [sa["metadata"]["namespace"] for sa in workers] == ["flows"]


def test_rbac_can_be_left_to_the_user() -> None:
    docs = render({**EXISTING_SECRET, "rbac.create": False})
    assert not {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"} & {
        d["kind"] for d in docs
    }


def test_worker_service_accounts_have_no_token_and_no_permissions() -> None:
    docs = render(COMBINATIONS["deploy-extra-namespaces"])
    workers = [
        sa for sa in find(docs, "ServiceAccount") if sa["metadata"]["name"] == "ergon-worker"
    ]
    assert sorted(sa["metadata"]["namespace"] for sa in workers) == ["ergon", "team-a", "team-b"]
    for sa in workers:
        assert sa["automountServiceAccountToken"] is False
        assert sa["imagePullSecrets"] == [{"name": "regcred"}]
    subjects = [
        s
        for kind in ("RoleBinding", "ClusterRoleBinding")
        for b in find(docs, kind)
        for s in b["subjects"]
    ]
    assert all(subject["name"] != "ergon-worker" for subject in subjects)


def test_bundled_postgres() -> None:
    docs = render({**DEPLOY_POSTGRES, "worker.extraNamespaces": ["team-a"]})
    secrets = find(docs, "Secret", "ergon-postgres")
    assert sorted(s["metadata"]["namespace"] for s in secrets) == ["ergon", "team-a"]
    decoded = [{k: base64.b64decode(v).decode() for k, v in s["data"].items()} for s in secrets]
    assert decoded[0] == decoded[1], "every namespace gets the same DSN"
    password = decoded[0]["password"]
    assert len(password) == 32 and password.isalnum()
    assert decoded[0]["dsn"] == f"postgresql://ergon:{password}@ergon-postgres.ergon.svc:5432/ergon"
    service = one(docs, "Service", "ergon-postgres")
    assert service["spec"]["ports"][0]["port"] == 5432
    statefulset = one(docs, "StatefulSet", "ergon-postgres")
    assert statefulset["spec"]["serviceName"] == "ergon-postgres"
    assert service["spec"]["selector"].items() <= (
        statefulset["spec"]["template"]["metadata"]["labels"].items()
    )
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert statefulset["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete"
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    env = {var["name"]: var for var in container["env"]}
    # The image's superuser has a password of its own (tests/chart/test_postgres_roles.py); the
    # init script gives the DSN's role the DSN Secret's.
    assert env["POSTGRES_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "ergon-postgres-admin", "key": "password"}
    }
    assert env["ERGON_DB_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "ergon-postgres", "key": "password"}
    }


def test_bundled_postgres_with_given_password_and_no_persistence() -> None:
    docs = render(
        {**DEPLOY_POSTGRES, "postgres.password": "s3cret-pw", "postgres.persistence.enabled": False}
    )
    secret = one(docs, "Secret", "ergon-postgres")
    assert base64.b64decode(secret["data"]["dsn"]).decode() == (
        "postgresql://ergon:s3cret-pw@ergon-postgres.ergon.svc:5432/ergon"
    )
    statefulset = one(docs, "StatefulSet")
    assert "volumeClaimTemplates" not in statefulset["spec"]
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"] == {"name": "data", "emptyDir": {}}


def test_no_store_configured_fails_clearly() -> None:
    message = render_error({})
    assert "Ergon needs Postgres" in message
    assert "postgres.existingSecret" in message and "postgres.deploy=true" in message


def test_both_store_options_fail_clearly() -> None:
    message = render_error({**DEPLOY_POSTGRES, **EXISTING_SECRET})
    assert "Set only one of postgres.existingSecret" in message


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"operator.healthPort": "8080"}, "/operator/healthPort"),
        ({"operator.healthPort": 80}, "/operator/healthPort"),
        ({"operator.watchNamespace": "Not_A_Namespace"}, "/operator/watchNamespace"),
        ({"postgres.deploy": "yes"}, "/postgres/deploy"),
        ({"postgres.password": "has space"}, "/postgres/password"),
        ({"image.pullPolicy": "Sometimes"}, "/image/pullPolicy"),
        ({"operater": {"watchNamespace": ""}}, "operater"),
        ({"operator.extraEnv": [{"name": "ERGON_STORE", "value": "x"}]}, "/operator/extraEnv"),
        ({"worker.extraNamespaces": ["Team A"]}, "/worker/extraNamespaces"),
        ({"operator.replicas": "2"}, "/operator/replicas"),
        ({"operator.leaderElection": {"enabled": "yes"}}, "/operator/leaderElection/enabled"),
        ({"operator.extraEnv": [{"name": "POD_NAME", "value": "x"}]}, "/operator/extraEnv"),
    ],
)
def test_values_schema_rejects_bad_values(values: dict[str, Any], complaint: str) -> None:
    message = render_error({**DEPLOY_POSTGRES, **values})
    assert "values don't meet the specifications of the schema" in message
    assert complaint in message


def test_chart_crds_are_the_files_in_crds_not_copies() -> None:
    link = CHART_DIR / "crds"
    assert link.is_symlink(), "helm/ergon/crds must stay a link to ../../crds"
    assert link.resolve() == CRDS_DIR.resolve()
    shown = [doc for doc in yaml.safe_load_all(run_helm("show", "crds", CHART_DIR)) if doc]
    assert shown == [yaml.safe_load(path.read_text()) for path in sorted(CRD_FILES.values())]
    rendered = [
        d
        for d in render(EXISTING_SECRET, include_crds=True)
        if d["kind"] == "CustomResourceDefinition"
    ]
    assert rendered == shown


def test_packaged_chart_carries_the_crds(tmp_path: Path) -> None:
    run_helm("package", CHART_DIR, "--destination", tmp_path)
    (archive,) = tmp_path.glob("ergon-*.tgz")
    with tarfile.open(archive) as tar:
        for kind, path in CRD_FILES.items():
            member = tar.extractfile(f"ergon/crds/{path.name}")
            assert member is not None, kind
            assert member.read().decode() == path.read_text()
    out = run_helm("template", "ergon", archive, "--include-crds", "--set", "postgres.deploy=true")
    kinds = [doc["kind"] for doc in yaml.safe_load_all(out) if doc]
    assert kinds.count("CustomResourceDefinition") == len(CRD_FILES)


def test_notes_tell_how_to_run_and_signal_a_flow() -> None:
    out = run_helm(
        "install",
        "ergon",
        CHART_DIR,
        "--dry-run=client",
        "--namespace",
        "ergon",
        "--set",
        "postgres.deploy=true",
    )
    notes = out.split("NOTES:", 1)[1]
    assert "kubectl -n ergon apply -f examples/k8s/flowrun-order.yaml" in notes
    assert "examples/k8s/signal-approval.yaml" in notes
    assert '"signals":{"approval"' in notes


def test_helm_install_args_for_a_local_install() -> None:
    args = helm_install_args(kubeconfig="/tmp/kubeconfig", values={"image.tag": "dev"})
    assert args[:6] == [
        "install",
        "ergon",
        str(CHART_DIR),
        "--namespace",
        "ergon",
        "--create-namespace",
    ]
    assert args[6:8] == ["--kubeconfig", "/tmp/kubeconfig"]
    assert 'postgres.existingSecret="ergon-store"' in args
    # The same values render: the helper and the chart agree on the value names.
    run_helm("template", *args[1:3], *[a for a in args[8:]])
