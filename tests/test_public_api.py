"""`ergon/__init__.py` is the contract: what it exports, the deprecated names, the codes."""

from __future__ import annotations

import ergon


def test_every_name_in_all_is_exported_and_nothing_is_listed_twice() -> None:
    assert len(ergon.__all__) == len(set(ergon.__all__))
    for name in ergon.__all__:
        assert getattr(ergon, name) is not None, name


def test_deprecated_names_are_the_new_classes() -> None:
    assert ergon.FlowError is ergon.ErrorInfo
    assert ergon.FlowFailed is ergon.FlowFailedError
    assert ergon.LeaseLost is ergon.LeaseLostError
    assert ergon.SignalTimeout is ergon.SignalTimeoutError
    assert issubclass(ergon.SignalTimeoutError, TimeoutError)


def test_every_exception_is_an_ergon_error_and_says_whether_it_is_retryable() -> None:
    errors = [
        value
        for value in vars(ergon).values()
        if isinstance(value, type) and issubclass(value, BaseException)
    ]
    assert errors and all(issubclass(e, ergon.ErgonError) for e in errors)
    assert not ergon.NonDeterminismError.retryable and ergon.FlowNotFoundError.retryable
    child = ergon.ChildFlowError("child failed", ergon.ErrorInfo("X", "m", retryable=False))
    assert child.retryable is False
    assert ergon.StepError("X", "m", retryable=False).retryable is False


def test_failure_codes_read_the_names_of_earlier_releases() -> None:
    assert ergon.FailureCode.of("InvalidFlow") is ergon.FailureCode.INVALID_FLOW
    assert ergon.FailureCode.of("UnknownFlow") is ergon.FailureCode.INVALID_FLOW
    assert ergon.FailureCode.of("ValueError") is None
    assert ergon.FailureCode.INVALID_INPUT.cannot_run
    assert not ergon.FailureCode.STORE_REFUSED.cannot_run
    assert ergon.StoreValueError.CODE == "StoreRefused"


def test_exit_codes_are_named() -> None:
    assert [int(c) for c in ergon.ExitCode] == [0, 1, 2, 3, 130]
    assert ergon.ExitCode.describe(3) == "exit code 3 (CANCELLED)"
    assert ergon.ExitCode.describe(137) == "exit code 137"


def test_dag_returns_the_public_dag() -> None:
    assert isinstance(ergon.dag(limit=2), ergon.Dag)
