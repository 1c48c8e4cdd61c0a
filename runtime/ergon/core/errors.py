"""Every error Ergon raises, and the codes every layer shares, in one place.

Internal module: import these names from `ergon`.

Exceptions users see and may catch all derive from `ErgonError`; where a builtin base fits, they
derive from it too (in brackets), so `except ValueError:` and the like keep working:

    ErgonError
    ├── FlowDefinitionError [TypeError]     a Flow class or step declared so Ergon cannot run it
    ├── FlowContextError [RuntimeError]     a flow-only operation used outside a running flow
    ├── FlowNotFoundError [LookupError]     no flow with that id in the store
    ├── FlowInputError [ValueError]         input that does not validate against the Flow
    ├── FlowMismatchError [ValueError]      an id recorded for another flow class (or parent)
    ├── IdentifierError [ValueError]        an id or signal name not every store can hold *
    ├── FlowLoadError [ImportError]         `module:QualName` that cannot be imported
    ├── StoreError                          the store cannot be opened or reached, or refused
    │   ├── StoreValueError [ValueError]    a value the store refuses (too big, NUL, ...) *
    │   ├── StoreUrlError [ValueError]      a URL `open_store` cannot open
    │   ├── FencedError                     a write with a stale epoch (store implementers)
    │   └── CancelRequestedError            a checkpoint refused: cancellation requested
    ├── StepError                           a recorded step failure whose class is not rebuilt
    ├── NonDeterminismError                 the flow called another step at a recorded position *
    ├── SignalPayloadError                  a payload that does not fit the awaited type *
    ├── SignalTimeoutError [TimeoutError]   no signal before the wait's durable timeout *
    ├── ChildFlowError                      a child flow failed; `.error` says why
    ├── FlowFailedError                     `ergon.run`: the flow failed; `.error` says why
    ├── FlowCancelledError                  `ergon.run`: the flow was cancelled
    └── LeaseLostError                      another executor took the flow over; stop

    * never retried (`retryable = False`)

Deprecated aliases, kept for one release: `FlowFailed`, `LeaseLost`, `SignalTimeout` (the classes
above under their old names) and `FlowError` (= `ErrorInfo`).

`ErrorInfo` is not an exception but the record of why a flow, a step or a child flow failed, as
stored and as returned in `Failed(error=...)`. Its `type` is the failing exception's class name,
or a `FailureCode` when Ergon itself ended the flow (an unknown flow class, a store refusal, the
operator's deadline). Whether an error is worth retrying is decided by one rule,
`ergon.core.retry.is_retryable`; Ergon's own errors say it with their `retryable` attribute.

Control-flow signals the runtime uses to unwind a flow body (`_Interrupt` and its subclasses)
derive from `BaseException` on purpose: a flow that wraps its steps in `except Exception:` must
not swallow a suspension, a lost lease or a cancellation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum, StrEnum


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """Why a flow (or a step, or a child flow) failed, as recorded in the store. A record, not an
    exception: `ergon.FlowFailedError` and `ergon.ChildFlowError` carry one as `.error`.

    `type` is the exception's class name (or a `FailureCode`), `message` its text, `retryable`
    whether a retry could help. `module` and `args` are kept so the original exception class
    can be rebuilt on replay when that is possible.
    """

    type: str
    message: str
    retryable: bool = True
    module: str | None = None
    args: tuple[object, ...] = ()


FlowError = ErrorInfo
"""Deprecated alias of `ErrorInfo` (the name said "exception" but it is a record); kept for one
release."""


class FailureCode(StrEnum):
    """The `ErrorInfo.type` of a flow that Ergon itself failed, rather than an exception raised by
    the flow's code. One vocabulary for the worker, `ergon run-flow`, the CLI and the operator
    (which shows the code as the reason of a FlowRun's `Failed` condition).
    """

    INVALID_FLOW = "InvalidFlow"  # the flow's class is not known here or cannot be imported
    INVALID_INPUT = "InvalidInput"  # the recorded input no longer validates against the class
    STORE_REFUSED = "StoreRefused"  # the store refused a value of the flow (`StoreValueError`)
    CANCELLED = "Cancelled"  # a child flow was cancelled (the parent's `ChildFlowError.error`)
    DEADLINE_EXCEEDED = "DeadlineExceeded"  # operator: the FlowRun's timeoutSeconds ran out
    RETRIES_EXHAUSTED = "RetriesExhausted"  # operator: every worker pod ended before the flow
    UNKNOWN = "Error"  # a flow recorded as failed without an error

    @classmethod
    def of(cls, type: str) -> FailureCode | None:
        """The code an `ErrorInfo.type` stands for, None for an exception's class name. Reads
        the names of earlier releases too: `UnknownFlow` (the worker's) is `INVALID_FLOW`."""
        if type in _LEGACY_CODES:
            return _LEGACY_CODES[type]
        try:
            return cls(type)
        except ValueError:
            return None

    @property
    def cannot_run(self) -> bool:
        """The flow cannot run with this code or input: no retry or other process will help."""
        return self in (FailureCode.INVALID_FLOW, FailureCode.INVALID_INPUT)


_LEGACY_CODES = {"UnknownFlow": FailureCode.INVALID_FLOW}


class ExitCode(IntEnum):
    """Exit codes of the `ergon` commands; the operator reads them from its worker pods."""

    OK = 0  # done (`ergon run-flow`: also a suspended flow, which is resumed later)
    FLOW_FAILED = 1  # the flow failed (`ergon run`: or was cancelled)
    USAGE = 2  # the command could not do its work; the reason is one line on stderr
    CANCELLED = 3  # `ergon run-flow`: the flow was cancelled
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)

    @classmethod
    def describe(cls, code: int) -> str:
        """`code` for messages: `exit code 1 (FLOW_FAILED)`, or just the number if unnamed."""
        try:
            return f"exit code {code} ({cls(code).name})"
        except ValueError:
            return f"exit code {code}"


class ErgonError(Exception):
    """Base class of the errors Ergon raises to users.

    `retryable` is whether running the failed work again could help (`retry.is_retryable`).
    """

    retryable: bool = True


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
    CODE = FailureCode.STORE_REFUSED  # the type of the flow's error
    LIMIT = 600

    def __init__(self, message: str) -> None:
        super().__init__(printable(message, self.LIMIT))

    def failure(self, what: str) -> ErrorInfo:
        """The flow's error (not retryable) when the store refused `what` ("the checkpoint of
        step 'charge' (position 3)")."""
        return ErrorInfo(self.CODE, f"the store refused {printable(what, 200)}: {self}", False)


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

    @classmethod
    def stale(cls, flow_id: str, epoch: int | None) -> FencedError:
        """The write (or read of a lease) under `epoch` came after a newer executor took over."""
        if epoch is None:
            return cls(f"flow {flow_id} is held by another executor")
        return cls(f"flow {flow_id} is held by another executor (epoch {epoch} is stale)")

    @classmethod
    def missing(cls, flow_id: str) -> FencedError:
        """The flow an executor writes to is not (or no longer) in the store."""
        return cls(f"flow {flow_id} does not exist")


class CancelRequestedError(StoreError):
    """A step checkpoint was refused because the flow's cancellation was requested."""

    @classmethod
    def requested(cls, flow_id: str) -> CancelRequestedError:
        return cls(f"flow {flow_id} is being cancelled")


class StepError(ErgonError):
    """A recorded step failure replayed when the original exception class cannot be rebuilt."""

    def __init__(self, type: str, message: str, retryable: bool = True) -> None:
        super().__init__(f"{type}: {message}")
        self.type = type
        self.message = message
        self.retryable = retryable


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


class SignalTimeoutError(ErgonError, TimeoutError):
    """No signal arrived before the wait's durable timeout."""

    retryable = False

    def __init__(self, message: str, *, signal: str | None = None) -> None:
        super().__init__(message)
        self.signal = signal


class ChildFlowError(ErgonError):
    """A child flow started with `invoke` failed; `.error` says why (and whether retrying the
    parent could help)."""

    def __init__(self, message: str, error: ErrorInfo, *, child_id: str | None = None) -> None:
        super().__init__(message)
        self.error = error
        self.child_id = child_id
        self.retryable = error.retryable


class FlowFailedError(ErgonError):
    """Raised by `ergon.run` when the flow ends in failure; `.error` says why."""

    def __init__(self, flow_id: str, error: ErrorInfo) -> None:
        super().__init__(f"flow {flow_id} failed: {error.type}: {error.message}")
        self.flow_id = flow_id
        self.error = error


class FlowCancelledError(ErgonError):
    """Raised by `ergon.run` (and returned as an outcome elsewhere) when a flow was cancelled."""

    def __init__(self, flow_id: str) -> None:
        super().__init__(f"flow {flow_id} was cancelled")
        self.flow_id = flow_id


class LeaseLostError(ErgonError):
    """Another executor took this flow over; this one's writes are refused (fenced)."""


# Deprecated names, kept for one release.
FlowFailed = FlowFailedError
LeaseLost = LeaseLostError
SignalTimeout = SignalTimeoutError


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

    def __init__(self, error: ErrorInfo) -> None:
        super().__init__(error.message)
        self.error = error


class _Closing(_Interrupt):
    """The flow body already ended; a straggling branch tried to start new work."""
