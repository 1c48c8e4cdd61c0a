"""One timer heap for every FlowRun's due time (durable sleeps, retry backoffs, deadlines).

One task sleeps until the earliest due time, so a thousand sleeping runs cost one timer, not a
thousand, and nothing polls. Each key keeps only its earliest due time: a later one is already
covered, since the reconcile that the earlier one triggers computes the next due time afresh.
Times are wall-clock (they come from the store and the API); the sleep is capped so a clock
step is noticed within a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import Callable, Hashable
from datetime import datetime
from typing import Generic, TypeVar

from ergon_operator.resources import utcnow

K = TypeVar("K", bound=Hashable)
MAX_SLEEP = 60.0
SLACK = 0.01  # fire a hair after the due time, so "now >= due" holds in the reconcile


class TimerHeap(Generic[K]):
    """`schedule(key, when)`; `fire(key)` is called once `when` has passed."""

    def __init__(
        self, fire: Callable[[K], None], *, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self._fire = fire
        self._clock = clock
        self._heap: list[tuple[datetime, int, K]] = []
        self._due: dict[K, datetime] = {}
        self._order = itertools.count()
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._due)

    def due(self, key: K) -> datetime | None:
        return self._due.get(key)

    def schedule(self, key: K, when: datetime) -> None:
        """Fire `key` at `when`, unless it is already due to fire earlier."""
        current = self._due.get(key)
        if current is not None and current <= when:
            return
        self._due[key] = when
        heapq.heappush(self._heap, (when, next(self._order), key))
        if self._heap[0][2] == key:
            self._changed.set()

    def cancel(self, key: K) -> None:
        self._due.pop(key, None)  # its heap entry is skipped when it surfaces

    def fire_due(self) -> float:
        """Fire every key now due; return the seconds until the next one (capped)."""
        now = self._clock()
        while self._heap:
            when, _, key = self._heap[0]
            if self._due.get(key) != when:
                heapq.heappop(self._heap)  # cancelled or superseded
                continue
            if when > now:
                return min((when - now).total_seconds() + SLACK, MAX_SLEEP)
            heapq.heappop(self._heap)
            del self._due[key]
            self._fire(key)
        return MAX_SLEEP

    async def run(self) -> None:
        """The one sleeping task: fire due keys, sleep until the next or a new earlier one."""
        while True:
            delay = self.fire_due()
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), delay)
