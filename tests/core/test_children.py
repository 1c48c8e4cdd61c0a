"""Child flows under an Executor: inline, durable, with deterministic ids."""

from __future__ import annotations

from collections import Counter

import pytest

import ergon

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
        return "child said " + await self.invoke(Waiter(), flow_id="custom-child")


async def test_suspended_child_suspends_the_parent_and_resumes_with_it(store: ergon.Store) -> None:
    first = await ergon.Executor("wp", WaitingParent(), store).execute()
    assert first == ergon.Suspended(ergon.SuspendReason("child", "custom-child", None))
    assert (await ergon.Client(store).status("custom-child")).state == "suspended"
    await ergon.Client(store).signal("custom-child", "go", "yes")
    assert await ergon.Executor("wp", WaitingParent(), store).execute() == ergon.Completed(
        "child said yes"
    )


def _new(flow_id: str):  # type: ignore[no-untyped-def]
    from ergon.core.records import NewFlow

    return NewFlow(
        id=flow_id, flow=Parent.flow_name(), input=Parent(items=["a", "b"]).model_dump_json()
    )
