"""Worker pool decisions, as pure functions: pool + Deployments + queue depths -> plan; and how
a FlowRun on a pool, or a pod-per-run FlowRun's image, is decided."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import ergon
from ergon import QueueDepth
from ergon_operator.decisions import Observed, decide
from ergon_operator.pods import worker_pod
from ergon_operator.pools import (
    POOL_VERSION_LABEL,
    SPEC_HASH_ANNOTATION,
    VERSION_ANNOTATION,
    Deployment,
    PoolObserved,
    PoolPlan,
    WorkerPool,
    decide_pool,
    deployment_name,
    parse_routing,
    pool_deployment,
    routing_version,
    version_of_image,
)
from ergon_operator.resources import POOL_LABEL, FlowRun
from ergon_operator.settings import Settings
from ergon_operator.status import StepSummary
from tests.chart.schemas import restricted_violations, validate_builtin
from tests.operator.test_decisions import NOW, SETTINGS, UID, flowrun, record

D14 = deployment_name("orders", "1.4.0")
D15 = deployment_name("orders", "1.5.0")


def pool(status: dict[str, Any] | None = None, **spec: Any) -> WorkerPool:
    return WorkerPool.parse(
        {
            "apiVersion": "ergon.dev/v1alpha1",
            "kind": "WorkerPool",
            "metadata": {"name": "orders", "namespace": "shop", "uid": "pool-uid", "generation": 2},
            "spec": {
                "image": "ghcr.io/acme/orders:1.4.0",
                "imports": ["examples.orders"],
                "concurrency": 4,
                "replicas": {"min": 0, "max": 3},
                "scaleDownDelaySeconds": 60,
                **spec,
            },
            "status": status or {},
        }
    )


def deployment_of(p: WorkerPool, version: str, replicas: int, ready: int = 0) -> Deployment:
    manifest = pool_deployment(p, SETTINGS, version=version, image=p.image, replicas=replicas)
    manifest["status"] = {"readyReplicas": ready}
    return Deployment.parse(manifest)


def depth(runnable: int = 0, running: int = 0, waiting: int = 0, **kw: Any) -> QueueDepth:
    return QueueDepth(runnable=runnable, running=running, waiting=waiting, **kw)


def decide_at(
    p: WorkerPool, deployments: list[Deployment], depths: dict[str, QueueDepth], now: datetime = NOW
) -> PoolPlan:
    return decide_pool(
        PoolObserved(pool=p, deployments=deployments, depth=depths, now=now), SETTINGS
    )


def test_version_defaults_to_the_image_tag_and_routing_keys_are_per_pool() -> None:
    assert version_of_image("ghcr.io/acme/orders:1.4.0") == "1.4.0"
    assert version_of_image("registry:5000/acme/orders") == "latest"
    assert version_of_image("acme/orders@sha256:0123456789abcdef0123") == "0123456789ab"
    assert pool().version == "1.4.0"
    key = routing_version("shop", "orders", "1.4.0")
    assert parse_routing(key) == ("shop", "orders", "1.4.0")
    assert parse_routing("1.4.0") is None and parse_routing(None) is None
    assert routing_version("shop", "billing", "1.4.0") != key  # pools never share flows
    assert deployment_name("orders", "1.4.0").startswith("orders-1.4.0-")
    tagged = deployment_name("orders", "Release_2/B")
    assert tagged.startswith("orders-") and tagged != deployment_name("orders", "release_2/b")
    # Two pools never compute the same name.
    assert deployment_name("web", "api-1.0") != deployment_name("web-api", "1.0")


def test_the_deployment_runs_an_exclusive_worker_under_the_restricted_profile() -> None:
    p = pool(podTemplate={"env": [{"name": "LOG", "value": "1"}], "resources": {}})
    manifest = pool_deployment(p, SETTINGS, version="1.4.0", image=p.image, replicas=2)
    validate_builtin(manifest)
    template = manifest["spec"]["template"]
    assert not restricted_violations(template["spec"])
    command = template["spec"]["containers"][0]["command"]
    assert command[:4] == ["ergon", "worker", "--import", "examples.orders"]
    assert command[command.index("--version") + 1] == "pool:shop/orders/1.4.0"
    assert "--exclusive" in command and command[command.index("--concurrency") + 1] == "4"
    assert manifest["spec"]["selector"]["matchLabels"] == {
        POOL_LABEL: "orders",
        POOL_VERSION_LABEL: template["metadata"]["labels"][POOL_VERSION_LABEL],
    }
    assert manifest["metadata"]["ownerReferences"][0]["uid"] == "pool-uid"
    assert manifest["metadata"]["annotations"][VERSION_ANNOTATION] == "1.4.0"
    env = {e["name"]: e for e in template["spec"]["containers"][0]["env"]}
    assert env["ERGON_STORE"]["valueFrom"]["secretKeyRef"]["name"] == "ergon-postgres"
    assert env["LOG"]["value"] == "1"
    # The spec hash ignores replicas: scaling is not a template change.
    again = pool_deployment(p, SETTINGS, version="1.4.0", image=p.image, replicas=7)
    assert (
        again["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
        == manifest["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
    )


def test_an_idle_pool_with_min_zero_has_a_deployment_at_zero_replicas() -> None:
    plan = decide_at(pool(), [], {"1.4.0": depth()})
    assert len(plan.create) == 1 and plan.create[0]["spec"]["replicas"] == 0
    assert plan.status.phase == "Idle" and plan.status.current_version == "1.4.0"
    assert plan.status.versions[0].state == "Active"


def test_replicas_follow_running_plus_runnable_over_concurrency_within_bounds() -> None:
    p = pool()
    current = deployment_of(p, "1.4.0", 0)
    plan = decide_at(p, [current], {"1.4.0": depth(runnable=5, running=0, waiting=9)})
    assert plan.scale == {D14: 2}  # ceil(5 / 4); waiting flows need no worker
    plan = decide_at(p, [current], {"1.4.0": depth(runnable=40, running=4)})
    assert plan.scale == {D14: 3}  # capped at max
    plan = decide_at(pool(replicas={"min": 1, "max": 3}), [current], {"1.4.0": depth()})
    assert plan.scale == {D14: 1}  # never below min


def test_scaling_down_waits_for_the_delay() -> None:
    p = pool()
    busy = deployment_of(p, "1.4.0", 2, ready=2)
    plan = decide_at(p, [busy], {"1.4.0": depth()})
    assert plan.scale == {} and plan.wake_at == NOW + timedelta(seconds=60)
    since = plan.status.versions[0].idle_since
    assert since is not None
    later = pool(status=plan.status.to_body())
    plan = decide_at(later, [busy], {"1.4.0": depth()}, now=NOW + timedelta(seconds=61))
    assert plan.scale == {D14: 0}
    # Work arriving meanwhile resets the delay.
    plan = decide_at(later, [busy], {"1.4.0": depth(running=5)}, now=NOW + timedelta(seconds=30))
    assert plan.status.versions[0].idle_since is None


def test_a_rollout_keeps_the_old_version_until_it_drains_then_deletes_it() -> None:
    v1 = pool()
    old = deployment_of(v1, "1.4.0", 2, ready=2)
    v2 = pool(image="ghcr.io/acme/orders:1.5.0", status={"versions": [{"version": "1.4.0"}]})
    plan = decide_at(v2, [old], {"1.5.0": depth(runnable=1), "1.4.0": depth(running=3, waiting=2)})
    assert [m["metadata"]["name"] for m in plan.create] == [D15]
    assert plan.create[0]["spec"]["replicas"] == 1
    states = {v.version: v.state for v in plan.status.versions}
    assert states == {"1.5.0": "Active", "1.4.0": "Draining"}
    assert plan.delete == [] and D14 not in plan.scale  # 1 pod serves 3 flows
    # The old version's template is never rewritten with the new image.
    assert not plan.replace
    # It needs fewer workers than it has since NOW: with only suspended flows left it goes
    # to zero once the delay has passed, and its Deployment stays.
    assert plan.status.versions[1].idle_since is not None
    later = pool(image=v2.image, status=plan.status.to_body())
    plan = decide_at(
        later, [old], {"1.5.0": depth(), "1.4.0": depth(waiting=2)}, now=NOW + timedelta(seconds=30)
    )
    assert plan.scale == {}
    plan = decide_at(
        later, [old], {"1.5.0": depth(), "1.4.0": depth(waiting=2)}, now=NOW + timedelta(seconds=61)
    )
    assert plan.scale == {D14: 0} and plan.delete == []
    assert plan.status.versions[1].state == "Draining"
    # Nothing unfinished: deleted once that has held for the grace, then listed as Drained.
    plan = decide_at(later, [old], {"1.5.0": depth(), "1.4.0": depth()})
    assert plan.delete == [] and plan.status.versions[1].state == "Draining"
    assert plan.wake_at == NOW + timedelta(seconds=60)
    drained = pool(image=v2.image, status=plan.status.to_body())
    plan = decide_at(
        drained, [old], {"1.5.0": depth(), "1.4.0": depth()}, now=NOW + timedelta(seconds=61)
    )
    assert plan.delete == [D14]
    assert {v.version: v.state for v in plan.status.versions}["1.4.0"] == "Drained"
    assert any(reason == "VersionDrained" for _, reason, _ in plan.events)


def test_a_template_change_within_a_version_updates_its_deployment() -> None:
    p = pool()
    current = deployment_of(p, "1.4.0", 1, ready=1)
    changed = pool(concurrency=8)
    plan = decide_at(changed, [current], {"1.4.0": depth(running=1)})
    assert [m["metadata"]["name"] for m in plan.replace] == [D14]
    assert decide_at(p, [current], {"1.4.0": depth(running=1)}).replace == []


def test_a_timer_coming_due_wakes_the_pool_to_scale_from_zero() -> None:
    p = pool()
    due = NOW + timedelta(minutes=5)
    plan = decide_at(
        p, [deployment_of(p, "1.4.0", 0)], {"1.4.0": depth(waiting=1, next_wake_at=due)}
    )
    assert plan.scale == {} and plan.wake_at == due


# --- FlowRuns on a pool -------------------------------------------------------------------


def pool_run(**status: Any) -> FlowRun:
    return flowrun(status or None, workerPool="orders")


def decide_run(run: FlowRun, flow: ergon.FlowStatus | None, **kw: Any) -> Any:
    seen = Observed(run, flow, StepSummary(2, "charge"), [], NOW, **kw)
    return decide(seen, SETTINGS)


def test_a_run_on_a_missing_pool_waits_with_a_reason_and_one_warning() -> None:
    plan = decide_run(pool_run(), None, pool_missing=True)
    assert plan.status.phase == "Pending"
    assert plan.status.conditions[1].reason == "WorkerPoolNotFound"
    assert plan.status.conditions[1].status == "False"
    assert [e.reason for e in plan.events] == ["WorkerPoolNotFound"]
    again = decide_run(
        FlowRun.parse({**_body(pool_run()), "status": plan.status.to_body()}),
        None,
        pool_missing=True,
    )
    assert again.events == []
    assert again.create_pod is None


def _body(run: FlowRun) -> dict[str, Any]:
    return {
        "metadata": {"name": run.name, "namespace": run.namespace, "uid": run.uid},
        "spec": {"flow": run.flow, "input": run.input, "workerPool": run.worker_pool},
    }


def test_a_run_on_a_pool_reports_the_flow_and_never_creates_a_pod() -> None:
    version = routing_version("shop", "orders", "1.4.0")
    pending = decide_run(pool_run(), record("pending", version=version), pool_image="img:1.4.0")
    assert pending.create_pod is None and pending.status.phase == "Pending"
    assert pending.status.conditions[1].reason == "WaitingForWorker"
    assert pending.status.worker_pool == "orders" and pending.status.version == "1.4.0"
    assert pending.status.image == "img:1.4.0"
    assert [e.reason for e in pending.events] == ["Scheduled"]
    running = decide_run(
        FlowRun.parse({**_body(pool_run()), "status": pending.status.to_body()}),
        record("running", version=version),
    )
    assert running.status.phase == "Running" and running.status.steps_completed == 2
    assert running.status.version == "1.4.0"  # kept, never re-derived from the pool
    assert running.events == []  # a claim is routine: no Event
    waiting = decide_run(
        pool_run(),
        record("suspended", version=version, wake_at=NOW + timedelta(hours=1)),
    )
    assert waiting.status.phase == "Suspended" and waiting.wake_at == NOW + timedelta(hours=1)
    assert waiting.create_pod is None


def test_a_pod_per_run_flowrun_keeps_the_image_of_its_first_pod() -> None:
    first = decide_run(flowrun(), record("pending"))
    assert first.create_pod is not None
    assert first.status.image == "ergon:dev-worker"
    upgraded = Settings(
        store="postgresql://x/y", store_secret="ergon-postgres", worker_image="ergon:new-worker"
    )
    run = flowrun({**first.status.to_body(), "phase": "Suspended"})
    manifest = worker_pod(run, upgraded, sequence=2, attempt=1)
    assert manifest["spec"]["containers"][0]["image"] == "ergon:dev-worker"
    fresh = worker_pod(flowrun(), upgraded, sequence=1, attempt=1)
    assert fresh["spec"]["containers"][0]["image"] == "ergon:new-worker"
    assert UID  # the same run throughout


def test_a_version_drained_a_moment_before_a_run_was_recorded_on_it_comes_back() -> None:
    # The pool moved to 1.5.0 and 1.4.0 drained; a FlowRun recorded on 1.4.0 just before the
    # switch is still unfinished: its version is watched again and gets workers.
    status = {"versions": [{"version": "1.4.0", "state": "Drained"}]}
    p = pool(image="ghcr.io/acme/orders:1.5.0", status=status)
    seen = PoolObserved(
        pool=p,
        deployments=[],
        depth={"1.5.0": depth(), "1.4.0": depth(runnable=1)},
        now=NOW,
        run_versions=frozenset({"1.4.0"}),
    )
    plan = decide_pool(seen, SETTINGS)
    assert [m["metadata"]["name"] for m in plan.create] == [D15, D14]
    assert plan.create[1]["spec"]["replicas"] == 1
    assert {v.version: v.state for v in plan.status.versions}["1.4.0"] == "Draining"


def test_a_new_image_under_the_same_version_is_refused_not_rolled_in_place() -> None:
    p = pool(version="1.4.0")
    current = deployment_of(p, "1.4.0", 1, ready=1)
    changed = pool(version="1.4.0", image="ghcr.io/acme/orders:1.4.1")
    plan = decide_at(changed, [current], {"1.4.0": depth(running=1)})
    assert plan.replace == [] and plan.create == []
    assert plan.status.conditions[0].reason == "ImageChangedWithoutVersion"
    assert plan.status.conditions[0].status == "False"
    assert [r for _, r, _ in plan.events] == ["ImageChangedWithoutVersion"]
    assert plan.status.versions[0].image == "ghcr.io/acme/orders:1.4.0"


def test_draining_versions_keep_the_concurrency_they_run_with() -> None:
    v1 = pool(concurrency=2)
    old = deployment_of(v1, "1.4.0", 1, ready=1)
    v2 = pool(image="ghcr.io/acme/orders:1.5.0", concurrency=16)
    plan = decide_at(v2, [old], {"1.5.0": depth(), "1.4.0": depth(running=4, runnable=2)})
    assert plan.scale[D14] == 3  # ceil(6 / 2), not ceil(6 / 16)


def test_the_status_body_leaves_out_unset_fields_so_it_converges() -> None:
    p = pool()
    plan = decide_at(p, [deployment_of(p, "1.4.0", 0)], {"1.4.0": depth()})
    body = plan.status.to_body()
    assert "idleSince" not in body["versions"][0]
    again = decide_at(pool(status=body), [deployment_of(p, "1.4.0", 0)], {"1.4.0": depth()})
    assert again.status.to_body() == body


def test_merge_patch_removes_what_the_desired_object_no_longer_has() -> None:
    from ergon_operator.pool_controller import merge_patch

    current = {"spec": {"nodeSelector": {"a": "b"}, "containers": [1]}, "keep": 1}
    desired = {"spec": {"containers": [2]}, "keep": 1}
    assert merge_patch(current, desired) == {"spec": {"nodeSelector": None, "containers": [2]}}
    assert merge_patch(desired, desired) == {}
