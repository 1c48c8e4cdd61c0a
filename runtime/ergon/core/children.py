"""Child flows: `await self.invoke(ChildFlow(...))` inside a flow body."""

from __future__ import annotations

import hashlib
import typing
from collections.abc import Coroutine
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ergon.core import codec, replay
from ergon.core.branches import operation
from ergon.core.context import FlowContext, Scope, flow_scope
from ergon.core.errors import ChildFlowError, FlowError
from ergon.core.identifiers import MAX_LENGTH, check_flow_id
from ergon.core.outcomes import Cancelled, Completed, Failed, Outcome, SuspendReason
from ergon.core.records import FlowStatus, NewFlow, StepRecord, utcnow

if TYPE_CHECKING:
    from ergon.core.flow import Flow


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


def invoke(child: Flow, *, flow_id: str | None = None) -> Coroutine[Any, Any, Any]:
    from ergon.core.flow import Flow, entry_point

    scope = flow_scope("Flow.invoke()")
    if not isinstance(child, Flow):
        raise TypeError(f"invoke() needs an ergon.Flow instance, got {type(child).__qualname__}")
    entry_point(type(child))
    if flow_id is not None:
        check_flow_id(flow_id, what="child flow id")
    return _invoke(scope, scope.sequence.next_key(), child, flow_id)


@operation
async def _invoke(scope: Scope, key: str, child: Flow, explicit_id: str | None) -> Any:
    from ergon.core.flow import entry_point

    ctx = scope.flow
    ctx.check()
    name = child.flow_name()
    result_type = _result_type(entry_point(type(child))[0])
    record = replay.recorded(ctx, key, "child", name)
    child_id = explicit_id or child_flow_id(ctx.flow_id, key)
    if record is not None:
        if record.state == "completed":
            ctx.steps_replayed += 1
            return codec.load(record.result or "null", result_type)
        if record.state == "failed" and record.error is not None:
            ctx.steps_replayed += 1
            raise _child_error(child_id, record.error)
        if record.result:
            child_id = codec.load(record.result, str)
    ctx.active += 1
    try:
        with ctx.storing():
            outcome = await _child_outcome(ctx, child, child_id)
        began = record.started_at if record is not None else None
        return await _record_outcome(
            ctx, key, name, child_id, outcome, result_type, record, began or utcnow()
        )
    finally:
        ctx.active -= 1


async def _child_outcome(ctx: FlowContext, child: Flow, child_id: str) -> Outcome:
    """Under an Executor the child runs inline; under workers it is queued."""
    if ctx.inline_children:
        from ergon.core.executor import Executor

        existing = await ctx.store.get_flow(child_id)
        if existing is not None and (mismatch := _mismatch(ctx, child, existing)) is not None:
            return mismatch
        executor = Executor(child_id, child, ctx.store, parent_id=ctx.flow_id, version=ctx.version)
        return await executor.execute()
    return await _queued_outcome(ctx, child, child_id)


async def _record_outcome(
    ctx: FlowContext,
    key: str,
    name: str,
    child_id: str,
    outcome: Outcome,
    result_type: object,
    record: StepRecord | None,
    began: datetime,
) -> Any:
    match outcome:
        case Completed(value=value):
            text = codec.dump(value, what=f"child flow {child_id} result")
            await ctx.save(_record(ctx, key, name, "completed", result=text, started_at=began))
            ctx.steps_run += 1
            return codec.load(text, result_type)
        case Failed(error=error):
            await ctx.save(_record(ctx, key, name, "failed", error=error, started_at=began))
            raise _child_error(child_id, error)
        case Cancelled():
            error = FlowError("Cancelled", f"child flow {child_id} was cancelled", False)
            await ctx.save(_record(ctx, key, name, "failed", error=error, started_at=began))
            raise _child_error(child_id, error)
        case _:
            if record is None:
                await ctx.save(
                    _record(
                        ctx,
                        key,
                        name,
                        "waiting",
                        result=codec.dump(child_id, what=""),
                        started_at=began,
                    )
                )
            fire_at = outcome.reason.fire_at
            raise ctx.suspend(SuspendReason("child", child_id, fire_at))


async def _queued_outcome(ctx: FlowContext, child: Flow, child_id: str) -> Outcome:
    """Under workers the child is queued (with the parent's version) and the parent waits."""
    status = await ctx.store.get_flow(child_id)
    if status is None:
        new = NewFlow(
            id=child_id,
            flow=child.flow_name(),
            input=codec.dump_input(child),
            state="pending",
            version=ctx.version,
            parent_id=ctx.flow_id,
        )
        status, _ = await ctx.store.create_flow(new)
    return _mismatch(ctx, child, status) or outcome_of(status)


def _mismatch(ctx: FlowContext, child: Flow, status: FlowStatus) -> Failed | None:
    """A flow found under the child's id that this parent did not start (one scheduled on its
    own under that id, or another flow's child) is never taken for its child: the invocation
    fails, naming both, instead of handing over that flow's result."""
    name = child.flow_name()
    if status.flow == name and status.parent_id == ctx.flow_id:
        return None
    parent = f"child of flow {status.parent_id!r}" if status.parent_id else "without a parent"
    return Failed(
        FlowError(
            "FlowMismatchError",
            f"flow {status.id!r} is recorded as flow {status.flow!r} {parent}, not as the child "
            f"flow {name!r} of flow {ctx.flow_id!r}; a flow this one did not start is never "
            "taken for its child (give the child another id with invoke(..., flow_id=...))",
            False,
        )
    )


def outcome_of(status: FlowStatus) -> Outcome:
    """The outcome a recorded flow stands at (suspended for flows that have not ended)."""
    if status.state == "completed":
        return Completed(codec.load(status.result or "null"))
    if status.state == "failed":
        return Failed(status.error or FlowError("Error", "flow failed", False))
    if status.state == "cancelled":
        return Cancelled()
    return _waiting(status)


def _waiting(status: FlowStatus) -> Outcome:
    from ergon.core.outcomes import Suspended

    return Suspended(status.waiting_for or SuspendReason("child", status.id, None))


def _child_error(child_id: str, error: FlowError) -> ChildFlowError:
    return ChildFlowError(
        f"child flow {child_id} failed: {error.type}: {error.message}", error, child_id=child_id
    )


def _result_type(entry: Any) -> object:
    try:
        return typing.get_type_hints(entry).get("return", Any)
    except Exception:
        return Any


def _record(
    ctx: FlowContext,
    key: str,
    name: str,
    state: typing.Literal["completed", "failed", "waiting"],
    *,
    result: str | None = None,
    error: FlowError | None = None,
    started_at: datetime,
) -> StepRecord:
    now = utcnow()
    return StepRecord(
        key=key,
        name=name,
        state=state,
        kind="child",
        result=result,
        error=error,
        started_at=started_at,
        completed_at=None if state == "waiting" else now,
        flow_attempt=ctx.attempt,
    )
