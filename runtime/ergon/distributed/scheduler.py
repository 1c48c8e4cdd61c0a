"""`ergon.Scheduler`: queue flows for workers, under a deployment version.

Internal module: use `ergon.Scheduler`.
"""

from __future__ import annotations

import os
import uuid

from ergon.core.flow import Flow
from ergon.core.store import Store
from ergon.distributed.client import Client

VERSION_ENV = "DEPLOY_VERSION"


class Scheduler:
    """Queues flows for workers. Flows scheduled with a version are claimed only by workers of
    that version; unversioned flows by any worker.

        scheduler = ergon.Scheduler(store).with_version("1.4.0")
        flow_id = await scheduler.schedule(Order(order_id="A1"))
    """

    def __init__(self, store: Store, *, version: str | None = None) -> None:
        self.store = store
        self.version = version

    def with_version(self, version: str) -> Scheduler:
        """A scheduler whose flows carry `version`."""
        if not isinstance(version, str) or not version:
            raise ValueError("a deployment version must be a non-empty string")
        return Scheduler(self.store, version=version)

    def unversioned(self) -> Scheduler:
        """A scheduler whose flows any worker may run."""
        return Scheduler(self.store, version=None)

    def from_env(self) -> Scheduler:
        """A scheduler versioned by `$DEPLOY_VERSION` (unversioned when it is unset or empty)."""
        return Scheduler(self.store, version=os.environ.get(VERSION_ENV) or None)

    async def schedule(self, flow: Flow, *, flow_id: str | uuid.UUID | None = None) -> str:
        """Queue `flow`; returns its id. Scheduling an id that exists changes nothing.

        An id not every store can hold raises `ergon.IdentifierError`, input holding NaN or
        ±Infinity `ergon.FlowInputError` (both ValueErrors); nothing is queued then.
        """
        return await Client(self.store).schedule(flow, flow_id=flow_id, version=self.version)
