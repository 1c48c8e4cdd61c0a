"""The store conformance suite: every backend must behave exactly like this.

These tests talk to the `Store` protocol directly, so a new backend is correct when it passes them
(and the runtime suites, which run on every backend too).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import ergon
from ergon.core.errors import CancelRequestedError, FencedError
from ergon.core.records import FlowEnd, Lease, NewFlow, StepRecord, utcnow
from ergon.core.store import Store
from ergon.storage import FlowState, StepState
from ergon.storage.transitions import TABLE, Transition, table_markdown


def new(flow_id: str, state: FlowState = "pending", **kw: Any) -> NewFlow:
    return NewFlow(id=flow_id, flow="tests:Flow", input='{"x":1}', state=state, **kw)


def step(
    key: str, name: str = "s", state: StepState = "completed", result: str = "1"
) -> StepRecord:
    return StepRecord(key=key, name=name, state=state, result=result)


async def opened_epoch(store: Store, flow_id: str) -> int:
    opened = await store.open_flow(new(flow_id, "running"), owner="me")
    assert opened.lease is not None
    return opened.lease.epoch


# --- flows ---------------------------------------------------------------------------------


async def test_create_flow_is_idempotent(store: Store) -> None:
    flow, created = await store.create_flow(new("a"))
    assert created and flow.state == "pending" and flow.attempts == 1
    again, created_again = await store.create_flow(NewFlow("a", "other:Flow", "{}"))
    assert not created_again and again.flow == "tests:Flow"
    assert flow.created_at.tzinfo is not None


async def test_get_and_list_flows(store: Store) -> None:
    assert await store.get_flow("missing") is None
    for i in range(3):
        await store.create_flow(new(f"f{i}"))
        await asyncio.sleep(0.002)
    await store.create_flow(NewFlow("child", "tests:Child", "{}", parent_id="f0"))
    epoch = await opened_epoch(store, "f1")
    await store.finish_flow("f1", FlowEnd("completed", result="5"), epoch=epoch)
    assert [f.id for f in await store.list_flows()] == ["child", "f2", "f1", "f0"]
    assert [f.id for f in await store.list_flows(state="pending")] == ["child", "f2", "f0"]
    assert [f.id for f in await store.list_flows(flow="tests:Child")] == ["child"]
    assert [f.id for f in await store.list_flows(parent_id="f0")] == ["child"]
    assert [f.id for f in await store.list_flows(limit=2)] == ["child", "f2"]


async def test_open_flow_creates_takes_over_and_returns_ended_flows_unchanged(store: Store) -> None:
    first = await store.open_flow(new("o", "running"), owner="a")
    assert first.flow.state == "running" and first.steps == [] and first.lease is not None
    await store.save_step("o", step("0"), epoch=first.lease.epoch)
    second = await store.open_flow(new("o", "running"), owner="b")
    assert second.lease is not None and second.lease.epoch == first.lease.epoch + 1
    assert second.flow.lease_owner == "b"
    assert [s.key for s in second.steps] == ["0"]
    with pytest.raises(FencedError):
        await store.save_step("o", step("1"), epoch=first.lease.epoch)
    await store.finish_flow("o", FlowEnd("completed", result='"done"'), epoch=second.lease.epoch)
    ended = await store.open_flow(new("o", "running"), owner="c")
    assert ended.lease is None and ended.flow.state == "completed" and ended.flow.result == '"done"'


async def test_open_flow_refuses_another_flow_name(store: Store) -> None:
    await store.create_flow(new("o"))
    with pytest.raises(ergon.FlowMismatchError):
        await store.open_flow(NewFlow("o", "other:Flow", "{}", "running"), owner="a")
    flow = await store.get_flow("o")
    assert flow is not None and flow.state == "pending" and flow.epoch == 0


# --- steps ---------------------------------------------------------------------------------


async def test_steps_round_trip_every_field_in_key_order(store: Store) -> None:
    epoch = await opened_epoch(store, "s")
    now = utcnow().replace(microsecond=123000)
    error = ergon.ErrorInfo("ValueError", "bad", False, "builtins", ("bad",))
    full = StepRecord(
        key="2.1",
        name="charge",
        state="failed",
        kind="step",
        attempts=3,
        result=None,
        error=error,
        started_at=now,
        completed_at=now + timedelta(seconds=1),
        fire_at=now + timedelta(seconds=2),
        flow_attempt=2,
        args_hash="abc",
    )
    for key in ("10", "9", "2", "2.0"):
        await store.save_step("s", step(key), epoch=epoch)
    await store.save_step("s", full, epoch=epoch)
    steps = await store.load_steps("s")
    assert [s.key for s in steps] == ["2", "2.0", "2.1", "9", "10"]
    loaded = steps[2]
    assert loaded == full


async def test_save_step_replaces_the_record_at_its_key(store: Store) -> None:
    epoch = await opened_epoch(store, "s")
    await store.save_step("s", step("0", state="retrying", result=""), epoch=epoch)
    await store.save_step("s", step("0", result='"ok"'), epoch=epoch)
    (only,) = await store.load_steps("s")
    assert (only.state, only.result) == ("completed", '"ok"')


async def test_save_step_is_refused_when_cancel_was_requested(store: Store) -> None:
    epoch = await opened_epoch(store, "s")
    await store.request_cancel("s")
    with pytest.raises(CancelRequestedError):
        await store.save_step("s", step("0"), epoch=epoch)
    assert await store.load_steps("s") == []


async def test_unfenced_save_step_is_accepted(store: Store) -> None:
    await store.create_flow(new("s"))
    await store.save_step("s", step("0"), epoch=None)
    assert len(await store.load_steps("s")) == 1


# --- signals -------------------------------------------------------------------------------


async def test_signals_queue_per_flow_and_name_and_are_consumed_with_a_checkpoint(
    store: Store,
) -> None:
    assert await store.send_signal("g", "approval", '{"n":1}')
    assert await store.send_signal("g", "approval", '{"n":2}', signal_id="id-2")
    assert not await store.send_signal("g", "approval", '{"n":3}', signal_id="id-2")
    assert await store.send_signal("g", "other", '"x"')
    assert await store.send_signal("h", "approval", '"for h"', signal_id="id-2")
    epoch = await opened_epoch(store, "g")
    first = await store.next_signal("g", "approval")
    assert first is not None and first.payload == '{"n":1}'
    assert await store.next_signal("g", "approval") == first  # not consumed by reading
    await store.save_step("g", step("0", result=first.payload), epoch=epoch, consumes=first.seq)
    second = await store.next_signal("g", "approval")
    assert second is not None and second.payload == '{"n":2}' and second.signal_id == "id-2"
    assert await store.next_signal("g", "missing") is None


async def test_refused_checkpoint_does_not_consume_its_signal(store: Store) -> None:
    await store.send_signal("g", "approval", "1")
    epoch = await opened_epoch(store, "g")
    await opened_epoch(store, "g")  # someone else took over
    signal = await store.next_signal("g", "approval")
    assert signal is not None
    with pytest.raises(FencedError):
        await store.save_step("g", step("0"), epoch=epoch, consumes=signal.seq)
    assert await store.next_signal("g", "approval") == signal


async def test_a_signal_wakes_a_suspended_flow(store: Store) -> None:
    epoch = await opened_epoch(store, "w")
    end = FlowEnd("suspended", waiting_for=ergon.SuspendReason("signal", "go"), seen_events=0)
    suspended = await store.finish_flow("w", end, epoch=epoch)
    assert suspended.state == "suspended"
    assert suspended.waiting_for == ergon.SuspendReason("signal", "go")
    await store.send_signal("w", "go", "1")
    woken = await store.get_flow("w")
    assert woken is not None and woken.state == "pending" and woken.events == 1


async def test_an_event_that_raced_the_suspension_makes_it_pending(store: Store) -> None:
    opened = await store.open_flow(new("r", "running"), owner="me")
    assert opened.lease is not None
    await store.send_signal("r", "go", "1")  # arrives while the flow is still running
    end = FlowEnd(
        "suspended", waiting_for=ergon.SuspendReason("signal", "go"), seen_events=opened.flow.events
    )
    status = await store.finish_flow("r", end, epoch=opened.lease.epoch)
    assert status.state == "pending"


# --- ending --------------------------------------------------------------------------------


async def test_finish_flow_records_outcomes_and_is_fenced(store: Store) -> None:
    epoch = await opened_epoch(store, "e")
    with pytest.raises(FencedError):
        await store.finish_flow("e", FlowEnd("completed", result="1"), epoch=epoch - 1)
    error = ergon.ErrorInfo("KeyError", "'x'", True)
    failed = await store.finish_flow("e", FlowEnd("failed", error=error), epoch=epoch)
    assert failed.state == "failed" and failed.error == error and failed.lease_owner is None


async def test_ending_a_child_wakes_its_parent(store: Store) -> None:
    parent_epoch = await opened_epoch(store, "parent")
    await store.finish_flow(
        "parent",
        FlowEnd("suspended", waiting_for=ergon.SuspendReason("child", "parent/0")),
        epoch=parent_epoch,
    )
    await store.create_flow(NewFlow("parent/0", "tests:Child", "{}", parent_id="parent"))
    child = await store.open_flow(NewFlow("parent/0", "tests:Child", "{}", "running"), owner="x")
    assert child.lease is not None
    await store.finish_flow("parent/0", FlowEnd("completed", result="7"), epoch=child.lease.epoch)
    parent = await store.get_flow("parent")
    assert parent is not None and parent.state == "pending" and parent.events == 1


async def test_suspension_with_a_timer_and_retry_attempts(store: Store) -> None:
    epoch = await opened_epoch(store, "t")
    fire_at = utcnow() + timedelta(seconds=30)
    reason = ergon.SuspendReason("retry", None, fire_at)
    status = await store.finish_flow(
        "t", FlowEnd("suspended", waiting_for=reason, wake_at=fire_at, attempts=2), epoch=epoch
    )
    assert (status.state, status.attempts, status.wake_at) == ("suspended", 2, fire_at)
    assert status.waiting_for == reason


# --- cancelling ----------------------------------------------------------------------------


async def state_after_cancel(store: Store, flow_id: str) -> FlowState | None:
    status = await store.request_cancel(flow_id)
    return status.state if status is not None else None


async def test_cancel_pending_suspended_running_and_ended_flows(store: Store) -> None:
    await store.create_flow(new("p"))
    assert await state_after_cancel(store, "p") == "cancelled"
    epoch = await opened_epoch(store, "s")
    await store.finish_flow("s", FlowEnd("suspended"), epoch=epoch)
    assert await state_after_cancel(store, "s") == "cancelled"
    await opened_epoch(store, "r")
    running = await store.request_cancel("r")
    assert running is not None and running.state == "running" and running.cancel_requested
    epoch = await opened_epoch(store, "d")
    await store.finish_flow("d", FlowEnd("completed", result="1"), epoch=epoch)
    assert await state_after_cancel(store, "d") == "completed"
    assert await store.request_cancel("missing") is None


# --- workers -------------------------------------------------------------------------------


async def test_claims_take_runnable_flows_with_a_new_epoch_and_lease(store: Store) -> None:
    for i in range(3):
        await store.create_flow(new(f"c{i}"))
    claimed = await store.claim_flows(owner="w1", version=None, lease_seconds=30, limit=2)
    assert len(claimed.flows) == 2
    for flow, lease in claimed.flows:
        assert flow.state == "running" and flow.lease_owner == "w1"
        assert lease.epoch == flow.epoch == 1 and lease.expires_at is not None
    rest = await store.claim_flows(owner="w2", version=None, lease_seconds=30, limit=5)
    assert [f.id for f, _ in rest.flows] == ["c2"]
    assert (
        await store.claim_flows(owner="w3", version=None, lease_seconds=30, limit=5)
    ).flows == []


async def test_claims_route_versions(store: Store) -> None:
    await store.create_flow(new("plain"))
    await store.create_flow(new("v1", version="1.0"))
    await store.create_flow(new("v2", version="2.0"))
    unversioned = await store.claim_flows(owner="u", version=None, lease_seconds=30, limit=10)
    assert [f.id for f, _ in unversioned.flows] == ["plain"]
    await store.create_flow(new("plain2"))
    v1 = await store.claim_flows(owner="w", version="1.0", lease_seconds=30, limit=10)
    assert sorted(f.id for f, _ in v1.flows) == ["plain2", "v1"]


async def test_claims_take_due_timers_and_report_the_next_one(store: Store) -> None:
    soon = utcnow() + timedelta(seconds=0.2)
    later = utcnow() + timedelta(seconds=60)
    for flow_id, fire_at in (("soon", soon), ("later", later)):
        epoch = await opened_epoch(store, flow_id)
        reason = ergon.SuspendReason("timer", None, fire_at)
        await store.finish_flow(
            flow_id, FlowEnd("suspended", waiting_for=reason, wake_at=fire_at), epoch=epoch
        )
    early = await store.claim_flows(owner="w", version=None, lease_seconds=30, limit=10)
    assert early.flows == [] and early.next_wake_at is not None
    assert abs((early.next_wake_at - soon).total_seconds()) < 0.01
    await asyncio.sleep(0.25)
    due = await store.claim_flows(owner="w", version=None, lease_seconds=30, limit=10)
    assert [f.id for f, _ in due.flows] == ["soon"]


async def test_expired_leases_are_claimed_again_and_the_old_holder_is_fenced(store: Store) -> None:
    await store.create_flow(new("l"))
    ((_, old),) = (
        await store.claim_flows(owner="w1", version=None, lease_seconds=0.1, limit=1)
    ).flows
    assert (
        await store.claim_flows(owner="w2", version=None, lease_seconds=30, limit=1)
    ).flows == []
    await asyncio.sleep(0.15)
    ((flow, new_lease),) = (
        await store.claim_flows(owner="w2", version=None, lease_seconds=30, limit=1)
    ).flows
    assert new_lease.epoch == old.epoch + 1 and flow.lease_owner == "w2"
    with pytest.raises(FencedError):
        await store.save_step("l", step("0"), epoch=old.epoch)
    with pytest.raises(FencedError):
        await store.finish_flow("l", FlowEnd("completed", result="1"), epoch=old.epoch)
    renewal = await store.renew_leases(owner="w1", leases=[old], lease_seconds=30)
    assert renewal.lost == {"l"}
    await store.save_step("l", step("0"), epoch=new_lease.epoch)
    resumed = await store.resume_flow(new_lease)
    assert [s.key for s in resumed.steps] == ["0"]
    with pytest.raises(FencedError):
        await store.resume_flow(old)


async def test_renewals_extend_leases_and_report_cancellation(store: Store) -> None:
    await store.create_flow(new("a"))
    await store.create_flow(new("b"))
    claimed = await store.claim_flows(owner="w", version=None, lease_seconds=0.2, limit=2)
    leases = [lease for _, lease in claimed.flows]
    await store.request_cancel("b")
    renewal = await store.renew_leases(owner="w", leases=leases, lease_seconds=30)
    assert renewal.lost == set() and renewal.cancel_requested == {"b"}
    await asyncio.sleep(0.25)
    assert (await store.claim_flows(owner="x", version=None, lease_seconds=30, limit=2)).flows == []
    flow = await store.get_flow("a")
    assert flow is not None and flow.lease_expires_at is not None
    assert flow.lease_expires_at > utcnow() + timedelta(seconds=20)


async def test_resume_flow_with_a_current_lease(store: Store) -> None:
    await store.create_flow(new("z"))
    ((_, lease),) = (
        await store.claim_flows(owner="w", version=None, lease_seconds=30, limit=1)
    ).flows
    resumed = await store.resume_flow(lease)
    assert resumed.lease == lease and resumed.flow.id == "z"
    with pytest.raises(FencedError):
        await store.resume_flow(Lease("z", lease.epoch + 5, "w"))


# --- notifications -------------------------------------------------------------------------


async def test_state_changes_notify(store: Store) -> None:
    notifier = await store.notifier()
    mark = notifier.mark()
    await store.create_flow(new("n"))
    assert notifier.mark() != mark
    mark = notifier.mark()
    await store.send_signal("n", "go", "1")
    assert notifier.mark() != mark
    mark = notifier.mark()
    waiter = asyncio.create_task(notifier.wait(mark, 5.0))
    await asyncio.sleep(0)
    await store.request_cancel("n")
    await asyncio.wait_for(waiter, 1.0)


async def test_subscribers_hear_which_flow_changed(store: Store) -> None:
    """Postgres and Redis name the changed flow in their notifications (the operator pokes
    that FlowRun); the other stores only wake waiters."""
    notifier = await store.notifier()
    heard: list[str | None] = []
    unsubscribe = notifier.subscribe(heard.append)
    await store.create_flow(new("h"))
    await store.send_signal("h", "go", "1")
    if type(store).__name__ in ("PostgresStore", "RedisStore"):
        async with asyncio.timeout(5.0):
            while heard.count("h") < 2:
                await asyncio.sleep(0.01)
    unsubscribe()
    count = len(heard)
    await store.request_cancel("h")
    await asyncio.sleep(0.1)
    assert len(heard) == count  # unsubscribed


# --- the state table -----------------------------------------------------------------------
# One test per row of `ergon.storage.transitions.TABLE` (the table in docs/architecture.md):
# bring a flow into the row's state, apply its event, check the state it ends in and whether
# the event started a new epoch.

T = "t"


async def reach(store: Store, state: str) -> int | None:
    """Put flow `T` in `state`; the epoch of the execution holding it, if one does."""
    if state == "new":
        return None
    if state in ("pending", "cancelled"):
        await store.create_flow(new(T))
        if state == "cancelled":
            await store.request_cancel(T)
        return None
    if state.startswith("running"):
        await store.create_flow(new(T))
        lease_seconds = 0.05 if state == "running, lease expired" else 30.0
        claimed = await store.claim_flows(
            owner="w0", version=None, lease_seconds=lease_seconds, limit=1
        )
        ((_, lease),) = claimed.flows
        if state == "running, lease expired":
            await asyncio.sleep(0.1)
        if state == "running, cancel requested":
            await store.request_cancel(T)
        return lease.epoch
    epoch = await opened_epoch(store, T)
    if state == "suspended":
        reason = ergon.SuspendReason("signal", "go")
        await store.finish_flow(T, FlowEnd("suspended", waiting_for=reason), epoch=epoch)
    elif state == "suspended, timer due":
        due = utcnow() - timedelta(seconds=1)
        reason = ergon.SuspendReason("timer", None, due)
        end = FlowEnd("suspended", waiting_for=reason, wake_at=due)
        await store.finish_flow(T, end, epoch=epoch)
    elif state == "completed":
        await store.finish_flow(T, FlowEnd("completed", result="1"), epoch=epoch)
    elif state == "failed":
        error = ergon.ErrorInfo("KeyError", "'x'", True)
        await store.finish_flow(T, FlowEnd("failed", error=error), epoch=epoch)
    else:
        raise AssertionError(f"no way to reach state {state!r}")
    return None


async def apply(store: Store, event: str, epoch: int | None) -> None:
    """Apply `event` to flow `T` (`epoch`: of the execution holding it)."""
    if event == "schedule":
        await store.create_flow(new(T))
    elif event == "execute":
        await store.open_flow(new(T, "running"), owner="executor")
    elif event == "claim":
        await store.claim_flows(owner="w1", version=None, lease_seconds=30, limit=10)
    elif event == "signal":
        await store.send_signal(T, "go", "1")
    elif event == "child ends":
        await store.create_flow(NewFlow(f"{T}/0", "tests:Child", "{}", parent_id=T))
        child = await store.open_flow(NewFlow(f"{T}/0", "tests:Child", "{}", "running"), owner="c")
        assert child.lease is not None
        await store.finish_flow(f"{T}/0", FlowEnd("completed", result="1"), epoch=child.lease.epoch)
    elif event == "cancel":
        await store.request_cancel(T)
    else:
        await end_execution(store, event, epoch)


async def end_execution(store: Store, event: str, epoch: int | None) -> None:
    assert epoch is not None, f"{event!r} needs a flow held by an execution"
    flow = await store.get_flow(T)
    assert flow is not None
    if event in ("suspend", "suspend after an event"):
        seen = flow.events
        if event == "suspend after an event":
            await store.send_signal(T, "go", "1")
        reason = ergon.SuspendReason("signal", "go")
        end = FlowEnd("suspended", waiting_for=reason, seen_events=seen)
    elif event == "complete":
        end = FlowEnd("completed", result="1")
    elif event == "fail":
        end = FlowEnd("failed", error=ergon.ErrorInfo("KeyError", "'x'", True))
    elif event == "cancelled":
        end = FlowEnd("cancelled", seen_events=flow.events)
    else:
        raise AssertionError(f"unknown event {event!r}")
    await store.finish_flow(T, end, epoch=epoch)


@pytest.mark.parametrize("row", TABLE, ids=lambda row: f"{row.state}|{row.event}")
async def test_state_table(store: Store, row: Transition) -> None:
    epoch = await reach(store, row.state)
    before = await store.get_flow(T)
    await apply(store, row.event, epoch)
    after = await store.get_flow(T)
    assert after is not None
    state, _, qualifier = row.next.partition(", ")
    assert after.state == state, f"{row}: {after.state}"
    assert after.cancel_requested == (qualifier == "cancel requested"), row
    epoch_before = before.epoch if before is not None else 0
    assert after.epoch == epoch_before + (1 if row.fences else 0), row


def test_the_documented_state_table_is_the_checked_one() -> None:
    """The table in docs/architecture.md is rendered from `TABLE`, the data this suite runs."""
    doc = Path(__file__).parents[2] / "docs" / "architecture.md"
    assert table_markdown() in doc.read_text()
