"""Telling a store outage from a refusal, for the FlowRun and the WorkerPool reconciles alike.

An outage (the store unreachable) is logged once, when it starts, and the key retried with
backoff; a refusal (a value the store cannot hold) is reported with each failure.
"""

from __future__ import annotations

import ergon


class PartialFailure(Exception):
    """Parts of a plan could not be applied (the rest was); the run is retried with backoff."""

    def __init__(self, errors: list[BaseException]) -> None:
        super().__init__("; ".join(f"{type(e).__name__}: {e}" for e in errors))
        self.errors = errors


def is_outage(exc: BaseException) -> bool:
    """An unreachable store (retry later), as opposed to one that refused a value."""
    if isinstance(exc, PartialFailure):
        return any(is_outage(e) for e in exc.errors)
    return isinstance(exc, ergon.StoreError) and not isinstance(exc, ValueError)
