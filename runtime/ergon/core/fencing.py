"""Execution fencing: an execution never starts work once its lease may have lapsed.

The store fences *writes*: a checkpoint carrying an old epoch is refused. That alone lets a
stalled worker (a long GC pause, a frozen VM, SIGSTOP) wake up after another worker took its
flow over and run the next step's side effect before its first write is refused. So every
execution under a lease also keeps a local deadline on a clock that keeps counting while the
process is stopped: the moment its last lease renewal was *sent* (confirmed by the store) plus
the lease length, less a safety margin for clock drift between workers. Before every step, every
retry attempt and every resumed flow body the execution checks it; past it, the execution stops
with `ergon.LeaseLostError` without running user code. A renewal that succeeds later moves it on.
"""

from __future__ import annotations

import time

# A worker stops starting work once this share of the lease has passed since its last
# confirmed renewal; the rest absorbs clock drift between the workers and the store.
SAFETY_MARGIN = 0.2

_REVOKED = float("-inf")
_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", None)


def lease_clock() -> float:
    """Seconds on a clock that never goes back and keeps counting while the process is stopped
    (and, on Linux, while the machine sleeps: CLOCK_BOOTTIME)."""
    if _BOOTTIME is not None:
        return time.clock_gettime(_BOOTTIME)
    return time.monotonic()


class LeaseDeadline:
    """How long the execution of one leased flow may go on starting work."""

    __slots__ = ("_expires", "lease_seconds")

    def __init__(self, *, lease_seconds: float, confirmed_at: float) -> None:
        """`confirmed_at`: the `lease_clock()` reading taken just before the store call that
        granted the lease (a claim), so the deadline can only err on the early side."""
        self.lease_seconds = lease_seconds
        self._expires = confirmed_at + lease_seconds * (1 - SAFETY_MARGIN)

    def confirm(self, *, sent_at: float) -> None:
        """A renewal sent at `sent_at` (a `lease_clock()` reading) was confirmed by the store.

        A lease once reported lost stays lost: a later confirmation concerns another claim.
        """
        if self._expires != _REVOKED:
            self._expires = max(self._expires, sent_at + self.lease_seconds * (1 - SAFETY_MARGIN))

    def revoke(self) -> None:
        """The store reported the lease lost: no more work, from now on."""
        self._expires = _REVOKED

    @property
    def lapsed(self) -> bool:
        return lease_clock() >= self._expires

    def overdue(self) -> float:
        """Seconds since the deadline passed (negative while it has not)."""
        return lease_clock() - self._expires
