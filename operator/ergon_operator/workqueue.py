"""The work queue: which FlowRun to reconcile next, served by a fixed number of workers.

A key is in the queue at most once: poking a queued key again only raises its priority, and
poking a key being reconciled marks it to run once more afterwards (never twice at once). Lower
priority numbers go first and, within a priority, keys go in the order they were poked, so a new
FlowRun or a pod transition is served before the backlog of a startup listing, however long.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable, Hashable
from enum import IntEnum
from typing import Generic, TypeVar

log = logging.getLogger("ergon.operator")

K = TypeVar("K", bound=Hashable)


class Priority(IntEnum):
    """Why a key was poked; lower goes first."""

    URGENT = 0  # a new or changed FlowRun, a Signal, a pod transition, a store notification
    TIMER = 1  # a timer fired (sleep ended, backoff over, deadline reached)
    PROGRESS = 2  # live status of a running pod
    BACKGROUND = 3  # the startup listing, limits re-examined, notifications possibly missed


class WorkQueue(Generic[K]):
    """Keys waiting for `handle`, by priority then arrival; `workers` handle keys in parallel."""

    def __init__(self, handle: Callable[[K], Awaitable[None]], *, workers: int) -> None:
        self._handle = handle
        self._workers = workers
        self._heap: list[tuple[int, int, K]] = []
        self._queued: dict[K, int] = {}  # key -> the priority of its live heap entry
        self._running: set[K] = set()
        self._again: dict[K, int] = {}  # poked while running: requeue with this priority
        self._order = itertools.count()
        self._ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def __len__(self) -> int:
        return len(self._queued)

    def __contains__(self, key: object) -> bool:
        return key in self._queued or key in self._running

    def add(self, key: K, priority: int = Priority.URGENT) -> None:
        """Handle `key` soon; once, however often it is added before a worker takes it."""
        if key in self._running:
            self._again[key] = min(priority, self._again.get(key, priority))
            return
        current = self._queued.get(key)
        if current is not None and current <= priority:
            return
        self._queued[key] = priority  # a lower entry, if any, is skipped when it surfaces
        heapq.heappush(self._heap, (priority, next(self._order), key))
        self._ready.set()

    def start(self) -> None:
        """Start the workers (keys added before are kept and served in order)."""
        loop = asyncio.get_running_loop()
        for number in range(self._workers - len(self._tasks)):
            self._tasks.append(loop.create_task(self._work(), name=f"ergon-worker-{number}"))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _pop(self) -> K | None:
        while self._heap:
            priority, _, key = heapq.heappop(self._heap)
            if self._queued.get(key) == priority:
                del self._queued[key]
                return key
        return None

    async def _work(self) -> None:
        while True:
            key = self._pop()
            if key is None:
                self._ready.clear()
                await self._ready.wait()
                continue
            self._running.add(key)
            try:
                await self._handle(key)
            except Exception:  # the handler reports its own errors; never lose a worker
                log.exception("reconciling %s failed", key)
            finally:
                self._running.discard(key)
                again = self._again.pop(key, None)
                if again is not None:
                    self.add(key, again)


class Backoff(Generic[K]):
    """Consecutive failures per key, and how long to wait before trying again: `first`
    seconds, doubling with each failure, at most `most`."""

    def __init__(self, *, first: float = 1.0, most: float = 300.0) -> None:
        self.first, self.most = first, most
        self._failures: dict[K, int] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._failures

    def failed(self, key: K) -> tuple[int, float]:
        """Count a failure of `key`: (failures in a row, seconds until the next try)."""
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        return failures, min(self.first * 2 ** (failures - 1), self.most)

    def succeeded(self, key: K) -> None:
        self._failures.pop(key, None)
