"""Tenancy without a database: tenant names, the settings, tenant DSNs, the shared router (the
default: one store, as before), the wait while a namespace's store cannot be set up, and
`ergon-operator tenant-sql`. tests/operator/test_tenancy_postgres.py runs the rest on Postgres."""

from __future__ import annotations

import base64
import string
from dataclasses import replace
from typing import Any, cast

import pytest

import ergon
from ergon_operator.decisions import Observed, decide
from ergon_operator.kube import Kube
from ergon_operator.reconciler import Reconciler
from ergon_operator.resources import FlowRun, utcnow
from ergon_operator.settings import Settings, SettingsError
from ergon_operator.status import StepSummary
from ergon_operator.stores import SharedStores, StoreRouter, router_for
from ergon_operator.tenancy import (
    MAX_IDENTIFIER,
    SECRET_LABELS,
    SHORT_MAX,
    TENANT_ANNOTATION,
    Provisioner,
    TenantDatabase,
    TenantError,
    dsn_password,
    owner_name,
    tenant_dsn,
    tenant_name,
    tenant_sql,
)
from tests.operator.test_main import operator
from tests.operator.test_reconciler import KEY, FakeKube, flowrun_body

SPEC = flowrun_body()["spec"]
BASE = {"ERGON_STORE": "postgresql://op:pw@db:5432/ergon", "ERGON_STORE_SECRET": "s"}


# --- names -------------------------------------------------------------------------------------


def test_names_are_the_namespace_with_a_prefix() -> None:
    assert tenant_name(namespace="team-a") == "ergon_ns_team_a"
    assert tenant_name(namespace="1st", prefix="acme_") == "acme_1st"


def test_long_names_are_cut_and_hashed_to_the_identifier_limit_without_collisions() -> None:
    long_a = "a" * 60 + "-x"
    long_b = "a" * 60 + "-y"
    names = {tenant_name(namespace=n) for n in (long_a, long_b)}
    assert len(names) == 2
    for name in names:
        assert len(name) == MAX_IDENTIFIER and name.startswith("ergon_ns_aaaa")
    # A short name (at most 50) never has the length of a hashed one (63): no namespace's name
    # can be another's, even one ending like a hash.
    lookalike = "b" * (SHORT_MAX - len("ergon_ns_") - 13) + "-" + "0" * 12
    assert len(tenant_name(namespace=lookalike)) <= SHORT_MAX
    # Every namespace up to the 63 characters Kubernetes allows maps to a distinct identifier.
    seen: dict[str, str] = {}
    alphabet = string.ascii_lowercase[:4] + "-"
    for length in (1, 41, 42, 54, 55, 63):
        for letter in alphabet[:-1]:
            for dash in (None, 1, length - 2):
                chars = [letter] * length
                if dash is not None and 0 < dash < length - 1:
                    chars[dash] = "-"
                namespace = "".join(chars)
                name = tenant_name(namespace=namespace)
                assert len(name) <= MAX_IDENTIFIER
                assert seen.setdefault(name, namespace) == namespace


# --- settings ----------------------------------------------------------------------------------


def test_shared_is_the_default() -> None:
    settings = Settings.from_env(BASE)
    assert (settings.tenancy, settings.per_namespace) == ("shared", False)
    assert (settings.tenant_secrets, settings.tenant_prefix) == ("provision", "ergon_ns_")


