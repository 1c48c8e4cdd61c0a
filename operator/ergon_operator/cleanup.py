"""The orphan sweep: flows whose FlowRun no longer exists are cancelled, and (with a retention
set) their records pruned once they ended long enough ago.

Why a sweep rather than a finalizer: a finalizer would make every FlowRun deletion wait for the
operator (and for Postgres): with the operator down, `kubectl delete flowrun` would hang and a
namespace could not be deleted. The sweep never blocks a deletion. The watch's DELETED event
still cancels a flow at once when the operator and the store are up; the sweep is what makes it
durable when they were not. Its cost: a flow whose FlowRun was deleted while the operator (or
the store) was down stays un-cancelled until the next sweep -- the first one runs at startup, so
in practice until the operator is back. Nothing runs it meanwhile: its pods went with the
FlowRun (owner references), and only the operator creates pods.

Each flow the operator records carries the origin `flowrun:<namespace>/<name>/<uid>` (see
`origin_of`). A sweep lists the store's unfinished flows with the operator's origin prefix (one
query per unfinished state, not one per run), then asks which FlowRun uids exist (after the
listing, so that a FlowRun created meanwhile is known before its flow could be listed), and
force-cancels the flows of the others. With a retention (`ERGON_FLOW_RECORD_RETENTION`, e.g.
`7d`; default off: records are kept), it then prunes the ended flows of FlowRuns that no longer
exist and that ended longer than the retention ago, in one prune call. The records of FlowRuns
that still exist are never pruned (the operator reads them); those go once their FlowRun is
deleted (by its TTL, or by hand) and the retention has passed.

An operator confined to namespaces (`ERGON_WATCH_NAMESPACES`) sweeps only their origins (and
lists FlowRuns in each of them), so operators of other namespaces may share the store. Only the
leader sweeps. With a store per namespace (`ERGON_TENANCY=namespace`) each sweep looks at every
tenant store that exists (`StoreRouter.sweep_targets`: the watched namespaces' or, watching all,
every tenant schema), one FlowRun listing serving them all; nothing is provisioned for a sweep.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import ergon
from ergon_operator.kube import Kube, count_request
from ergon_operator.resources import GROUP, VERSION
from ergon_operator.settings import SettingsError

if TYPE_CHECKING:
    from ergon_operator.stores import StoreRouter, SweepTarget

log = logging.getLogger("ergon.operator.cleanup")

ORIGIN_PREFIX = "flowrun:"
OWNER = "ergon-operator"
SWEEP_SECONDS = 300.0
PAGE = 5000  # flows one listing reads
LIST_TIMEOUT = 30  # seconds for one page of the FlowRun listing
UNFINISHED: tuple[ergon.FlowState, ...] = ("pending", "running", "suspended")

KnownUids = Callable[[], Awaitable[Collection[str] | None]]
"""The uids of the FlowRuns that exist now, or None when they are not known yet (a cache that
has not finished its initial listing): that sweep is skipped."""


def origin_of(namespace: str, name: str, uid: str) -> str:
    """The origin the operator records on a FlowRun's flow (`Client.schedule_by_name`)."""
    return f"{ORIGIN_PREFIX}{namespace}/{name}/{uid}"


def uid_of(origin: str | None) -> str | None:
    """The FlowRun uid in an origin made by `origin_of` (None for any other origin)."""
    if origin is None or not origin.startswith(ORIGIN_PREFIX):
        return None
    uid = origin.rpartition("/")[2]
    return uid or None


def origin_prefix(namespace: str | None) -> str:
    """The origins one operator owns: every `flowrun:` one, or one namespace's."""
    return ORIGIN_PREFIX if namespace is None else f"{ORIGIN_PREFIX}{namespace}/"


def api_known_uids(
    kube: Kube, namespace: str | None, *, namespaces: Sequence[str] = ()
) -> KnownUids:
    """`KnownUids` from a fresh listing of the FlowRuns (paginated, metadata only read): one
    API list per sweep (per namespace of `namespaces` if given, else of `namespace`, None: all),
    authoritative whatever the watch caches have seen yet."""
    scopes: tuple[str | None, ...] = tuple(namespaces) or (namespace,)

    async def known() -> Collection[str]:
        uids: set[str] = set()
        for scope in scopes:
            token: str | None = None
            while True:
                page = await _list_flowruns(kube, scope, token)
                for item in page.get("items") or []:
                    uid = (item.get("metadata") or {}).get("uid")
                    if uid:
                        uids.add(str(uid))
                token = (page.get("metadata") or {}).get("continue") or None
                if token is None:
                    break
        return uids

    return known


