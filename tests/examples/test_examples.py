"""Every example flow runs, replays and does what its docstring says, on every store."""

from __future__ import annotations

import asyncio

import ergon
from examples.approval import ApprovalFlow
from examples.fanout import FanOutFlow
from examples.orders import OrderFlow
from examples.parent import ShipmentFlow
from examples.saga import TripSaga
from examples.settlement import SettlementFlow


async def completes(store: ergon.Store, flow: ergon.Flow, flow_id: str) -> object:
    first = await ergon.Executor(flow_id, flow, store).execute()
    assert isinstance(first, ergon.Completed), first
    assert await ergon.Executor(flow_id, flow, store).execute() == first  # replays
    return first.value


async def test_order(store: ergon.Store) -> None:
    result = await completes(store, OrderFlow(order_id="42", amount=99.5), "o")
    assert result == "order 42: charged 99.50, tracking TRK-42"


async def test_approval_flow_waits_for_the_signal(store: ergon.Store) -> None:
    flow = ApprovalFlow(request_id="7", amount=120)
    first = await ergon.Executor("a", flow, store).execute()
    assert isinstance(first, ergon.Suspended) and first.reason.name == "approval"
    await ergon.Client(store).signal("a", "approval", {"approved": True, "by": "ops"})
    assert await completes(store, flow, "a") == "request 7 approved by ops"


async def test_approval_flow_expires(store: ergon.Store) -> None:
    flow = ApprovalFlow(request_id="8", timeout_hours=0.00003)  # ~0.1 s
    assert await ergon.run(flow, store=store, flow_id="e") == "request 8 expired"


async def test_settlement_timer(store: ergon.Store) -> None:
    flow = SettlementFlow(batch_id="1", delay_seconds=0.2)
    first = await ergon.Executor("s", flow, store).execute()
    assert isinstance(first, ergon.Suspended) and first.reason.kind == "timer"
    assert await ergon.run(flow, store=store, flow_id="s") == "batch 1: settled 3 payments"


async def test_fan_out_dag(store: ergon.Store) -> None:
    result = await completes(store, FanOutFlow(sources=["a", "bb", "ccc"], limit=2), "f")
    assert result == {"a": 1, "bb": 2, "ccc": 3}


async def test_parent_with_children(store: ergon.Store) -> None:
    result = await completes(store, ShipmentFlow(parcels=["p1", "bad2"]), "p")
    assert result == ["label-p1: handed over", "bad2: failed (courier refused bad2)"]
    assert (await ergon.Client(store).status("p/0")).state == "completed"
    assert (await ergon.Client(store).status("p/1")).state == "failed"


async def test_saga_compensates_in_reverse(store: ergon.Store) -> None:
    result = await completes(store, TripSaga(trip_id="t1", fail_at="car"), "t")
    assert result == {
        "status": "compensated",
        "reason": "no car available",
        "undone": ["cancelled hotel-t1", "cancelled flight-t1"],
    }
    assert await completes(store, TripSaga(trip_id="t2"), "t2") == {
        "status": "booked",
        "booked": ["flight-t2", "hotel-t2", "car-t2"],
    }


def test_examples_are_importable_by_path() -> None:
    for path in (
        "examples.orders:OrderFlow",
        "examples.approval:ApprovalFlow",
        "examples.settlement:SettlementFlow",
        "examples.fanout:FanOutFlow",
        "examples.parent:ShipmentFlow",
        "examples.saga:TripSaga",
    ):
        assert issubclass(ergon.load_flow(path), ergon.Flow)
    assert asyncio.iscoroutinefunction(OrderFlow.run)


async def test_batch(store: ergon.Store) -> None:
    from examples.batch import BatchFlow

    result = await completes(store, BatchFlow(items=["a", "b"], seconds_per_item=0), "b")
    assert result == {"processed": 2, "last": "b:ok"}
