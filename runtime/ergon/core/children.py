"""Child flows: `await ergon.invoke(ChildFlow(...))` inside a flow body.

`invoke` is the durable operation: it takes a position, replays a child recorded there, and
records how the child ended (or that the parent waits for it). How the child *runs* is the
execution's `ChildRunner`: an `Executor` runs it inline (`executor.run_child_inline`); a
`Worker` queues it for any worker and lets the parent suspend (`queue_child`, here).
"""

from __future__ import annotations

import hashlib
from collections.abc import Coroutine
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from ergon.core import codec, replay
from ergon.core.branches import operation
from ergon.core.context import FlowContext, FlowIdentity, Scope, flow_scope
from ergon.core.definition import FlowModel, entry_point, result_type
from ergon.core.errors import ChildFlowError, ErrorInfo, FailureCode
from ergon.core.identifiers import MAX_LENGTH, check_flow_id
from ergon.core.outcomes import Cancelled, Completed, Failed, Outcome, outcome_of
from ergon.core.records import FlowStatus, NewFlow, StepRecord, SuspendReason, utcnow


def child_flow_id(parent_id: str, key: str) -> str:
    """The id of the child flow invoked at position `key` of flow `parent_id`: `parent/key`.

    When that would pass the id limit (255 characters), the parent part is cut and followed by
    `~` and the SHA-256 of the whole parent id, so the id stays valid, unique to its parent, and
    the same on every replay.
    """
    derived = f"{parent_id}/{key}"
    if len(derived) <= MAX_LENGTH:
        return derived
    digest = hashlib.sha256(parent_id.encode("utf-8", "surrogatepass")).hexdigest()
    room = MAX_LENGTH - len(digest) - len(key) - 2
    if room < 0:  # an absurdly long key: hash it too
        return hashlib.sha256(derived.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{parent_id[:room]}~{digest}/{key}"


def invoke(child: FlowModel, *, flow_id: str | UUID | None = None) -> Coroutine[Any, Any, Any]:
    """Run `child` as a durable child flow and return its result.

    The child's id is derived from this flow's id and the call's position unless `flow_id`
    is given. A failed child raises `ergon.ChildFlowError`.
    """
    scope = flow_scope("ergon.invoke()")
    if not isinstance(child, FlowModel):
        raise TypeError(f"invoke() needs an ergon.Flow instance, got {type(child).__qualname__}")
    entry, _ = entry_point(type(child))
    explicit_id = None if flow_id is None else check_flow_id(flow_id, what="child flow id")
    return _invoke(scope, scope.sequence.next_key(), child, explicit_id, result_type(entry))


@operation
async def _invoke(
    scope: Scope, key: str, child: FlowModel, explicit_id: str | None, result: object
) -> Any:
    ctx = scope.flow
    ctx.stop.check()
    name = child.flow_name()
    record = replay.recorded(ctx, key, "child", name)
    child_id = explicit_id or child_flow_id(ctx.identity.flow_id, key)
    if record is not None:
        if record.state == "completed":
            return codec.load(record.result or "null", result)
        if record.state == "failed" and record.error is not None:
            raise _child_error(child_id, record.error)
        if record.result:
            child_id = codec.load(record.result, str)
    work = ctx.work
    work.begin()
    try:
        with ctx.storing():
            outcome = await ctx.children(ctx.identity, child, child_id)
        began = record.started_at if record is not None else None
        return await _record_outcome(
            ctx, key, name, child_id, outcome, result, record, began or utcnow()
        )
    finally:
        work.end()


async def _record_outcome(
    ctx: FlowContext,
    key: str,
    name: str,
    child_id: str,
    outcome: Outcome,
    result: object,
    record: StepRecord | None,
    began: datetime,
) -> Any:
    match outcome:
        case Completed(value=value):
            text = codec.dump(value, what=f"child flow {child_id} result")
            await ctx.save(_record(ctx, key, name, "completed", result=text, started_at=began))
            return codec.load(text, result)
        case Failed(error=error):
            await ctx.save(_record(ctx, key, name, "failed", error=error, started_at=began))
            raise _child_error(child_id, error)
        case Cancelled():
            error = ErrorInfo(FailureCode.CANCELLED, f"child flow {child_id} was cancelled", False)
            await ctx.save(_record(ctx, key, name, "failed", error=error, started_at=began))
            raise _child_error(child_id, error)
        case _:
            if record is None:
                waiting = codec.dump(child_id, what="")
                await ctx.save(_record(ctx, key, name, "waiting", result=waiting, started_at=began))
            raise ctx.stop.suspend(SuspendReason("child", child_id, outcome.reason.fire_at))


async def queue_child(parent: FlowIdentity, child: FlowModel, child_id: str, /) -> Outcome:
    """The `ChildRunner` of workers: the child is queued (with the parent's version) for any
    worker, and the parent suspends until it ends (its end wakes the parent)."""
    status = await parent.store.get_flow(child_id)
    if status is None:
        new = NewFlow(
            id=child_id,
            flow=child.flow_name(),
            input=codec.dump_input(child),
            state="pending",
            version=parent.version,
            parent_id=parent.flow_id,
        )
        status, _ = await parent.store.create_flow(new)
    return child_mismatch(parent.flow_id, child, status) or outcome_of(status)


def child_mismatch(parent_id: str, child: FlowModel, found: FlowStatus) -> Failed | None:
    """None if `found`, the flow recorded under the child's id, is this parent's child.

    A flow this parent did not start (one scheduled on its own under that id, or another flow's
    child) is never taken for its child: the invocation fails, naming both, instead of handing
    over that flow's result.
    """
    name = child.flow_name()
    if found.flow == name and found.parent_id == parent_id:
        return None
    parent = f"child of flow {found.parent_id!r}" if found.parent_id else "without a parent"
    return Failed(
        ErrorInfo(
            "FlowMismatchError",
            f"flow {found.id!r} is recorded as flow {found.flow!r} {parent}, not as the child "
            f"flow {name!r} of flow {parent_id!r}; a flow this one did not start is never "
            "taken for its child (give the child another id with invoke(..., flow_id=...))",
            False,
        )
    )


def _child_error(child_id: str, error: ErrorInfo) -> ChildFlowError:
    return ChildFlowError(
        f"child flow {child_id} failed: {error.type}: {error.message}", error, child_id=child_id
    )


def _record(
    ctx: FlowContext,
    key: str,
    name: str,
    state: Literal["completed", "failed", "waiting"],
    *,
    result: str | None = None,
    error: ErrorInfo | None = None,
    started_at: datetime,
) -> StepRecord:
    return StepRecord(
        key=key,
        name=name,
        state=state,
        kind="child",
        result=result,
        error=error,
        started_at=started_at,
        completed_at=None if state == "waiting" else utcnow(),
        flow_attempt=ctx.identity.attempt,
    )
