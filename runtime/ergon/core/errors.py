"""Every error Ergon raises, in one place.

Two families live here:

* errors users see and may catch (`StepError`, `ChildFlowError`, `SignalTimeout`, ...), all
  subclasses of `ErgonError`;
* control-flow signals the runtime uses to unwind a flow body (`_Interrupt` and its subclasses).
  Those derive from `BaseException` on purpose: a flow that wraps its steps in
  `except Exception:` must not swallow a suspension, a lost lease or a cancellation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FlowError:
    """Why a flow (or a step, or a child flow) failed, as recorded in the store.

    `type` is the exception's class name, `message` its text, `retryable` whether a retry could
    help. `module` and `args` are kept so the original exception class can be rebuilt on replay
    when that is possible.
    """

    type: str
    message: str
    retryable: bool = True
    module: str | None = None
    args: tuple[object, ...] = ()


class ErgonError(Exception):
    """Base class of the errors Ergon raises to users."""


class FlowDefinitionError(ErgonError, TypeError):
    """A Flow class or a step is declared in a way Ergon cannot run."""


class FlowContextError(ErgonError, RuntimeError):
    """A flow-only operation (a step, a signal wait, a timer) was used outside a running flow."""


class FlowNotFoundError(ErgonError, LookupError):
    """No flow with that id exists in the store."""


class FlowInputError(ErgonError, ValueError):
    """The input given for a flow does not validate against the Flow's model."""


class FlowMismatchError(ErgonError, ValueError):
    """A flow id is already recorded for a different flow class (or, for a child flow, under
    another parent)."""


class IdentifierError(ErgonError, ValueError):
    """A flow id, signal name or signal id that not every store can hold (empty, too long, NUL,
    unpaired surrogate). Never retried: the same value would be refused again."""

    retryable = False


class FlowLoadError(ErgonError, ImportError):
    """A flow path such as `module:QualName` cannot be imported or does not name a Flow."""


class StoreError(ErgonError):
    """The store cannot be opened or reached, or refused an operation."""


class StoreValueError(StoreError, ValueError):
    """The store refused a value it was given, not because it is unreachable: a payload over a
    backend limit (Postgres' 8,000-byte `pg_notify`, SQLite's and Redis' maximum string length),
    a character the backend cannot hold (NUL in Postgres text, an unpaired surrogate), a number
    out of the column's range.

    Sending the same value again fails the same way, so it is never retried: a step checkpoint
    or the end of an execution that meets it fails the flow (`StoreRefused`); an admin call
    (`Client.signal`, `Scheduler.schedule`) raises it to the caller. The message is printable
    ASCII of bounded length, so that it can itself be recorded as the flow's error.
    """

    retryable = False
    CODE = "StoreRefused"  # the type of the flow's error
    LIMIT = 600

    def __init__(self, message: str) -> None:
        super().__init__(printable(message, self.LIMIT))

    def failure(self, what: str) -> FlowError:
        """The flow's error (not retryable) when the store refused `what` ("the checkpoint of
        step 'charge' (position 3)")."""
        return FlowError(self.CODE, f"the store refused {printable(what, 200)}: {self}", False)


def printable(text: str, limit: int) -> str:
    """`text` in printable ASCII (other characters, NUL and lone surrogates included, as
    backslash escapes), cut after `limit` characters: safe to record in any store."""
    text = text.encode("ascii", "backslashreplace").decode("ascii")
    text = _CONTROL.sub(lambda found: f"\\x{ord(found.group()):02x}", text)
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text) - limit} more characters)"
    return text


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class StoreUrlError(StoreError, ValueError):
    """A store URL that `open_store` cannot open."""


class FencedError(StoreError):
    """A write carrying an old epoch was refused: another executor holds the flow now."""


class CancelRequestedError(StoreError):
    """A step checkpoint was refused because the flow's cancellation was requested."""


class StepError(ErgonError):
    """A recorded step failure replayed when the original exception class cannot be rebuilt."""

    def __init__(self, type: str, message: str, retryable: bool = True) -> None:
        super().__init__(f"{type}: {message}")
        self.type = type
        self.message = message
        self.retryable = retryable

    def is_retryable(self) -> bool:
        return self.retryable


class NonDeterminismError(ErgonError):
    """The flow called a different step at a position than the one recorded there.

    Replaying would hand one step's result to another, so the flow fails instead (not retryable).
    """

    retryable = False


class SignalPayloadError(ErgonError):
    """A signal's payload does not validate against the type the flow waits for."""

    retryable = False

    def __init__(self, message: str, *, signal: str | None = None) -> None:
        super().__init__(message)
        self.signal = signal


class SignalTimeout(ErgonError, TimeoutError):
    """No signal arrived before the wait's durable timeout."""

    retryable = False

    def __init__(self, message: str, *, signal: str | None = None) -> None:
        super().__init__(message)
        self.signal = signal


class ChildFlowError(ErgonError):
    """A child flow started with `invoke` failed; `.error` says why."""

    def __init__(self, message: str, error: FlowError, *, child_id: str | None = None) -> None:
        super().__init__(message)
        self.error = error
        self.child_id = child_id

    def is_retryable(self) -> bool:
        return self.error.retryable


class FlowFailed(ErgonError):
    """Raised by `ergon.run` when the flow ends in failure; `.error` says why."""

    def __init__(self, flow_id: str, error: FlowError) -> None:
        super().__init__(f"flow {flow_id} failed: {error.type}: {error.message}")
        self.flow_id = flow_id
        self.error = error


class FlowCancelledError(ErgonError):
    """Raised by `ergon.run` (and returned as an outcome elsewhere) when a flow was cancelled."""

    def __init__(self, flow_id: str) -> None:
        super().__init__(f"flow {flow_id} was cancelled")
        self.flow_id = flow_id


class LeaseLost(ErgonError):
    """Another executor took this flow over; this one's writes are refused (fenced)."""


class _Interrupt(BaseException):
    """Unwinds a flow body; never meant to be caught by user code."""


class _Suspend(_Interrupt):
    """The flow must stop here and be resumed later (signal, timer, child)."""


class _Fenced(_Interrupt):
    """The store refused a write because this execution no longer holds the flow."""


class _Cancelled(_Interrupt):
    """The flow was cancelled; it stops at this step boundary."""


class _Unavailable(_Interrupt):
    """The store failed (unreachable, timed out): stop without recording an outcome.

    Recording a failure would need the very store that just failed, and the flow did nothing
    wrong; the execution stops and a later one (another worker, after the lease) resumes it.
    """

    def __init__(self, error: StoreError) -> None:
        super().__init__(str(error))
        self.error = error


class _Refused(_Interrupt):
    """The store refused a value of this execution (`StoreValueError`): the flow fails with
    `error`, since running it again would meet the same refusal."""

    def __init__(self, error: FlowError) -> None:
        super().__init__(error.message)
        self.error = error


class _Closing(_Interrupt):
    """The flow body already ended; a straggling branch tried to start new work."""
