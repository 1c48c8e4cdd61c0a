"""Concurrency limits: how many worker pods may run at once, cluster-wide and per namespace.

A slot is held by every active worker pod in the pod cache and by every pod this process has
decided to create but not yet seen in the cache (a reservation), so two reconciles can never both
take the last slot: the check (`may_start`) and the reservation (`reserve`) happen with no await
between them, on the one event loop. Runs that found no slot wait here, in priority order
(`spec.priority` descending, then creation time), and when a slot frees the first of them are
poked; a waiting run may start only if no run ahead of it could take the slot instead.
Suspended runs have no active pod and so hold no slot.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ergon_operator.cache import Body, Key, key_of, owner_uids

EPOCH = datetime.min


@dataclass(frozen=True, slots=True, order=True)
class Rank:
    """A waiting run's place in line: higher priority first, then older first, then name."""

    neg_priority: int
    created: datetime
    key: Key

    @classmethod
    def of(cls, *, priority: int, created: datetime | None, key: Key) -> Rank:
        created = created.replace(tzinfo=None) if created is not None else EPOCH
        return cls(-priority, created, key)


def _active(body: Body | None) -> bool:
    if body is None:
        return False
    meta = body.get("metadata") or {}
    phase = (body.get("status") or {}).get("phase") or "Pending"
    return phase in ("Pending", "Running", "Unknown") and not meta.get("deletionTimestamp")


class Slots:
    """Slot accounting for `max_total` / `max_per_namespace` (None: unlimited)."""

    def __init__(
        self,
        *,
        max_total: int | None,
        max_per_namespace: int | None,
        poke: Callable[[Key], None],
    ) -> None:
        self.max_total = max_total
        self.max_per_namespace = max_per_namespace
        self._poke = poke
        self._pods: dict[Key, str] = {}  # active pod -> the uid of the FlowRun owning it
        self._reserved: dict[str, str] = {}  # FlowRun uid -> namespace
        self._waiting: dict[str, tuple[Rank, str]] = {}  # FlowRun uid -> rank, namespace
        self._taken: Counter[str] = Counter()  # namespace -> active pods + reservations

    @property
    def limited(self) -> bool:
        return self.max_total is not None or self.max_per_namespace is not None

    def running(self, namespace: str | None = None) -> int:
        """Slots taken (active pods and reservations), in `namespace` or in all."""
        if namespace is None:
            return len(self._pods) + len(self._reserved)
        return self._taken[namespace]

    def _take(self, namespace: str, delta: int) -> None:
        self._taken[namespace] += delta
        if self._taken[namespace] <= 0:
            del self._taken[namespace]

    def _free(self, namespace: str) -> int:
        free = 1 << 30
        if self.max_total is not None:
            free = min(free, self.max_total - self.running())
        if self.max_per_namespace is not None:
            free = min(free, self.max_per_namespace - self.running(namespace))
        return free

    # --- pods, as the cache sees them --------------------------------------------------------

    def pod_changed(self, old: Body | None, new: Body | None) -> None:
        """Cache listener: count active pods; a pod that stops being active frees a slot."""
        body = new if new is not None else old
        assert body is not None
        key = key_of(body)
        owners = owner_uids(body)
        if _active(new):
            if key not in self._pods:
                self._take(key[0], 1)
            self._pods[key] = owners[0] if owners else ""
            for uid in owners:
                if self._reserved.pop(uid, None) is not None:  # the reservation became this pod
                    self._take(key[0], -1)
        elif self._pods.pop(key, None) is not None:
            self._take(key[0], -1)
            self.poke_waiting()

    # --- decisions ---------------------------------------------------------------------------

    def may_start(self, *, uid: str, namespace: str, rank: Rank) -> bool:
        """Whether run `uid` may start a pod now: a slot is free for it, counting the runs
        waiting ahead of it that could take one."""
        if not self.limited:
            return True
        if uid in self._reserved:
            return True
        free_here = self._free(namespace)
        if free_here <= 0:
            return False
        ahead_here = ahead_total = 0
        for other, (other_rank, other_namespace) in self._waiting.items():
            if other == uid or not other_rank < rank:
                continue
            if other_namespace == namespace:
                ahead_here += 1
            if self._free(other_namespace) > 0:
                ahead_total += 1
        if self.max_per_namespace is not None and ahead_here >= free_here:
            return False
        return self.max_total is None or ahead_total < self.max_total - self.running()

    def reserve(self, *, uid: str, namespace: str) -> None:
        """Run `uid` is creating a pod: it holds a slot until the pod shows in the cache."""
        self._waiting.pop(uid, None)
        if self.limited and uid not in self._reserved:
            self._reserved[uid] = namespace
            self._take(namespace, 1)

    def release(self, uid: str) -> None:
        """The pod creation failed (or was not needed): give the slot back."""
        namespace = self._reserved.pop(uid, None)
        if namespace is not None:
            self._take(namespace, -1)
            self.poke_waiting()

    def wait(self, *, uid: str, namespace: str, rank: Rank) -> None:
        """Run `uid` wants a pod but found no slot; it is poked when one frees."""
        self._waiting[uid] = (rank, namespace)
        self.release(uid)

    def forget(self, uid: str) -> None:
        """Run `uid` wants no slot now (it runs, waits for an event, ended, or is gone)."""
        self._waiting.pop(uid, None)
        self.release(uid)

    def waiting(self) -> list[Key]:
        """Runs waiting for a slot, first in line first."""
        return [rank.key for rank, _ in sorted(self._waiting.values())]

    def poke_waiting(self) -> None:
        """Poke the runs first in line, as many as there are free slots for them."""
        if not self._waiting:
            return
        budget = (self.max_total - self.running()) if self.max_total is not None else 1 << 30
        taken: dict[str, int] = {}
        for rank, namespace in sorted(self._waiting.values()):
            if budget <= 0:
                break
            room = self._free(namespace) - taken.get(namespace, 0)
            if room <= 0:
                continue
            taken[namespace] = taken.get(namespace, 0) + 1
            budget -= 1
            self._poke(rank.key)

    def describe(self) -> dict[str, Any]:
        return {"running": self.running(), "waiting": len(self._waiting)}