def test_namespace_settings() -> None:
    settings = Settings.from_env(
        {
            **BASE,
            "ERGON_TENANCY": "namespace",
            "ERGON_TENANT_SECRETS": "provided",
            "ERGON_TENANT_PREFIX": "acme_",
        }
    )
    assert settings.per_namespace and settings.tenant_secrets == "provided"
    assert settings.tenant_prefix == "acme_"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ERGON_TENANCY": "schema"}, "ERGON_TENANCY must be shared or namespace, not 'schema'"),
        (
            {"ERGON_TENANT_SECRETS": "make"},
            "ERGON_TENANT_SECRETS must be provision or provided, not 'make'",
        ),
        ({"ERGON_TENANT_PREFIX": "Acme-"}, "ERGON_TENANT_PREFIX must be lowercase letters"),
        ({"ERGON_TENANT_PREFIX": "a" * 31}, "ERGON_TENANT_PREFIX must be lowercase letters"),
        (
            {"ERGON_TENANCY": "namespace", "ERGON_STORE": "sqlite:///x.db"},
            "ERGON_TENANCY=namespace needs a Postgres store",
        ),
    ],
)
def test_malformed_tenancy_settings_are_one_line_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as error:
        Settings.from_env({**BASE, **env})
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
    assert "pw" not in str(error.value)


# --- DSNs --------------------------------------------------------------------------------------


def test_a_tenant_dsn_keeps_host_database_and_safe_options_only() -> None:
    admin = "postgresql://op:s3cret@db.example:6432/flows?sslmode=require&schema=x&password=p"
    dsn = tenant_dsn(admin_dsn=admin, role="ergon_ns_a", password="pw-1", schema="ergon_ns_a")
    assert dsn == (
        "postgresql://ergon_ns_a:pw-1@db.example:6432/flows?sslmode=require&schema=ergon_ns_a"
    )
    assert dsn_password(dsn) == "pw-1" and "s3cret" not in dsn
    assert ergon.redact(dsn) == dsn.replace("pw-1", "***")


def test_tenant_sql_names_the_tenant_and_leaves_the_password_to_psql() -> None:
    sql = tenant_sql(namespace="team-a")
    assert 'CREATE ROLE "ergon_ns_team_a$owner" NOLOGIN NOSUPERUSER' in sql
    assert 'CREATE ROLE "ergon_ns_team_a" LOGIN NOSUPERUSER' in sql
    assert "PASSWORD :'password'" in sql and 'GRANT "ergon_ns_team_a$owner" TO :"operator"' in sql
    assert 'GRANT "ergon_ns_team_a" TO' not in sql  # the login role is a member of nothing
    assert 'CREATE SCHEMA "ergon_ns_team_a" AUTHORIZATION "ergon_ns_team_a$owner"' in sql
    assert 'REVOKE ALL ON SCHEMA "ergon_ns_team_a" FROM PUBLIC' in sql
    assert 'GRANT USAGE ON SCHEMA "ergon_ns_team_a" TO "ergon_ns_team_a";' in sql
    assert (
        'ALTER DEFAULT PRIVILEGES FOR ROLE "ergon_ns_team_a$owner" IN SCHEMA "ergon_ns_team_a" '
        'GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO "ergon_ns_team_a";'
    ) in sql


def test_owner_roles_are_no_tenants_and_no_other_tenants_owner() -> None:
    short = tenant_name(namespace="team-a")
    assert owner_name(short) == "ergon_ns_team_a$owner"
    # A namespace named like another's owner maps to another name ($ is no namespace character).
    assert tenant_name(namespace="team-a-owner") != owner_name(short)
    hashed = [tenant_name(namespace="a" * 60 + f"-{c}") for c in "xy"]
    owners = [owner_name(name) for name in hashed]
    assert all(len(o) == MAX_IDENTIFIER and "$" in o for o in owners)
    assert len({*hashed, *owners, short, owner_name(short)}) == 6


def test_the_tenant_sql_command() -> None:
    result = operator("tenant-sql", "--namespace", "team-b", "--prefix", "acme_")
    assert result.returncode == 0, result.stderr
    assert result.stdout == tenant_sql(namespace="team-b", prefix="acme_")
    refused = operator("tenant-sql", "--namespace", "Team_B")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1


# --- the router, shared --------------------------------------------------------------------------


