"""Which store holds a namespace's flows: the store router every part of the operator asks.

`SharedStores` (`ERGON_TENANCY=shared`, the default) is one store for every namespace, the
operator's DSN as given: what the operator always did, at the same cost. `TenantStores`
(`ERGON_TENANCY=namespace`) opens, on first use of a namespace, the store of that namespace's
schema (`tenancy.tenant_name`), with the operator's own DSN and `?schema=`; in `provision` mode it
first provisions the tenant (roles, schema, DSN Secret), in `provided` mode it checks that an
administrator did. Each tenant store has a small connection pool (`TENANT_CONNECTIONS`) and one
LISTEN connection of its own, opened when the namespace is first seen; its schema's migrations
run as the tenant's owner role (`PostgresStore(migrate_as=...)`), so the tables belong to that
role (which no login role can become) however the operator connects, and the tenant's login role
gets only their rows.

A namespace already opened is checked again (`verify`: one GET of its Secret, one query of its
roles and schema), and provisioned again when its Secret or role is gone: before each worker pod
of a FlowRun is created (the pod reads that Secret and logs in as that role), and at most every
`RECHECK_SECONDS` when its store is used (so a WorkerPool's pods recover too).

Every caller goes through the router: the reconciler (flow records, signals, cancels), the
worker pool controller (queue depth), the orphan sweep (`sweep_targets`), the notification
subscriptions (`on_listen`) and readiness (`check`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import ergon
from ergon_operator.kube import Kube
from ergon_operator.settings import Settings
from ergon_operator.tenancy import (
    Provisioner,
    TenantDatabase,
    TenantError,
    owner_name,
    tenant_name,
)

log = logging.getLogger("ergon.operator.stores")

TENANT_CONNECTIONS = 4  # per tenant store: the operator's reads of one namespace are few
POD_CHECK_SECONDS = 2.0  # a burst of pods in one namespace checks its tenant once
RECHECK_SECONDS = 60.0  # a store in use checks its tenant at least this often


class Subscribable(Protocol):
    """What a store's `notifier()` returns, as far as the operator uses it."""

    def subscribe(self, callback: Callable[[str | None], None]) -> Callable[[], None]: ...


Listener = Callable[[str, Subscribable], None]
"""Told of each namespace whose tenant store starts listening: (namespace, its notifier)."""
SweepTarget = tuple[ergon.Store, tuple[str | None, ...]]
"""A store to sweep and the namespaces whose FlowRun origins to look at in it (None: all)."""


class StoreRouter:
    """The store of each namespace. This base class is the shared mode: one store for all."""

    def __init__(self, store: ergon.Store) -> None:
        self.shared: ergon.Store | None = store
        self._client = ergon.Client(store)

    async def store(self, namespace: str, *, create: bool = True) -> ergon.Store | None:
        """The store of `namespace`'s flows. With `create` (the default) a namespace not set up
        yet is set up first (`TenantError` when that fails; `ergon.StoreError` when Postgres is
        unreachable) and a store is always returned; without, None for a namespace that has no
        store yet (it can hold no flow)."""
        assert self.shared is not None
        return self.shared

    async def store_for(self, namespace: str) -> ergon.Store:
        """`store(namespace)`, set up if needed."""
        store = await self.store(namespace)
        assert store is not None
        return store

    async def client_for(self, namespace: str) -> ergon.Client:
        """An `ergon.Client` on `store_for(namespace)`."""
        return self._client

    async def verify(self, namespace: str) -> None:
        """Before a worker pod of `namespace` is created: what the pod needs of the namespace's
        store is there (set up again if not); `TenantError` when it cannot be. Shared mode:
        nothing to check."""

    def on_listen(self, listener: Listener) -> None:
        """Call `listener(namespace, notifier)` for every tenant store opened from now on (the
        shared store's notifications are subscribed to by the caller, with `shared`)."""

    async def sweep_targets(self, namespaces: Sequence[str]) -> list[SweepTarget]:
        """The stores the orphan sweep looks at, for an operator of `namespaces` (empty: all)."""
        assert self.shared is not None
        return [(self.shared, tuple(namespaces) or (None,))]

    def describe(self) -> dict[str, int]:
        """Counts for tests and the benchmark."""
        return {}

    async def close(self) -> None:
        """Close every store the router opened."""
        if self.shared is not None:
            await self.shared.close()


class SharedStores(StoreRouter):
    """`ERGON_TENANCY=shared`: one store for every namespace."""


