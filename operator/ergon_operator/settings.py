"""The operator's settings, from the environment (the Helm chart sets them)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

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
    watch_namespace: str | None = None
    worker_service_account: str | None = None
    health_port: int = 8080
    resync_seconds: float = 30.0

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
        resync = env.get("ERGON_RESYNC_SECONDS", "30").strip() or "30"
        try:
            resync_seconds = float(resync)
        except ValueError:
            raise SettingsError(f"ERGON_RESYNC_SECONDS must be a number, not {resync!r}") from None
        return cls(
            store=store,
            store_secret=name,
            store_secret_key=key or "dsn",
            worker_image=env.get("ERGON_WORKER_IMAGE", "").strip() or DEFAULT_WORKER_IMAGE,
            watch_namespace=env.get("ERGON_WATCH_NAMESPACE", "").strip() or None,
            worker_service_account=env.get("ERGON_WORKER_SERVICE_ACCOUNT", "").strip() or None,
            health_port=int(port),
            resync_seconds=resync_seconds,
        )