async def test_the_shared_router_is_one_store_for_every_namespace() -> None:
    settings = Settings(store="memory://", store_secret="s")
    router = router_for(settings, cast(Kube, None))
    assert isinstance(router, SharedStores) and router.shared is not None
    try:
        assert await router.store_for("a") is router.shared
        assert await router.store_for("b") is router.shared
        assert await router.store("c", create=False) is router.shared
        assert (await router.client_for("a")).store is router.shared
        assert await router.sweep_targets(()) == [(router.shared, (None,))]
        assert await router.sweep_targets(("a", "b")) == [(router.shared, ("a", "b"))]
        assert router.describe() == {}
    finally:
        await router.close()


# --- a namespace whose store cannot be set up ----------------------------------------------------


def test_a_store_problem_makes_a_new_run_wait_with_one_warning() -> None:
    run = FlowRun.parse(flowrun_body())
    settings = Settings(store="memory://", store_secret="s")
    seen = Observed(
        run=run,
        flow=None,
        steps=StepSummary.of([]),
        pods=[],
        now=utcnow(),
        store_problem="permission denied to create role",
    )
    plan = decide(seen, settings)
    assert plan.status.phase == "Pending" and plan.create_pod is None
    ready = {c.type: c for c in plan.status.conditions}["Ready"]
    assert ready.reason == "ProvisioningStore" and "permission denied" in (ready.message or "")
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "StoreProvisioningFailed")]
    again = FlowRun.parse(flowrun_body(**{"phase": "Pending", **plan.status.to_body()}))
    assert decide(replace(seen, run=again), settings).events == []  # reported once


class RefusingStores(StoreRouter):
    """A router whose namespace cannot be set up (provisioning refused)."""

    def __init__(self) -> None:
        self.shared = None
        self.asked: list[str] = []

    async def store(self, namespace: str, *, create: bool = True) -> ergon.Store | None:
        self.asked.append(namespace)
        if not create:
            return None
        raise TenantError("provision the tenant ergon_ns_shop: permission denied to create role")


async def test_the_reconciler_reports_the_wait_and_retries_with_backoff() -> None:
    kube = FakeKube()
    kube.status_patches = []
    settings = Settings(store="memory://", store_secret="s")
    reconciler = Reconciler(settings, RefusingStores(), cast(Kube, kube))
    kube.flowrun = flowrun_body()
    reconciler.flowrun_event("ADDED", kube.flowrun)
    with pytest.raises(TenantError):
        await reconciler.reconcile(KEY)
    patch: dict[str, Any] = kube.status_patches[-1]
    assert patch["phase"] == "Pending"
    assert ("event", "StoreProvisioningFailed") in kube.calls
    assert not [c for c in kube.calls if c[0] == "create"], "no pod without a store"
    await reconciler._reconcile_key(KEY)  # through the queue: a backoff timer, no raise
    assert reconciler.timers.due(KEY) is not None
    # A deleted FlowRun of a namespace that never got a store: nothing to cancel, nothing made.
    reconciler.flowrun_event("DELETED", kube.flowrun)
    await reconciler.reconcile(KEY)


def test_an_ended_run_whose_record_is_elsewhere_keeps_its_status() -> None:
    """After a move from the shared store to a store per namespace, a finished FlowRun's record
    is not in its namespace's new schema: its status stays the report of how it ended."""
    body = flowrun_body(
        phase="Succeeded",
        observedGeneration=1,
        result="done",
        completedAt="2026-11-24T12:01:00Z",
    )
    run = FlowRun.parse(body)
    settings = Settings(store="memory://", store_secret="s")
    seen = Observed(run=run, flow=None, steps=StepSummary.of([]), pods=[], now=utcnow())
    plan = decide(seen, settings)
    assert plan.status.to_body() == run.status.to_body()
    assert plan.events == [] and plan.create_pod is None and not plan.fail_flow


def test_a_cancelled_run_whose_store_cannot_be_set_up_is_cancelled_not_left_waiting() -> None:
    run = FlowRun.parse({**flowrun_body(phase="Pending"), "spec": {**SPEC, "cancel": True}})
    settings = Settings(store="memory://", store_secret="s")
    seen = Observed(
        run=run,
        flow=None,
        steps=StepSummary.of([]),
        pods=[],
        now=utcnow(),
        store_problem="permission denied to create role",
    )
    plan = decide(seen, settings)
    assert plan.status.phase == "Cancelled" and plan.create_pod is None
    assert plan.status.completed_at is not None
    assert {c.type: c.reason for c in plan.status.conditions}["Ready"] == "Cancelled"
    assert "StoreProvisioningFailed" not in [e.reason for e in plan.events]