async def _list_flowruns(kube: Kube, namespace: str | None, token: str | None) -> dict[str, Any]:
    count_request("list", "flowruns")
    extra: dict[str, Any] = {"limit": PAGE, "_request_timeout": LIST_TIMEOUT}
    if token:
        extra["_continue"] = token

    def call() -> dict[str, Any]:
        if namespace:
            method: Any = kube.custom.list_namespaced_custom_object
            response = method(
                GROUP, VERSION, namespace, "flowruns", _preload_content=False, **extra
            )
        else:
            method = kube.custom.list_cluster_custom_object
            response = method(GROUP, VERSION, "flowruns", _preload_content=False, **extra)
        data = response.data
        return dict(json.loads(data)) if data else {}

    return await asyncio.to_thread(call)


# --- settings --------------------------------------------------------------------------------

_DURATION = re.compile(r"\s*(\d+)\s*([dhms])\s*")
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> timedelta | None:
    """`7d`, `12h`, `30m`, `45s` (the form of `ergon flows prune --finished-before`) as a
    timedelta; None for anything else."""
    match = _DURATION.fullmatch(text)
    if match is None:
        return None
    return timedelta(seconds=int(match[1]) * _UNITS[match[2]])


@dataclass(frozen=True, slots=True)
class SweepSettings:
    """`ERGON_ORPHAN_SWEEP_SECONDS` (default 300) and `ERGON_FLOW_RECORD_RETENTION` (a
    duration like 7d; unset or `off`: flow records are never pruned)."""

    interval: float = SWEEP_SECONDS
    retention: timedelta | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SweepSettings:
        interval_text = env.get("ERGON_ORPHAN_SWEEP_SECONDS", "").strip()
        try:
            interval = float(interval_text) if interval_text else SWEEP_SECONDS
        except ValueError:
            interval = 0.0
        if not interval > 0:
            raise SettingsError(
                f"ERGON_ORPHAN_SWEEP_SECONDS must be a number of seconds > 0, not {interval_text!r}"
            )
        retention_text = env.get("ERGON_FLOW_RECORD_RETENTION", "").strip()
        retention = None
        if retention_text and retention_text.lower() != "off":
            retention = parse_duration(retention_text)
            if retention is None:
                raise SettingsError(
                    "ERGON_FLOW_RECORD_RETENTION must be a duration such as 7d, 12h or 30m (or "
                    f"off), not {retention_text!r}"
                )
        return cls(interval=interval, retention=retention)


# --- the sweep -------------------------------------------------------------------------------


@dataclass(slots=True)
class SweepResult:
    """What one sweep did: flows cancelled, records pruned; `skipped` when the FlowRuns were
    not known yet."""

    cancelled: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    skipped: bool = False


