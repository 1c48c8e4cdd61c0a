"""Retry policies and the rule that decides whether an error is worth retrying."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import ClassVar, Protocol, runtime_checkable


@runtime_checkable
class Retryable(Protocol):
    """An error that says itself whether retrying could help."""

    def is_retryable(self) -> bool: ...


def is_retryable(error: BaseException) -> bool:
    """Whether running the failed work again could help: the one rule, used for step retries,
    flow-level retries and the `retryable` flag of every recorded `ErrorInfo`.

    An error is retryable unless it says otherwise: an `is_retryable()` method (the `Retryable`
    protocol, for users' exceptions) decides if there is one, else a `retryable` attribute
    (how Ergon's own errors say it: `ErgonError.retryable`), else it is retryable. A
    `is_retryable()` that raises counts as retryable.
    """
    check = getattr(error, "is_retryable", None)
    if callable(check):
        try:
            return bool(check())
        except Exception:
            return True
    return bool(getattr(error, "retryable", True))


def seconds(value: float | timedelta) -> float:
    """Durations are accepted as seconds or as `timedelta`; this normalizes to seconds."""
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


@dataclass(frozen=True, slots=True, init=False)
class RetryPolicy:
    """How often, and how patiently, a failing step or flow is tried again.

    The delay before attempt n+1 is `min(initial_delay * backoff_multiplier**(n-1), max_delay)`.
    Delays are given in seconds or as `timedelta` and kept in seconds.
    """

    max_attempts: int
    initial_delay: float
    max_delay: float
    backoff_multiplier: float

    NONE: ClassVar[RetryPolicy]
    STANDARD: ClassVar[RetryPolicy]
    AGGRESSIVE: ClassVar[RetryPolicy]

    def __init__(
        self,
        max_attempts: int = 1,
        initial_delay: float | timedelta = 1.0,
        max_delay: float | timedelta = 30.0,
        backoff_multiplier: float = 2.0,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"RetryPolicy.max_attempts must be at least 1, got {max_attempts}")
        initial, maximum = seconds(initial_delay), seconds(max_delay)
        if initial < 0 or maximum < 0:
            raise ValueError("RetryPolicy delays cannot be negative")
        if backoff_multiplier < 1:
            raise ValueError(
                f"RetryPolicy.backoff_multiplier must be at least 1, got {backoff_multiplier}"
            )
        object.__setattr__(self, "max_attempts", int(max_attempts))
        object.__setattr__(self, "initial_delay", initial)
        object.__setattr__(self, "max_delay", maximum)
        object.__setattr__(self, "backoff_multiplier", float(backoff_multiplier))

    @classmethod
    def with_max_attempts(cls, n: int) -> RetryPolicy:
        """`n` attempts with the standard backoff (1 s doubling up to 30 s)."""
        return cls(n, 1.0, 30.0, 2.0)

    def delay_after(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based) before the next."""
        delay = self.initial_delay * self.backoff_multiplier ** (attempt - 1)
        return float(min(delay, self.max_delay))

    def allows_another(self, attempts_made: int) -> bool:
        return attempts_made < self.max_attempts


RetryPolicy.NONE = RetryPolicy(1, 0.0, 0.0, 1.0)
RetryPolicy.STANDARD = RetryPolicy(3, 1.0, 30.0, 2.0)
RetryPolicy.AGGRESSIVE = RetryPolicy(10, 0.1, 10.0, 1.5)
