"""Declaring flows: entry points, names, input validation, definition errors."""

from __future__ import annotations

import pydantic
import pytest

import ergon


class Plain(ergon.Flow):
    x: int

    @ergon.flow
    async def run(self) -> int:
        return self.x


class Named(ergon.Flow, name="orders.Named"):
    @ergon.flow
    async def go(self) -> str:
        return "named"


class Child(Plain):
    """Inherits the entry point."""


def test_flow_name_defaults_to_module_and_qualname() -> None:
    assert Plain.flow_name() == f"{__name__}:Plain"
    assert Named.flow_name() == "orders.Named"
    assert Child.flow_name() == f"{__name__}:Child"


def test_flow_input_is_an_immutable_pydantic_model() -> None:
    flow = Plain(x=3)
    with pytest.raises(pydantic.ValidationError):
        flow.x = 4
    with pytest.raises(pydantic.ValidationError, match="x"):
        Plain(x="not a number")  # type: ignore[arg-type]


async def test_inherited_entry_point_runs(store: ergon.Store) -> None:
    assert await ergon.Executor("c", Child(x=5), store).execute() == ergon.Completed(5)


def test_two_entry_points_are_refused_at_class_definition() -> None:
    with pytest.raises(ergon.FlowDefinitionError, match="exactly one entry point"):

        class Twice(ergon.Flow):
            @ergon.flow
            async def a(self) -> None: ...

            @ergon.flow
            async def b(self) -> None: ...


async def test_missing_entry_point_is_a_clear_error(store: ergon.Store) -> None:
    class Nothing(ergon.Flow):
        pass

    with pytest.raises(ergon.FlowDefinitionError, match=r"has no @ergon\.flow method"):
        ergon.Executor("n", Nothing(), store)


def test_sync_entry_point_is_refused() -> None:
    with pytest.raises(ergon.FlowDefinitionError, match="must be async"):

        class Sync(ergon.Flow):
            @ergon.flow  # type: ignore[arg-type]
            def run(self) -> None: ...


def test_entry_point_with_arguments_is_refused() -> None:
    with pytest.raises(ergon.FlowDefinitionError, match="no arguments besides self"):

        class Args(ergon.Flow):
            @ergon.flow  # type: ignore[arg-type]
            async def run(self, x: int) -> None: ...


def test_bad_decorator_arguments_are_refused() -> None:
    with pytest.raises(ergon.FlowDefinitionError, match="RetryPolicy"):
        ergon.step(retry=3)  # type: ignore[call-overload]
    with pytest.raises(ergon.FlowDefinitionError, match="positive"):
        ergon.step(timeout=0)
    with pytest.raises(ergon.FlowDefinitionError, match="RetryPolicy"):
        ergon.flow(retry="often")  # type: ignore[call-overload]


def test_load_flow_by_path() -> None:
    assert ergon.load_flow(f"{__name__}:Plain") is Plain
    with pytest.raises(ergon.FlowLoadError, match="must look like"):
        ergon.load_flow("no_colon")
    with pytest.raises(ergon.FlowLoadError, match="cannot import module"):
        ergon.load_flow("not_a_module_anywhere:Flow")
    with pytest.raises(ergon.FlowLoadError, match="has no attribute"):
        ergon.load_flow(f"{__name__}:Missing")
    with pytest.raises(ergon.FlowLoadError, match=r"not an ergon\.Flow"):
        ergon.load_flow("pytest:fixture")


def test_retry_policy_presets_and_delays() -> None:
    assert ergon.RetryPolicy.NONE.max_attempts == 1
    std = ergon.RetryPolicy.STANDARD
    assert (std.max_attempts, std.initial_delay, std.max_delay, std.backoff_multiplier) == (
        3,
        1.0,
        30.0,
        2.0,
    )
    agg = ergon.RetryPolicy.AGGRESSIVE
    assert (agg.max_attempts, agg.initial_delay, agg.max_delay, agg.backoff_multiplier) == (
        10,
        0.1,
        10.0,
        1.5,
    )
    assert ergon.RetryPolicy.with_max_attempts(5) == ergon.RetryPolicy(5, 1.0, 30.0, 2.0)
    assert [std.delay_after(n) for n in (1, 2, 3, 10)] == [1.0, 2.0, 4.0, 30.0]
    from datetime import timedelta

    assert ergon.RetryPolicy(2, timedelta(milliseconds=500)).initial_delay == 0.5
    with pytest.raises(ValueError, match="at least 1"):
        ergon.RetryPolicy(0)
