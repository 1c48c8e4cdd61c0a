"""`ergon.Client` on every store: listing, scheduling by name, ending flows from outside an
executor (what the operator and `ergon run-flow` do), keyword-only options."""

from __future__ import annotations

import pytest

import ergon


class Double(ergon.Flow):
    n: int

    @ergon.flow
    async def run(self) -> int:
        return await self.twice()

    @ergon.step
    async def twice(self) -> int:
        return self.n * 2


class Waits(ergon.Flow):
    @ergon.flow
    async def run(self) -> str:
        return str(await ergon.wait_for_signal("go"))


async def test_list_flows_filters_and_list_is_a_deprecated_alias(store: ergon.Store) -> None:
    client = ergon.Client(store)
    first = await client.schedule(Double(n=1), flow_id="first")
    await client.schedule(Waits(), flow_id="second")
    assert {f.id for f in await client.list_flows()} == {"first", "second"}
    assert [f.id for f in await client.list_flows(flow=Double.flow_name())] == [first]
    assert await client.list_flows(state="completed") == []
    with pytest.warns(DeprecationWarning, match="list_flows"):
        listed = await client.list(flow=Waits.flow_name())
    assert [f.id for f in listed] == ["second"]
    with pytest.raises(ValueError, match="unknown flow state"):
        await client.list_flows(state="sleeping")  # type: ignore[arg-type]


async def test_a_flow_scheduled_by_name_runs_on_a_worker(store: ergon.Store) -> None:
    client = ergon.Client(store)
    known = await client.schedule_by_name(Double.flow_name(), {"n": 21}, flow_id="by-name")
    unknown = await client.schedule_by_name("nowhere:Missing", {}, version=None)
    handle = ergon.Worker(store, name="w", flows=[Double], poll_interval=0.05).start()
    try:
        assert await client.wait(known, timeout=10) == ergon.Completed(42)
        outcome = await client.wait(unknown, timeout=10)
    finally:
        await handle.shutdown(timeout=5)
    assert isinstance(outcome, ergon.Failed)
    assert outcome.error.type == ergon.FailureCode.INVALID_FLOW and not outcome.error.retryable


async def test_fail_flow_and_forced_cancel_end_a_flow_from_outside(store: ergon.Store) -> None:
    client = ergon.Client(store)
    waiting = await client.schedule(Waits(), flow_id="waiting")
    await ergon.Executor(waiting, Waits(), store).execute()  # suspends on the signal
    error = ergon.ErrorInfo(ergon.FailureCode.DEADLINE_EXCEEDED, "too late", False)
    failed = await client.fail_flow(waiting, error=error, owner="test")
    assert failed.state == "failed" and failed.error == error
    again = await client.fail_flow(waiting, error=ergon.ErrorInfo("Other", "ignored", False))
    assert again.error == error  # an ended flow is returned unchanged

    cancelled = await client.schedule(Waits(), flow_id="cancelled")
    assert (await client.cancel(cancelled, force=True)).state == "cancelled"
    assert await client.wait(cancelled, timeout=5) == ergon.Cancelled()
    with pytest.raises(ergon.FlowNotFoundError):
        await client.fail_flow("missing", error=error)


async def test_optional_parameters_are_keyword_only(store: ergon.Store) -> None:
    client = ergon.Client(store)
    with pytest.raises(TypeError):
        await client.schedule(Double(n=1), "id")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        await client.signal("id", "go", None, "signal-id")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        await ergon.Scheduler(store).schedule(Double(n=1), "id")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        ergon.Worker(store, "w", [Double])  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        await ergon.run(Double(n=1), store)  # type: ignore[call-arg]
    assert await client.signal("id", "go", None, signal_id="s") is True
