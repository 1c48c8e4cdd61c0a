"""The worker pod policy: each rule refuses what it should, names the field and the rule, and
lets through what the platform team allowed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from ergon import FlowStatus, QueueDepth
from ergon_operator.decisions import Observed, decide
from ergon_operator.pods import worker_pod
from ergon_operator.policy import WorkerPolicy, check, image_repository, violations
from ergon_operator.pools import PoolObserved, WorkerPool, decide_pool
from ergon_operator.resources import FlowRun
from ergon_operator.settings import Settings, SettingsError
from ergon_operator.status import StepSummary

DEFAULT_IMAGE = "ghcr.io/ergon-dev/ergon:0.1.0-worker"
CLOSED = WorkerPolicy()
NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


def problems(template: dict[str, Any], *, image: str | None = None, **policy: Any) -> list[str]:
    return violations(
        policy=WorkerPolicy(**policy), default_image=DEFAULT_IMAGE, image=image, template=template
    )


def test_a_plain_flowrun_keeps_the_closed_default_policy() -> None:
    assert problems({}) == []
    assert problems({}, image=DEFAULT_IMAGE) == []
    assert problems({"env": [{"name": "LOG_LEVEL", "value": "debug"}]}) == []
    assert problems({"resources": {"requests": {"cpu": "500m"}, "limits": {"memory": "1Gi"}}}) == []


def test_images_default_to_the_worker_image_repository() -> None:
    assert image_repository("registry:5000/team/app:1.2@sha256:ab") == "registry:5000/team/app"
    assert image_repository("app") == "app"
    assert problems({}, image="ghcr.io/ergon-dev/ergon:0.2.0-worker") == []
    assert problems({}, image="ghcr.io/ergon-dev/ergon@sha256:0123") == []
    [problem] = problems({}, image="docker.io/evil/miner:latest")
    assert problem.startswith("spec.image: 'docker.io/evil/miner:latest' is not an allowed image")
    assert "workerPolicy.images: ghcr.io/ergon-dev/ergon:*, ghcr.io/ergon-dev/ergon@*" in problem
    # a repository that merely starts like the allowed one is another repository
    assert problems({}, image="ghcr.io/ergon-dev/ergon-evil:1") != []
    assert problems({}, image="ghcr.io/acme/orders:2", images=("ghcr.io/acme/*",)) == []


def test_service_accounts_are_the_pools_unless_allowed() -> None:
    [problem] = problems({"serviceAccountName": "admin"})
    assert "spec.podTemplate.serviceAccountName: 'admin' may not be chosen" in problem
    assert "workerPolicy.serviceAccounts: none" in problem
    assert problems({"serviceAccountName": "reports"}, service_accounts=("reports",)) == []


def test_env_from_secrets_and_config_maps_only_when_allowed() -> None:
    env = [
        {"name": "A", "valueFrom": {"secretKeyRef": {"name": "db-admin", "key": "password"}}},
        {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "x"}}},
        {"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    found = problems({"env": env})
    assert found == [
        "spec.podTemplate.env[0].valueFrom.secretKeyRef.name: Secret 'db-admin' is not allowed "
        "(workerPolicy.secrets: none)",
        "spec.podTemplate.env[1].valueFrom.configMapKeyRef.name: ConfigMap 'settings' is not "
        "allowed (workerPolicy.configMaps: none)",
    ]
    assert problems({"env": env}, secrets=("db-*",), config_maps=("settings",)) == []


@pytest.mark.parametrize(
    "name", ["LD_PRELOAD", "LD_LIBRARY_PATH", "PYTHONSTARTUP", "PYTHONPATH", "PYTHONHOME"]
)
def test_loader_variables_are_refused_unless_allowed(name: str) -> None:
    [problem] = problems({"env": [{"name": name, "value": "/x"}]})
    assert problem.startswith(f"spec.podTemplate.env[0].name: {name} changes what the worker")
    assert problems({"env": [{"name": name, "value": "/x"}]}, env_names=(name,)) == []


def test_labels_and_annotations_outside_reserved_prefixes_and_on_the_allow_list() -> None:
    [problem] = problems({"labels": {"app": "payments"}})
    assert problem == (
        "spec.podTemplate.labels.app: the key is not allowed (workerPolicy.labelKeys: none)"
    )
    assert problems({"labels": {"team": "a"}}, label_keys=("team",)) == []
    for key in ("ergon.dev/flowrun", "kubernetes.io/x", "node.kubernetes.io/x", "x.k8s.io/y"):
        [problem] = problems({"labels": {key: "v"}}, label_keys=("*",))
        assert "the prefix is reserved" in problem, key
    [problem] = problems({"annotations": {"vault.hashicorp.com/agent-inject": "true"}})
    assert "spec.podTemplate.annotations.vault.hashicorp.com/agent-inject" in problem
    assert problems({"annotations": {"a": "1"}}, annotation_keys=("a",)) == []


def test_tolerations_and_node_selectors_from_the_allow_lists() -> None:
    everything = {"operator": "Exists"}
    [problem] = problems({"tolerations": [everything]})
    assert problem.startswith("spec.podTemplate.tolerations[0]: ")
    allowed = {"key": "batch", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}
    assert problems({"tolerations": [allowed]}, tolerations=(allowed,)) == []
    assert problems({"tolerations": [everything]}, tolerations=(allowed,)) != []
    [problem] = problems({"nodeSelector": {"node-role.kubernetes.io/control-plane": ""}})
    assert "spec.podTemplate.nodeSelector.node-role.kubernetes.io/control-plane" in problem
    assert (
        problems({"nodeSelector": {"pool": "batch-2"}}, node_selector={"pool": ("batch-*",)}) == []
    )
    assert problems({"nodeSelector": {"pool": "gpu"}}, node_selector={"pool": ("batch-*",)}) != []


def test_resources_above_the_maximum_are_refused_and_limits_default_to_it() -> None:
    [problem] = problems({"resources": {"limits": {"memory": "64Gi"}}})
    assert problem == (
        "spec.podTemplate.resources.limits.memory: 64Gi is above the maximum "
        "(workerPolicy.maxResources.memory: 8Gi)"
    )
    assert problems({"resources": {"requests": {"cpu": "8"}}}) != []
    assert problems({"resources": {"requests": {"cpu": "4000m"}}}) == []
    pod = worker_pod(flowrun(), Settings(store="x", store_secret="s"), sequence=1, attempt=1)
    limits = pod["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"cpu": "4", "memory": "8Gi", "ephemeral-storage": "10Gi"}
    small = flowrun(podTemplate={"resources": {"limits": {"memory": "256Mi"}}})
    pod = worker_pod(small, Settings(store="x", store_secret="s"), sequence=1, attempt=1)
    assert pod["spec"]["containers"][0]["resources"]["limits"]["memory"] == "256Mi"


def test_volumes_are_empty_dirs_or_allowed_config_maps_and_secrets() -> None:
    template = {
        "volumes": [
            {"name": "cache", "emptyDir": {}},
            {"name": "certs", "secret": {"secretName": "tls"}},
            {"name": "conf", "configMap": {"name": "app"}},
            {"name": "host", "hostPath": {"path": "/"}},
        ],
        "volumeMounts": [
            {"name": "cache", "mountPath": "/mnt/cache"},
            {"name": "nope", "mountPath": "/tmp"},
        ],
    }
    found = problems(template)
    assert [p.split(":", 1)[0] for p in found] == [
        "spec.podTemplate.volumes[1].secret.secretName",
        "spec.podTemplate.volumes[2].configMap.name",
        "spec.podTemplate.volumes[3]",
        "spec.podTemplate.volumeMounts[1].name",
        "spec.podTemplate.volumeMounts[1].mountPath",
    ]
    assert problems({"volumes": [{"name": "tmp", "emptyDir": {}}]}) != []


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/usr/local/lib/python3.12/site-packages", "not an allowed mount path"),
        ("/mnt//cache", "not a normalised absolute path"),
        ("/mnt/cache/", "not a normalised absolute path"),
        ("/mnt/../usr/bin", "not a normalised absolute path"),
        ("//tmp", "not a normalised absolute path"),
        ("/tmp", "the operator's scratch volume"),
        ("mnt/cache", "not a normalised absolute path"),
    ],
)
def test_volumes_mount_only_under_the_allowed_paths(path: str, says: str) -> None:
    template = {
        "volumes": [{"name": "conf", "configMap": {"name": "app"}}],
        "volumeMounts": [{"name": "conf", "mountPath": path}],
    }
    [problem] = problems(template, config_maps=("app",))
    assert problem.startswith("spec.podTemplate.volumeMounts[0].mountPath: ") and says in problem
    whole = {**template, "volumeMounts": [{"name": "conf", "mountPath": "/mnt/conf"}]}
    assert problems(whole, config_maps=("app",)) == []
    sub = {"name": "conf", "mountPath": "/mnt/conf", "subPath": "sitecustomize.py"}
    [problem] = problems({**template, "volumeMounts": [sub]}, config_maps=("app",))
    assert problem.startswith("spec.podTemplate.volumeMounts[0].subPath: ")


def test_globs_know_only_star_and_question_mark() -> None:
    assert problems({}, image="ghcr.io/acme/app:1", images=("ghcr.io/acme/app:?",)) == []
    assert problems({}, image="ghcr.io/acme/app:1", images=("ghcr.io/acme/app:[0-9]",)) != []
    assert problems({}, image="ghcr.io/acme/app:[0-9]", images=("ghcr.io/acme/app:[0-9]",)) == []


def test_worker_pods_get_a_writable_tmp_and_the_templates_volumes() -> None:
    run = flowrun(
        podTemplate={
            "volumes": [{"name": "cache", "emptyDir": {}}],
            "volumeMounts": [{"name": "cache", "mountPath": "/mnt/cache"}],
        }
    )
    pod = worker_pod(run, Settings(store="x", store_secret="s"), sequence=1, attempt=1)
    container = pod["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "TMPDIR", "value": "/tmp"} in container["env"]
    assert container["volumeMounts"] == [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "cache", "mountPath": "/mnt/cache"},
    ]
    assert pod["spec"]["volumes"] == [
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "cache", "emptyDir": {}},
    ]


def test_a_violating_flowrun_fails_with_policy_violation_and_no_pod() -> None:
    run = flowrun(podTemplate={"env": [{"name": "LD_PRELOAD", "value": "/x.so"}]})
    flow = FlowStatus(
        id=run.uid, flow="examples.orders:OrderFlow", state="pending", input="{}",
        created_at=NOW, updated_at=NOW,
    )  # fmt: skip
    seen = Observed(run=run, flow=flow, steps=StepSummary(0, None), pods=[], now=NOW)
    plan = decide(seen, Settings(store="x", store_secret="s"))
    assert plan.create_pod is None
    assert plan.status.phase == "Failed"
    assert plan.fail_flow is not None and plan.fail_flow.type == "PolicyViolation"
    assert "spec.podTemplate.env[0].name: LD_PRELOAD" in plan.fail_flow.message
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "PolicyViolation")]
    ready = {c.type: c for c in plan.status.conditions}["Ready"]
    assert ready.reason == "PolicyViolation"


def test_the_policy_setting_is_json_and_mistakes_are_one_line() -> None:
    env = {"ERGON_STORE": "postgresql://x/y", "ERGON_STORE_SECRET": "s"}
    assert Settings.from_env(env).policy == CLOSED
    policy = '{"images": ["ghcr.io/acme/*"], "maxResources": {"cpu": "2"}}'
    settings = Settings.from_env({**env, "ERGON_WORKER_POLICY": policy})
    assert settings.policy.images == ("ghcr.io/acme/*",)
    assert settings.policy.max_resources == {"cpu": "2"}
    for bad, says in (
        ("{", "not JSON"),
        ('{"imagez": []}', "imagez"),
        ('{"maxResources": {"cpu": "lots"}}', "maxResources.cpu: 'lots' is not a quantity"),
    ):
        with pytest.raises(SettingsError) as raised:
            Settings.from_env({**env, "ERGON_WORKER_POLICY": bad})
        assert says in str(raised.value) and "\n" not in str(raised.value)
    assert check(policy=CLOSED, default_image=DEFAULT_IMAGE, image=None, template={}) is None


def flowrun(**spec: Any) -> FlowRun:
    return FlowRun.parse(
        {
            "apiVersion": "ergon.dev/v1alpha1",
            "kind": "FlowRun",
            "metadata": {
                "name": "order-42",
                "namespace": "shop",
                "uid": "5f0c3e2a-0000-4000-8000-0000000000aa",
                "generation": 1,
                "creationTimestamp": "2026-12-01T11:59:00Z",
            },
            "spec": {"flow": "examples.orders:OrderFlow", "input": {}, **spec},
        }
    )


def test_a_violating_flowrun_fails_even_while_no_worker_slot_is_free() -> None:
    run = flowrun(image="docker.io/evil/miner:1")
    flow = FlowStatus(
        id=run.uid, flow="examples.orders:OrderFlow", state="pending", input="{}",
        created_at=NOW, updated_at=NOW,
    )  # fmt: skip
    seen = Observed(
        run=run, flow=flow, steps=StepSummary(0, None), pods=[], now=NOW, slot_free=False
    )
    plan = decide(seen, Settings(store="x", store_secret="s"))
    assert not plan.queued and plan.create_pod is None
    assert plan.status.phase == "Failed"
    assert plan.fail_flow is not None and plan.fail_flow.type == "PolicyViolation"


def test_a_pool_that_breaks_the_policy_gets_no_deployment_for_any_version() -> None:
    """Not even for an older version with flows left: its Deployment would be built from the
    current, refused template."""
    refused = WorkerPool.parse(
        {
            "apiVersion": "ergon.dev/v1alpha1",
            "kind": "WorkerPool",
            "metadata": {"name": "orders", "namespace": "shop", "uid": "pool-uid", "generation": 3},
            "spec": {
                "image": "ghcr.io/ergon-dev/ergon:1.5.0",
                "imports": ["examples.orders"],
                "replicas": {"min": 1, "max": 3},
                "podTemplate": {"serviceAccountName": "cluster-admin-sa"},
            },
        }
    )
    busy = QueueDepth(runnable=5, running=0, waiting=0)
    seen = PoolObserved(
        pool=refused,
        deployments=[],
        depth={"1.5.0": busy, "1.3.0": busy},
        now=NOW,
        run_versions=frozenset({"1.3.0"}),
    )
    plan = decide_pool(seen, Settings(store="x", store_secret="s", worker_image=DEFAULT_IMAGE))
    assert plan.create == [] and plan.replace == []
    ready = plan.status.conditions[0]
    assert (ready.status, ready.reason) == ("False", "PolicyViolation")
    assert "spec.podTemplate.serviceAccountName" in (ready.message or "")
