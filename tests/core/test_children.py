"""Child flows under an Executor: inline, durable, with deterministic ids."""

from __future__ import annotations

from collections import Counter

import pytest

import ergon
from ergon.storage import NewFlow

CALLS: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()


class Ship(ergon.Flow):
    item: str
    fail: bool = False

    @ergon.flow
    async def run(self) -> str:
        label = await self.label()
        if self.fail:
            raise ValueError(f"cannot ship {self.item}")
        return label

    @ergon.step
    async def label(self) -> str:
        CALLS[f"label:{self.item}"] += 1
        return f"label-{self.item}"


class Parent(ergon.Flow):
    items: list[str]
    fail_on: str | None = None

    @ergon.flow
    async def run(self) -> list[str]:
        labels = []
        for item in self.items:
            try:
                labels.append(await self.invoke(Ship(item=item, fail=item == self.fail_on)))
            except ergon.ChildFlowError as exc:
                labels.append(f"failed:{exc.error.type}:{exc.error.message}")
        await self.done()
        return labels

    @ergon.step
    async def done(self) -> None:
        CALLS["done"] += 1


async def test_children_run_inline_with_deterministic_ids(store: ergon.Store) -> None:
    outcome = await ergon.Executor("p", Parent(items=["a", "b"]), store).execute()
    assert outcome == ergon.Completed(["label-a", "label-b"])
    client = ergon.Client(store)
    child = await client.status("p/0")
    assert child.flow == Ship.flow_name() and child.parent_id == "p" and child.state == "completed"
    assert ergon.child_flow_id("p", "1") == "p/1"
    assert (await client.status("p/1")).state == "completed"
    steps = await client.steps("p")
    assert [(s.kind, s.name, s.state) for s in steps] == [
        ("child", Ship.flow_name(), "completed"),
        ("child", Ship.flow_name(), "completed"),
        ("step", "done", "completed"),
    ]


async def test_failed_child_raises_child_flow_error_with_its_error(store: ergon.Store) -> None:
    outcome = await ergon.Executor("p", Parent(items=["a", "b"], fail_on="b"), store).execute()
    assert outcome == ergon.Completed(["label-a", "failed:ValueError:cannot ship b"])
    child = await ergon.Client(store).status("p/1")
    assert child.state == "failed" and child.error is not None
    assert child.error.type == "ValueError"


async def test_replay_does_not_rerun_child_steps(store: ergon.Store) -> None:
    from ergon.core.records import FlowEnd

    await ergon.Executor("p", Parent(items=["a", "b"]), store).execute()
    # Pretend the parent crashed before its last checkpoint: drop it and re-open the flow.
    opened = await store.open_flow(_new("p2"), owner="t")
    assert opened.lease is not None
    for record in (await store.load_steps("p"))[:2]:
        await store.save_step("p2", record, epoch=opened.lease.epoch)
    await store.finish_flow("p2", FlowEnd("suspended"), epoch=opened.lease.epoch)
    CALLS.clear()
    assert await ergon.Executor("p2", Parent(items=["a", "b"]), store).execute() == ergon.Completed(
        ["label-a", "label-b"]
    )
    assert Counter(done=1) == CALLS


class Waiter(ergon.Flow):
    @ergon.flow
    async def run(self) -> str:
        return str(await ergon.wait_for_signal("go"))


class WaitingParent(ergon.Flow):
    @ergon.flow
    async def run(self) -> str:
        said: str = await self.invoke(Waiter(), flow_id="custom-child")
        return "child said " + said


async def test_suspended_child_suspends_the_parent_and_resumes_with_it(store: ergon.Store) -> None:
    first = await ergon.Executor("wp", WaitingParent(), store).execute()
    assert first == ergon.Suspended(ergon.SuspendReason("child", "custom-child", None))
    assert (await ergon.Client(store).status("custom-child")).state == "suspended"
    await ergon.Client(store).signal("custom-child", "go", "yes")
    assert await ergon.Executor("wp", WaitingParent(), store).execute() == ergon.Completed(
        "child said yes"
    )


def _new(flow_id: str) -> NewFlow:
    return NewFlow(
        id=flow_id, flow=Parent.flow_name(), input=Parent(items=["a", "b"]).model_dump_json()
    )


class FreeParent(ergon.Flow):
    """Invokes its child through the free function, not the method."""

    @ergon.flow
    async def run(self) -> str:
        label: str = await ergon.invoke(Ship(item="x"), flow_id="free-child")
        return label


async def test_ergon_invoke_is_the_same_operation_as_flow_invoke(store: ergon.Store) -> None:
    assert await ergon.Executor("fp", FreeParent(), store).execute() == ergon.Completed("label-x")
    child = await ergon.Client(store).status("free-child")
    assert child.parent_id == "fp" and child.state == "completed"
    [record] = await ergon.Client(store).steps("fp")
    assert (record.kind, record.name, record.state) == ("child", Ship.flow_name(), "completed")


async def test_ergon_invoke_refuses_misuse() -> None:
    with pytest.raises(ergon.FlowContextError, match=r"ergon\.invoke\(\) was called outside"):
        _ = ergon.invoke(Ship(item="x"))


class InvokesNonFlow(ergon.Flow):
    @ergon.flow
    async def run(self) -> None:
        await ergon.invoke("not a flow")  # type: ignore[arg-type]


async def test_ergon_invoke_needs_a_flow(store: ergon.Store) -> None:
    outcome = await ergon.Executor("nf", InvokesNonFlow(), store).execute()
    assert isinstance(outcome, ergon.Failed)
    assert (
        outcome.error.type == "TypeError"
        and "needs an ergon.Flow instance" in outcome.error.message
    )


async def test_queued_children_suspend_the_parent_until_they_end(store: ergon.Store) -> None:
    """The child-running policy is injected: with `queue_child` (a Worker's) the child is only
    queued, and the parent suspends until it has ended."""
    from ergon.core.children import queue_child

    first = await ergon.Executor("qp", FreeParent(), store, children=queue_child).execute()
    assert first == ergon.Suspended(ergon.SuspendReason("child", "free-child", None))
    child = await ergon.Client(store).status("free-child")
    assert child.state == "pending" and child.parent_id == "qp" and CALLS["label:x"] == 0
    assert await ergon.Executor("free-child", Ship(item="x"), store).execute() == ergon.Completed(
        "label-x"
    )
    again = await ergon.Executor("qp", FreeParent(), store, children=queue_child).execute()
    assert again == ergon.Completed("label-x") and CALLS["label:x"] == 1