class Sweeper:
    """Cancels the flows of deleted FlowRuns and prunes their records after the retention.

    `known_uids` answers which FlowRuns exist (a fresh API listing, or the FlowRun cache once
    its initial listing is complete). The flows looked at: those of `store` (with the origins of
    `namespace`, or of `namespaces`, or all), or, with `targets`, of each store it returns at
    each sweep with its namespaces. `run()` sweeps at once and then every `interval` seconds
    until cancelled; `sweep()` is one pass (tests, or a caller with its own schedule).
    """

    def __init__(
        self,
        *,
        store: ergon.Store | None = None,
        known_uids: KnownUids,
        namespace: str | None = None,
        namespaces: Sequence[str] = (),
        targets: Callable[[], Awaitable[list[SweepTarget]]] | None = None,
        settings: SweepSettings | None = None,
        page: int = PAGE,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        if targets is None:
            if store is None:
                raise TypeError("Sweeper needs a store or targets")
            # The origins swept: one namespace's, several namespaces' (`namespaces`), or all.
            scopes: tuple[str | None, ...] = tuple(namespaces) or (namespace,)
            fixed: list[SweepTarget] = [(store, scopes)]

            async def only_store() -> list[SweepTarget]:
                return fixed

            targets = only_store
        self.targets = targets
        self.known_uids = known_uids
        self.settings = settings or SweepSettings()
        self.page = page
        self._now = now or (lambda: datetime.now(UTC))
        self._failing = False

    @classmethod
    def for_operator(
        cls,
        *,
        stores: StoreRouter,
        kube: Kube,
        namespaces: Sequence[str],
        env: Mapping[str, str],
    ) -> Sweeper:
        """The operator's sweeper for the FlowRuns of `namespaces` (empty: all), in the stores
        `stores` routes them to: FlowRuns listed through the API at each sweep, settings from
        `env` (`SettingsError` when malformed)."""

        async def targets() -> list[SweepTarget]:
            return await stores.sweep_targets(namespaces)

        return cls(
            known_uids=api_known_uids(kube, None, namespaces=namespaces),
            targets=targets,
            settings=SweepSettings.from_env(env),
        )

    async def sweep(self) -> SweepResult:
        result = SweepResult()
        targets = [
            (ergon.Client(store), tuple(origin_prefix(n) for n in scopes))
            for store, scopes in await self.targets()
        ]
        unfinished = [
            (client, flow)
            for client, prefixes in targets
            for flow in await self._unfinished(client, prefixes)
        ]
        known = await self.known_uids()
        if known is None:
            result.skipped = True
            return result
        known = set(known)
        for client, flow in unfinished:
            uid = uid_of(flow.origin)
            if uid is None or uid in known:
                continue
            try:
                await client.cancel(flow.id, force=True, owner=OWNER)
            except ergon.FlowNotFoundError:
                continue  # pruned meanwhile
            result.cancelled.append(flow.id)
            log.info("flow %s of deleted FlowRun %s cancelled by the sweep", flow.id, flow.origin)
        if self.settings.retention is not None:
            for client, prefixes in targets:
                result.pruned += await self._prune(client, prefixes, self.settings.retention)
        return result

    async def _unfinished(
        self, client: ergon.Client, prefixes: tuple[str, ...]
    ) -> list[ergon.FlowStatus]:
        flows: list[ergon.FlowStatus] = []
        for prefix in prefixes:
            for state in UNFINISHED:
                page = await client.list_flows(state=state, origin_prefix=prefix, limit=self.page)
                if len(page) >= self.page:
                    log.warning(
                        "more than %d %s flows of FlowRuns (%s): this sweep looks at the newest "
                        "%d only",
                        self.page,
                        state,
                        prefix,
                        self.page,
                    )
                flows += page
        return flows

    async def _prune(
        self, client: ergon.Client, prefixes: tuple[str, ...], retention: timedelta
    ) -> list[str]:
        cutoff = self._now() - retention
        candidates: dict[str, list[str]] = {}
        for prefix in prefixes:
            found = await client.store.prune_flows(
                finished_before=cutoff, origin_prefix=prefix, dry_run=True, limit=self.page
            )
            if found:
                candidates[prefix] = found
        if not candidates:
            return []
        known = await self.known_uids()
        if known is None:
            return []
        known = set(known)
        pruned: list[str] = []
        for prefix, flow_ids in candidates.items():
            # the operator's flow ids are FlowRun uids
            doomed = [flow_id for flow_id in flow_ids if flow_id not in known]
            if not doomed:
                continue
            # `ids` narrows the prune to the orphans; the store re-checks that each ended
            # before the cutoff, so a record that changed meanwhile stays.
            pruned += await client.prune(finished_before=cutoff, origin_prefix=prefix, ids=doomed)
        if pruned:
            log.info("pruned the records of %d flows of deleted FlowRuns", len(pruned))
        return pruned

    async def run(self) -> None:
        """Sweep now, then every `interval` seconds, until cancelled. A failed sweep (the store
        or the API unreachable) is logged once per outage and tried again at the next one."""
        while True:
            try:
                result = await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # an outage: the next sweep tries again
                if not self._failing:
                    log.warning(
                        "the orphan sweep failed (%s); retrying every %.0f s",
                        exc,
                        self.settings.interval,
                    )
                self._failing = True
            else:
                if self._failing:
                    log.info("the orphan sweep works again")
                self._failing = False
                if result.cancelled or result.pruned:
                    log.info(
                        "orphan sweep: %d flows cancelled, %d records pruned",
                        len(result.cancelled),
                        len(result.pruned),
                    )
            await asyncio.sleep(self.settings.interval)
