"""The operator's settings, from the environment (the Helm chart sets them)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ergon_operator.policy import WorkerPolicy

DEFAULT_WORKER_IMAGE = "ghcr.io/ergon-dev/ergon:0.1.0-worker"


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable and what to do."""


@dataclass(frozen=True, slots=True)
class Settings:
    """What the operator needs to know about its environment.

    `store` is the DSN the operator itself uses; worker pods read theirs from the Secret
    `store_secret`/`store_secret_key` in their namespace (never from the operator's env).
    """

    store: str
    store_secret: str
    store_secret_key: str = "dsn"
    worker_image: str = DEFAULT_WORKER_IMAGE
    # The namespaces watched (ERGON_WATCH_NAMESPACES); empty: all namespaces.
    watch_namespaces: tuple[str, ...] = ()
    worker_service_account: str | None = None
    health_port: int = 8080
    # Concurrency limits on running worker pods (None: unlimited), and how many FlowRuns are
    # reconciled at once.
    max_running_pods: int | None = None
    max_running_pods_per_namespace: int | None = None
    workers: int = 8
    # Decisions: how long a worker pod may fail to start (rejected, image or Secret missing,
    # unschedulable) before the run fails; the default podGC strategy and TTL of FlowRuns.
    pod_start_grace_seconds: float = 300.0
    pod_gc_strategy: str = "OnFlowRunCompletion"
    ttl_seconds_after_finished: int | None = None
    # What FlowRuns and WorkerPools may ask of their pods (ERGON_WORKER_POLICY, JSON).
    policy: WorkerPolicy = field(default_factory=WorkerPolicy)
    # Tenant isolation (ERGON_TENANCY): `shared`, one store for every namespace, or `namespace`,
    # a Postgres schema and role per namespace (docs/security.md). ERGON_TENANT_SECRETS:
    # `provision` (the operator creates role, schema and the namespace's DSN Secret) or
    # `provided` (an administrator did); ERGON_TENANT_PREFIX: what the names start with.
    tenancy: str = "shared"
    tenant_secrets: str = "provision"
    tenant_prefix: str = "ergon_ns_"

    @property
    def per_namespace(self) -> bool:
        """Each namespace's flows in a schema of their own (ERGON_TENANCY=namespace)."""
        return self.tenancy == "namespace"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        store = env.get("ERGON_STORE", "").strip()
        if not store:
            raise SettingsError(
                "ERGON_STORE is not set: give the operator the Postgres DSN of its store "
                "(postgresql://user:password@host:5432/db)"
            )
        secret = env.get("ERGON_STORE_SECRET", "").strip()
        if not secret:
            raise SettingsError(
                "ERGON_STORE_SECRET is not set: name the Secret (name or name/key, default key "
                "'dsn') from which worker pods read the store DSN"
            )
        name, _, key = secret.partition("/")
        port = env.get("ERGON_HEALTH_PORT", "8080").strip() or "8080"
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingsError(f"ERGON_HEALTH_PORT must be a port number, not {port!r}")
        return cls(
            store=store,
            store_secret=name,
            store_secret_key=key or "dsn",
            worker_image=env.get("ERGON_WORKER_IMAGE", "").strip() or DEFAULT_WORKER_IMAGE,
            watch_namespaces=_watch_namespaces(env),
            worker_service_account=env.get("ERGON_WORKER_SERVICE_ACCOUNT", "").strip() or None,
            health_port=int(port),
            max_running_pods=_count(env, "ERGON_MAX_RUNNING_PODS"),
            max_running_pods_per_namespace=_count(env, "ERGON_MAX_RUNNING_PODS_PER_NAMESPACE"),
            workers=_count(env, "ERGON_WORKERS") or 8,
            **_decision_settings(env),
            policy=_policy(env),
            **_tenancy_settings(env, store),
        )


TENANCY_MODES = ("shared", "namespace")
TENANT_SECRET_MODES = ("provision", "provided")
_PREFIX = re.compile(r"[a-z_][a-z0-9_]{0,29}")