class TenantStores(StoreRouter):
    """`ERGON_TENANCY=namespace`: one schema (and role) per namespace, opened on first use."""

    def __init__(self, settings: Settings, kube: Kube) -> None:
        self.shared = None
        self.settings = settings
        self.prefix = settings.tenant_prefix
        self.database = TenantDatabase(settings.store)
        self.provisioner = (
            Provisioner(
                kube=kube,
                database=self.database,
                admin_dsn=settings.store,
                secret=settings.store_secret,
                key=settings.store_secret_key,
            )
            if settings.tenant_secrets == "provision"
            else None
        )
        self._stores: dict[str, ergon.Store] = {}
        self._clients: dict[str, ergon.Client] = {}
        self._notifiers: dict[str, Subscribable] = {}
        self._announced: set[str] = set()  # tenants whose namespace the listeners were told
        self._locks: dict[str, asyncio.Lock] = {}
        self._listeners: list[Listener] = []
        self._checked: dict[str, float] = {}  # tenant -> when it was last found set up
        self.pod_check_seconds = POD_CHECK_SECONDS
        self.recheck_seconds = RECHECK_SECONDS

    def name_of(self, namespace: str) -> str:
        return tenant_name(namespace=namespace, prefix=self.prefix)

    async def store(self, namespace: str, *, create: bool = True) -> ergon.Store | None:
        name = self.name_of(namespace)
        opened = self._stores.get(name)
        if opened is not None and name in self._announced:
            if create and self._due(name, self.recheck_seconds):
                await self._recheck(namespace, name)
            return opened
        async with self._locks.setdefault(name, asyncio.Lock()):
            opened = self._stores.get(name)
            if opened is not None:  # opened by a sweep: its namespace is known now
                self._announce(name, namespace)
                return opened
            if create and self.provisioner is not None:
                await self.provisioner.provision(namespace=namespace, name=name)
            problem = await self.database.problem(name)
            if problem is not None:
                if not create:
                    return None
                how = (
                    "after provisioning it"
                    if self.provisioner is not None
                    else "ERGON_TENANT_SECRETS=provided: an administrator sets it up, see "
                    "`ergon-operator tenant-sql`"
                )
                raise TenantError(f"the store of namespace {namespace}: {problem} ({how})")
            if create:
                self._checked[name] = time.monotonic()
            return await self._open(name, namespace)

    def _due(self, name: str, seconds: float) -> bool:
        checked = self._checked.get(name)
        return checked is None or time.monotonic() - checked >= seconds

    async def verify(self, namespace: str) -> None:
        name = self.name_of(namespace)
        if self._stores.get(name) is None or name not in self._announced:
            await self.store_for(namespace)  # set up (or checked) as it opens
            return
        async with self._locks.setdefault(name, asyncio.Lock()):
            if self._due(name, self.pod_check_seconds):
                await self._check(namespace, name)

    async def _recheck(self, namespace: str, name: str) -> None:
        """`_check` for a store in use: a failure is logged, and the store (the operator's own
        connections) goes on serving; the next check is due after `recheck_seconds` again."""
        async with self._locks.setdefault(name, asyncio.Lock()):
            if not self._due(name, self.recheck_seconds):
                return
            try:
                await self._check(namespace, name)
            except Exception as exc:  # logged; the store itself still works
                self._checked[name] = time.monotonic()
                level = logging.DEBUG if isinstance(exc, ergon.StoreError) else logging.WARNING
                log.log(level, "namespace %s: checking its store failed: %s", namespace, exc)

    async def _check(self, namespace: str, name: str) -> None:
        """The namespace's Secret (provision mode) and its roles and schema are as provisioned;
        provisioned again when not (a deleted Secret, a dropped role). Under the tenant's lock."""
        missing: str | None = None
        if self.provisioner is not None and not await self.provisioner.has_secret(
            namespace=namespace, name=name
        ):
            missing = f"the Secret {self.provisioner.secret} is gone"
        else:
            missing = await self.database.problem(name)
        if missing is not None and self.provisioner is not None:
            log.warning("namespace %s: %s; provisioning its store again", namespace, missing)
            await self.provisioner.provision(namespace=namespace, name=name)
            missing = await self.database.problem(name)
        if missing is not None:
            raise TenantError(f"the store of namespace {namespace}: {missing}")
        self._checked[name] = time.monotonic()

    async def _open(self, name: str, namespace: str | None) -> ergon.Store:
        """The store of tenant `name`, listening for its notifications before it is used."""
        store: ergon.Store = ergon.PostgresStore(
            self.database.dsn,
            schema=name,
            migrate_as=owner_name(name),
            max_connections=TENANT_CONNECTIONS,
        )
        try:
            notifier = await store.notifier()
        except BaseException:
            await store.close()
            raise
        self._stores[name] = store
        self._clients[name] = ergon.Client(store)
        self._notifiers[name] = notifier
        if namespace is not None:
            self._announce(name, namespace)
        return store

    def _announce(self, name: str, namespace: str) -> None:
        if name in self._announced:
            return
        self._announced.add(name)
        for listener in self._listeners:
            listener(namespace, self._notifiers[name])
        log.info("namespace %s: its flows are in schema %s", namespace, name)

    async def client_for(self, namespace: str) -> ergon.Client:
        await self.store_for(namespace)
        return self._clients[self.name_of(namespace)]

    def on_listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def sweep_targets(self, namespaces: Sequence[str]) -> list[SweepTarget]:
        """The tenants that exist: of `namespaces` when given, else every schema with the
        prefix the operator can use (a namespace not seen since the start may hold flows of
        FlowRuns deleted while the operator was down). Nothing is provisioned for a sweep."""
        existing = set(await self.database.existing(self.prefix))
        targets: list[SweepTarget] = []
        if namespaces:
            for namespace in namespaces:
                if self.name_of(namespace) in existing:
                    store = await self.store(namespace, create=False)
                    if store is not None:
                        targets.append((store, (namespace,)))
            return targets
        by_name = {name: self._stores.get(name) for name in sorted(existing)}
        for name, store in by_name.items():
            if store is None:
                async with self._locks.setdefault(name, asyncio.Lock()):
                    store = self._stores.get(name) or await self._open(name, None)
            targets.append((store, (None,)))
        return targets

    def describe(self) -> dict[str, int]:
        return {"tenant_stores": len(self._stores)}

    async def close(self) -> None:
        stores, self._stores = list(self._stores.values()), {}
        self._clients = {}
        for store in stores:
            try:
                await store.close()
            except Exception as exc:  # closing is best effort
                log.debug("closing a tenant store failed: %s", exc)
        await self.database.close()


def router_for(settings: Settings, kube: Kube) -> StoreRouter:
    """The router the settings ask for; the shared store connects lazily, on first use."""
    if settings.per_namespace:
        return TenantStores(settings, kube)
    return SharedStores(ergon.open_store(settings.store))