async def test_the_reconciler_cancels_a_run_whose_store_cannot_be_set_up() -> None:
    kube = FakeKube()
    kube.status_patches = []
    settings = Settings(store="memory://", store_secret="s")
    reconciler = Reconciler(settings, RefusingStores(), cast(Kube, kube))
    kube.flowrun = {**flowrun_body(phase="Pending"), "spec": {**SPEC, "cancel": True}}
    reconciler.flowrun_event("ADDED", kube.flowrun)
    with pytest.raises(TenantError):  # retried with backoff: a flow recorded before is cancelled
        await reconciler.reconcile(KEY)
    assert kube.status_patches[-1]["phase"] == "Cancelled"


class CheckedStores(SharedStores):
    """The shared store, with a `verify` that records its calls and may refuse."""

    def __init__(self, store: ergon.Store) -> None:
        super().__init__(store)
        self.verified: list[str] = []
        self.refuse: str | None = None

    async def verify(self, namespace: str) -> None:
        self.verified.append(namespace)
        if self.refuse is not None:
            raise TenantError(self.refuse)


async def test_the_namespaces_store_is_checked_before_each_worker_pod() -> None:
    kube = FakeKube()
    kube.status_patches = []
    store = ergon.open_store("memory://")
    stores = CheckedStores(store)
    settings = Settings(store="memory://", store_secret="s", worker_image="w:dev")
    reconciler = Reconciler(settings, stores, cast(Kube, kube))
    try:
        # The Secret or role is gone and cannot be made again: no pod, the run waits.
        stores.refuse = "the store of namespace shop: the role ergon_ns_shop does not exist"
        kube.flowrun = flowrun_body()
        reconciler.flowrun_event("ADDED", kube.flowrun)
        with pytest.raises(TenantError):
            await reconciler.reconcile(KEY)
        assert stores.verified == ["shop"]
        assert not [c for c in kube.calls if c[0] == "create"], "no pod without its store"
        assert kube.status_patches[-1]["conditions"][0]["reason"] == "ProvisioningStore"
        # Set up again: the pod is created, after the check.
        stores.refuse = None
        await reconciler.reconcile(KEY)
        assert stores.verified == ["shop", "shop"]
        assert ("create", "order-42-1") in kube.calls
        await reconciler.reconcile(KEY)  # the pod exists: no pod to create, no check
        assert stores.verified == ["shop", "shop"]
    finally:
        await store.close()


class OneSecretKube:
    def __init__(self, secret: dict[str, Any]) -> None:
        self.secret = secret

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.secret


async def test_a_secret_with_a_password_that_is_not_ascii_is_a_one_line_tenant_error() -> None:
    name = tenant_name(namespace="shop")
    dsn = f"postgresql://{name}:pässwörd@db:5432/ergon?schema={name}"
    provisioner = Provisioner(
        kube=cast(Kube, OneSecretKube(secret_manifest(name, dsn))),
        database=cast(TenantDatabase, None),  # never reached
        admin_dsn="postgresql://op:pw@db:5432/ergon",
        secret="s",
        key="dsn",
    )
    for call in (provisioner.provision, provisioner.has_secret):
        with pytest.raises(TenantError) as refused:
            await call(namespace="shop", name=name)
        message = str(refused.value)
        assert "not printable ASCII" in message and "\n" not in message
        assert "pässwörd" not in message and "p%C3%A4" not in message


def secret_manifest(name: str, dsn: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "s",
            "labels": dict(SECRET_LABELS),
            "annotations": {TENANT_ANNOTATION: name},
        },
        "data": {"dsn": base64.b64encode(dsn.encode()).decode()},
    }