def _tenancy_settings(env: Mapping[str, str], store: str) -> dict[str, Any]:
    """ERGON_TENANCY, ERGON_TENANT_SECRETS and ERGON_TENANT_PREFIX."""
    tenancy = env.get("ERGON_TENANCY", "").strip() or "shared"
    if tenancy not in TENANCY_MODES:
        raise SettingsError(f"ERGON_TENANCY must be {' or '.join(TENANCY_MODES)}, not {tenancy!r}")
    secrets = env.get("ERGON_TENANT_SECRETS", "").strip() or "provision"
    if secrets not in TENANT_SECRET_MODES:
        raise SettingsError(
            f"ERGON_TENANT_SECRETS must be {' or '.join(TENANT_SECRET_MODES)}, not {secrets!r}"
        )
    prefix = env.get("ERGON_TENANT_PREFIX", "").strip() or "ergon_ns_"
    if not _PREFIX.fullmatch(prefix):
        raise SettingsError(
            "ERGON_TENANT_PREFIX must be lowercase letters, digits and underscores (not starting "
            f"with a digit, at most 30), not {prefix!r}"
        )
    if tenancy == "namespace" and not store.startswith(("postgres://", "postgresql://")):
        raise SettingsError(
            "ERGON_TENANCY=namespace needs a Postgres store: ERGON_STORE must be a "
            "postgresql:// DSN (a schema and a role per namespace)"
        )
    return {"tenancy": tenancy, "tenant_secrets": secrets, "tenant_prefix": prefix}


def _decision_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """ERGON_POD_START_GRACE_SECONDS, ERGON_POD_GC_STRATEGY, ERGON_TTL_SECONDS_AFTER_FINISHED."""
    grace = env.get("ERGON_POD_START_GRACE_SECONDS", "").strip() or "300"
    try:
        grace_seconds = float(grace)
    except ValueError:
        grace_seconds = -1.0
    if not grace_seconds >= 0:
        raise SettingsError(
            f"ERGON_POD_START_GRACE_SECONDS must be a number of seconds >= 0, not {grace!r}"
        )
    strategies = ("OnPodCompletion", "OnFlowRunCompletion", "OnFlowRunSuccess", "Never")
    strategy = env.get("ERGON_POD_GC_STRATEGY", "").strip() or "OnFlowRunCompletion"
    if strategy not in strategies:
        raise SettingsError(
            f"ERGON_POD_GC_STRATEGY must be one of {', '.join(strategies)}, not {strategy!r}"
        )
    ttl = env.get("ERGON_TTL_SECONDS_AFTER_FINISHED", "").strip()
    if ttl and not ttl.isdigit():
        raise SettingsError(
            f"ERGON_TTL_SECONDS_AFTER_FINISHED must be a whole number of seconds, not {ttl!r}"
        )
    return {
        "pod_start_grace_seconds": grace_seconds,
        "pod_gc_strategy": strategy,
        "ttl_seconds_after_finished": int(ttl) if ttl else None,
    }


def _policy(env: Mapping[str, str]) -> WorkerPolicy:
    try:
        return WorkerPolicy.from_json(env.get("ERGON_WORKER_POLICY", ""))
    except ValueError as exc:
        raise SettingsError(f"ERGON_WORKER_POLICY: {exc}") from None


def _count(env: Mapping[str, str], variable: str) -> int | None:
    """A positive whole number, or None when unset or empty (no limit, the default)."""
    text = env.get(variable, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise SettingsError(f"{variable} must be a whole number >= 1 (or unset), not {text!r}")
    return int(text)


_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def _watch_namespaces(env: Mapping[str, str]) -> tuple[str, ...]:
    """ERGON_WATCH_NAMESPACES (comma-separated), or its one-namespace form ERGON_WATCH_NAMESPACE
    (either may be set, not both); empty or unset: all namespaces."""
    many = env.get("ERGON_WATCH_NAMESPACES", "").strip()
    one = env.get("ERGON_WATCH_NAMESPACE", "").strip()
    if many and one:
        raise SettingsError(
            "set ERGON_WATCH_NAMESPACES (comma-separated) or ERGON_WATCH_NAMESPACE (one "
            "namespace), not both"
        )
    variable = "ERGON_WATCH_NAMESPACES" if many else "ERGON_WATCH_NAMESPACE"
    names: list[str] = []
    for name in (part.strip() for part in (many or one).split(",")):
        if not name or name in names:
            continue
        if not _NAMESPACE.fullmatch(name):
            raise SettingsError(f"{variable}: {name!r} is not a namespace name")
        names.append(name)
    return tuple(names)
