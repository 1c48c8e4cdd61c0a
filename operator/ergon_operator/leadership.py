"""Leader election with a `coordination.k8s.io/v1` Lease, so that of N replicas only one acts.

The algorithm is client-go's `leaderelection`: a candidate takes the Lease when it is absent,
released (no holder) or expired, renews it every `retry_period` while it leads, and gives up
when it could not renew for `renew_deadline`. "Expired" is judged by the local monotonic clock
only: a candidate remembers when it last *saw the lease record change* and considers the holder
gone once `leaseDurationSeconds` passed since then without a change. Clocks of different
machines are never compared (the `renewTime` written in the Lease is for humans).

The operator's use (see `__main__`): a standby blocks in `acquire()` before kopf starts — no
watches, no reconciles — and the leader exits the process the moment it cannot renew
(`on_lost`), so the pod restarts as a follower. A leader shutting down cleanly `release()`s the
Lease (holder cleared), and the standby takes over within one retry period instead of waiting
for the lease to expire.

Kubernetes calls run on a dedicated thread pool, so reconcile work that fills the default
executor cannot starve the renewals.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

log = logging.getLogger("ergon.operator.leadership")

LEASE_DURATION = 15.0
RENEW_DEADLINE = 10.0
RETRY_PERIOD = 2.0
DEFAULT_LEASE_NAME = "ergon-operator"
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


class ElectionSettingsError(ValueError):
    """A leader-election variable is malformed; the message names it."""


@dataclass(frozen=True, slots=True)
class ElectionSettings:
    """Whether and how to elect a leader (ERGON_LEADER_ELECTION, ERGON_LEASE_NAME, POD_*)."""

    enabled: bool
    lease_name: str = DEFAULT_LEASE_NAME
    namespace: str = "default"
    identity: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ElectionSettings:
        """Off unless ERGON_LEADER_ELECTION is set (the chart sets it), so a local
        `python -m ergon_operator` runs alone as before."""
        env = os.environ if env is None else env
        flag = env.get("ERGON_LEADER_ELECTION", "").strip().lower()
        if flag not in _TRUE + _FALSE:
            raise ElectionSettingsError(
                f"ERGON_LEADER_ELECTION must be true or false, not {flag!r}"
            )
        namespace = env.get("POD_NAMESPACE", "").strip() or _service_account_namespace()
        identity = env.get("POD_NAME", "").strip()
        if not identity:
            identity = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        return cls(
            enabled=flag in _TRUE,
            lease_name=env.get("ERGON_LEASE_NAME", "").strip() or DEFAULT_LEASE_NAME,
            namespace=namespace,
            identity=identity,
        )


def _service_account_namespace() -> str:
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE, encoding="utf-8") as file:
            return file.read().strip() or "default"
    except OSError:
        return "default"


class LeaderElector:
    """One candidate for the Lease `namespace`/`name`, identified by `identity` (the pod name).

    `api` is a `kubernetes.client.CoordinationV1Api` (or anything with the same three lease
    methods); it is called from this elector's own threads.
    """

    def __init__(
        self,
        *,
        api: Any,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float = LEASE_DURATION,
        renew_deadline: float = RENEW_DEADLINE,
        retry_period: float = RETRY_PERIOD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not retry_period < renew_deadline < lease_duration:
            raise ValueError("need retry_period < renew_deadline < lease_duration")
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ergon-lease")
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._leading = False
        self._written: dict[str, Any] | None = None  # the lease as our last write left it

    @property
    def is_leader(self) -> bool:
        """True from a successful acquire until the lease is lost or released."""
        return self._leading

    @property
    def holder(self) -> str | None:
        """The holder in the lease record last seen (None: none seen, or released)."""
        return self._observed[0] if self._observed else None

    async def acquire(self) -> None:
        """Block until this candidate holds the lease (retrying every `retry_period`)."""
        waiting_for: str | None = None
        while True:
            try:
                if await self._attempt(timeout=self.retry_period * 2):
                    log.info("%s became the leader (lease %s/%s)", *self._names())
                    return
            except Exception as exc:
                log.warning("could not read or take lease %s/%s: %s", *self._names()[1:], exc)
            if self.holder and self.holder != waiting_for:
                waiting_for = self.holder
                log.info("standing by: %s holds lease %s/%s", waiting_for, *self._names()[1:])
            await asyncio.sleep(self.retry_period)

    @property
    def renew_period(self) -> float:
        """How often a leader renews: three tries fit in the renew deadline. A renewal is one
        PUT of the lease as the last write left it (a GET only after a conflict), so an idle
        leader costs the API server one request every 3.3 s with the default timings."""
        return max(self.retry_period, self.renew_deadline / 3)

    async def keep_leading(self, *, on_lost: Callable[[], None]) -> None:
        """Renew every `renew_period` while leading; call `on_lost` (once) and return when no
        renewal succeeded for `renew_deadline`, or another holder took the lease."""
        renewed_at = self._clock()
        while self._leading:
            await asyncio.sleep(self.renew_period)
            if not self._leading:
                return  # released meanwhile
            remaining = renewed_at + self.renew_deadline - self._clock()
            try:
                if await self._renew(timeout=max(remaining, 0.1)):
                    renewed_at = self._clock()
                    continue
                reason = f"{self.holder} holds the lease"
            except Exception as exc:
                reason = f"renewal failed: {exc}"
            if self.holder not in (None, self.identity) or (
                self._clock() - renewed_at >= self.renew_deadline
            ):
                self._leading = False
                log.critical("%s lost the lease %s/%s: %s", *self._names(), reason)
                on_lost()
                return
            log.warning("could not renew lease %s/%s yet: %s", *self._names()[1:], reason)

    async def release(self) -> None:
        """Give the lease up (holder cleared) so a standby takes over at once. Best effort."""
        if not self._leading:
            return
        self._leading = False
        try:
            lease = await self._call(self._read, timeout=self.retry_period)
            spec = (lease or {}).get("spec") or {}
            if lease is None or spec.get("holderIdentity") != self.identity:
                return
            now = _micro_time(datetime.now(UTC))
            lease["spec"] = {
                **spec,
                "holderIdentity": None,
                "leaseDurationSeconds": 1,
                "acquireTime": now,
                "renewTime": now,
            }
            await self._call(self._replace, lease, timeout=self.retry_period)
            log.info("%s released lease %s/%s", *self._names())
        except Exception as exc:
            log.warning("could not release lease %s/%s: %s", *self._names()[1:], exc)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _renew(self, *, timeout: float) -> bool:
        """Renew by writing the lease as our last write left it; on a conflict (someone else
        wrote it meanwhile) fall back to reading it, as a candidate does."""
        written = self._written
        if written is None:
            return await self._attempt(timeout=timeout)
        spec = {**written.get("spec", {}), "renewTime": _micro_time(datetime.now(UTC))}
        body = {**written, "spec": spec}
        if self._won(spec, await self._call(self._replace, body, timeout=timeout)):
            return True
        return await self._attempt(timeout=timeout)

    async def _attempt(self, *, timeout: float) -> bool:
        """client-go's tryAcquireOrRenew: True if this candidate holds the lease now."""
        lease = await self._call(self._read, timeout=timeout)
        now = datetime.now(UTC)
        if lease is None:
            spec = self._spec(now=now, acquired=now, transitions=0)
            body = {"metadata": {"name": self.name, "namespace": self.namespace}, "spec": spec}
            return self._won(spec, await self._call(self._create, body, timeout=timeout))
        spec = lease.get("spec") or {}
        record = _record(spec)
        if record != self._observed:
            self._observed = record
            self._observed_at = self._clock()
        holder = spec.get("holderIdentity")
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        if holder and holder != self.identity and self._clock() < self._observed_at + duration:
            self._leading = False
            return False
        mine = holder == self.identity
        spec = self._spec(
            now=now,
            acquired=spec.get("acquireTime") if mine else now,
            transitions=int(spec.get("leaseTransitions") or 0) + (0 if mine else 1),
        )
        lease["spec"] = spec
        return self._won(spec, await self._call(self._replace, lease, timeout=timeout))

    def _won(self, spec: dict[str, Any], written: dict[str, Any] | None) -> bool:
        if written is not None:
            self._observed = _record(spec)
            self._observed_at = self._clock()
            self._leading = True
        self._written = written
        return written is not None

    def _spec(self, *, now: datetime, acquired: Any, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.lease_duration),
            "acquireTime": acquired if isinstance(acquired, str) else _micro_time(acquired),
            "renewTime": _micro_time(now),
            "leaseTransitions": transitions,
        }

    async def _call(self, function: Callable[..., Any], *args: Any, timeout: float) -> Any:
        """Run a blocking API call on the elector's threads, bounded by `timeout` even if the
        thread itself hangs (the request timeout usually ends it first)."""
        loop = asyncio.get_running_loop()
        call = partial(function, *args, timeout=timeout)
        return await asyncio.wait_for(loop.run_in_executor(self._executor, call), timeout + 0.5)

    def _read(self, *, timeout: float) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            response = self.api.read_namespaced_lease(
                self.name, self.namespace, _preload_content=False, _request_timeout=timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(json.loads(response.data))

    def _create(self, body: dict[str, Any], *, timeout: float) -> dict[str, Any] | None:
        return self._write(self.api.create_namespaced_lease, self.namespace, body, timeout)

    def _replace(self, body: dict[str, Any], *, timeout: float) -> dict[str, Any] | None:
        """Replace with the read resourceVersion: 409 means someone else wrote in between."""
        return self._write(
            partial(self.api.replace_namespaced_lease, self.name), self.namespace, body, timeout
        )

    @staticmethod
    def _write(
        method: Callable[..., Any], namespace: str, body: Any, timeout: float
    ) -> dict[str, Any] | None:
        """The lease as written (with its new resourceVersion), or None on a conflict."""
        from kubernetes.client.exceptions import ApiException

        try:
            response = method(namespace, body, _preload_content=False, _request_timeout=timeout)
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise
        return dict(json.loads(response.data))

    def _names(self) -> tuple[str, str, str]:
        return self.identity, self.namespace, self.name


def _record(spec: Mapping[str, Any]) -> tuple[Any, ...]:
    """The lease record whose change proves the holder alive (client-go compares the same)."""
    return (
        spec.get("holderIdentity"),
        spec.get("leaseDurationSeconds"),
        spec.get("acquireTime"),
        spec.get("renewTime"),
        spec.get("leaseTransitions"),
    )


def _micro_time(moment: datetime) -> str:
    """Kubernetes MicroTime: RFC 3339 with microseconds, UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_process_elector: LeaderElector | None = None
_election_enabled = False


def register(elector: LeaderElector | None) -> None:
    """Make `elector` the one `is_leader()` reports on (called once by `__main__`)."""
    global _process_elector, _election_enabled
    _process_elector = elector
    _election_enabled = elector is not None


def is_leader() -> bool:
    """Whether this process acts: it holds the lease, or runs without leader election."""
    if not _election_enabled:
        return True
    return _process_elector is not None and _process_elector.is_leader
