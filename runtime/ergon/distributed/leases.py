"""Keeping a worker's leases alive, and hearing through them about takeovers and cancellations.

Leases are renewed every third of their length, so a worker survives two missed renewals before
another worker may take its flows over. A renewal also says which flows were asked to cancel; the
worker renews early (debounced) after every store notification, so a cancellation reaches a
running flow within a fraction of a second instead of a third of a lease. Each confirmed renewal
moves the executions' local deadlines on (`ergon.core.fencing`): a worker that cannot renew
stops starting work before its lease can be anybody else's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ergon.core.errors import StoreError
from ergon.core.fencing import lease_clock
from ergon.core.records import Lease
from ergon.core.store import QueueStore, Renewal

log = logging.getLogger("ergon.worker")

EARLY_RENEWAL_SECONDS = 0.2


class LeaseKeeper:
    """Renews the leases of the flows a worker is executing."""

    def __init__(
        self,
        store: QueueStore,
        owner: str,
        lease_seconds: float,
        leases: Callable[[], list[Lease]],
        on_renewal: Callable[[Renewal, list[Lease], float], None],
    ) -> None:
        self.store = store
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.leases = leases
        self.on_renewal = on_renewal
        self._soon = asyncio.Event()

    def renew_soon(self) -> None:
        """Ask for an early renewal (after a notification that may concern our flows)."""
        self._soon.set()

    async def run(self) -> None:
        interval = self.lease_seconds / 3
        while True:
            try:
                await asyncio.wait_for(self._soon.wait(), interval)
                await asyncio.sleep(EARLY_RENEWAL_SECONDS)  # gather a burst of notifications
            except TimeoutError:
                pass
            self._soon.clear()
            leases = self.leases()
            if not leases:
                continue
            sent_at = lease_clock()  # a confirmed lease runs from the request, not the reply
            try:
                renewal = await self.store.renew_leases(
                    owner=self.owner, leases=leases, lease_seconds=self.lease_seconds
                )
            except StoreError as exc:
                log.warning("worker %s could not renew its leases: %s", self.owner, exc)
                continue
            self.on_renewal(renewal, leases, sent_at)
