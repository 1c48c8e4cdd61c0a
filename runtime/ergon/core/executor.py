"""`ergon.Executor`: run one flow until it completes, fails or suspends."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from datetime import timedelta
from typing import Any
from uuid import UUID

from ergon.core import branches, codec
from ergon.core.children import child_mismatch
from ergon.core.context import (
    ChildRunner,
    FlowContext,
    FlowIdentity,
    History,
    Scope,
    Sequence,
    enter,
    internal,
    leave,
)
from ergon.core.definition import FlowModel, FlowOptions, entry_point, result_type
from ergon.core.errors import (
    FencedError,
    LeaseLostError,
    StoreValueError,
    _Fenced,
    _Interrupt,
    _Refused,
    _Unavailable,
)
from ergon.core.fencing import LeaseDeadline
from ergon.core.identifiers import check_flow_id
from ergon.core.outcomes import Cancelled, Completed, Failed, Outcome, Suspended, outcome_of
from ergon.core.records import FlowEnd, Lease, NewFlow, OpenedFlow, SuspendReason, utcnow
from ergon.core.retry import is_retryable
from ergon.core.store import ExecutionStore

log = logging.getLogger("ergon.executor")

_UNSET: Any = object()


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Executor:
    """Runs one flow until it completes, fails or suspends, checkpointing every step.

    Executing the same `flow_id` again resumes it: recorded steps return their results without
    running; a flow that already ended returns its recorded outcome without running any code.
    Starting an executor takes the flow over (fencing out any earlier executor of it).
    """

    def __init__(
        self,
        flow_id: str | UUID,
        flow: FlowModel,
        store: ExecutionStore,
        *,
        lease: Lease | None = None,
        parent_id: str | None = None,
        version: str | None = None,
        owner: str | None = None,
        children: ChildRunner | None = None,
        flow_retries: bool = False,
        deadline: LeaseDeadline | None = None,
    ) -> None:
        """`children` is how the flow's child flows run: by default inline, each to its end or
        suspension inside this execution (`run_child_inline`); a `Worker` passes
        `ergon.core.children.queue_child`, which queues them for any worker."""
        if not isinstance(flow, FlowModel):
            raise TypeError(f"Executor needs an ergon.Flow instance, got {type(flow).__qualname__}")
        # The input as JSON, made once: checked here, recorded by `_open`, compared on resume.
        self._input: str | None = None
        if lease is None:  # the flow may be new: refuse what not every store can hold
            self.flow_id = check_flow_id(flow_id)
            self._input = codec.dump_input(flow)
        else:  # a claimed flow runs under the id its store holds
            self.flow_id = str(flow_id)
        self.flow = flow
        self.store = store
        self.lease = lease
        self.parent_id = parent_id
        self.version = version
        self.owner = owner or default_owner()
        self.children: ChildRunner = children or run_child_inline
        self.flow_retries = flow_retries
        self.deadline = deadline
        self.entry, self.options = entry_point(type(flow))
        self._context: FlowContext | None = None
        self._cancel_requested = False

    @property
    def epoch(self) -> int | None:
        """The epoch this execution's writes carry; None until it has opened the flow."""
        return None if self._context is None else self._context.identity.epoch

    def request_cancel(self) -> None:
        """The flow was asked to cancel (`Client.cancel`): it stops at its next durable
        operation and ends cancelled."""
        self._cancel_requested = True
        if self._context is not None:
            self._context.stop.request_cancel()

    async def execute(self) -> Outcome:
        """Run (or resume) the flow; returns `Completed`, `Failed`, `Suspended` or `Cancelled`.

        Raises `ergon.LeaseLostError` if another executor took the flow over meanwhile.
        """
        branches.install(asyncio.get_running_loop())
        with internal():  # an inline child's store calls run inside its parent's flow body
            opened = await self._open()
        status = opened.flow
        if status.is_terminal:
            return outcome_of(status)
        if opened.lease is None:
            raise LeaseLostError(f"flow {self.flow_id} is held by another executor")
        flow = self._recorded_input(status.input)
        identity = FlowIdentity(
            self.flow_id, self.store, opened.lease.epoch, status.attempts, status.version
        )
        ctx = FlowContext(
            identity,
            History(opened.steps, status.events),
            children=self.children,
            deadline=self.deadline,
        )
        if self._cancel_requested:
            ctx.stop.request_cancel()
        self._context = ctx
        if self.deadline is not None and self.deadline.lapsed:  # e.g. stalled since the claim
            raise LeaseLostError(self._lapsed())
        if status.cancel_requested:
            return await self._end(ctx, FlowEnd("cancelled", seen_events=status.events))
        value, error = await self._run_body(ctx, flow)
        ctx.stop.close()
        await ctx.work.settle()
        return await self._conclude(ctx, value, error)

    def _lapsed(self) -> str:
        overdue = self.deadline.overdue() if self.deadline is not None else 0.0
        why = (
            "its lease was lost"
            if overdue == float("inf")
            else f"its lease may have lapsed {overdue:.1f} s ago (no renewal confirmed in time)"
        )
        return f"flow {self.flow_id}: {why}; stopped without running more of it"

    def _taken_over(self) -> LeaseLostError:
        return LeaseLostError(f"flow {self.flow_id} was taken over by another executor")

    async def _open(self) -> OpenedFlow:
        if self.lease is not None:
            return await self.store.resume_flow(self.lease)
        assert self._input is not None  # made in __init__ whenever there is no lease
        new = NewFlow(
            id=self.flow_id,
            flow=type(self.flow).flow_name(),
            input=self._input,
            state="running",
            version=self.version,
            parent_id=self.parent_id,
        )
        return await self.store.open_flow(new, owner=self.owner)

    def _recorded_input(self, recorded: str) -> FlowModel:
        """A flow resumes with the input it was started with, whatever instance was passed."""
        if recorded == (self._input or self.flow.model_dump_json()):
            return self.flow
        flow = type(self.flow).model_validate_json(recorded)
        if flow != self.flow:
            log.warning("flow %s resumes with its recorded input, not the one passed", self.flow_id)
        return flow

    async def _run_body(
        self, ctx: FlowContext, flow: FlowModel
    ) -> tuple[Any, BaseException | None]:
        token = enter(Scope(ctx, Sequence()))
        try:
            return await self.entry(flow), None
        except _Interrupt:
            return _UNSET, None
        except Exception as exc:
            return _UNSET, exc
        finally:
            leave(token)

    async def _conclude(self, ctx: FlowContext, value: Any, error: BaseException | None) -> Outcome:
        stop, seen = ctx.stop, ctx.history.events_seen
        interrupted = stop.interrupted
        if isinstance(interrupted, _Unavailable):
            raise interrupted.error
        if isinstance(interrupted, _Fenced):
            if self.deadline is not None and self.deadline.lapsed:
                raise LeaseLostError(self._lapsed())
            raise self._taken_over()
        if isinstance(interrupted, _Refused):  # never retried: it would be refused again
            return await self._end(ctx, FlowEnd("failed", error=interrupted.error))
        if interrupted is not None or stop.cancel_requested:
            return await self._end(ctx, FlowEnd("cancelled", seen_events=seen))
        if stop.fatal is not None:
            error = stop.fatal
        elif stop.suspension is not None:
            end = FlowEnd(
                "suspended", waiting_for=stop.suspension, wake_at=stop.wake_at, seen_events=seen
            )
            return await self._end(ctx, end)
        if error is None:
            try:
                text = codec.dump(
                    value, what=f"flow {type(self.flow).flow_name()} returned a value"
                )
            except TypeError as exc:
                error = exc
            else:
                ended = await self._end(ctx, FlowEnd("completed", result=text))
                if isinstance(ended, Failed):  # the store refused the result
                    return ended
                return Completed(codec.load(text, result_type(self.entry)))
        return await self._fail(ctx, error, self.options)

    async def _fail(self, ctx: FlowContext, error: BaseException, options: FlowOptions) -> Outcome:
        recorded = codec.error_from_exception(error)
        attempt = ctx.identity.attempt
        if self.flow_retries and is_retryable(error) and options.retry.allows_another(attempt):
            fire_at = utcnow() + timedelta(seconds=options.retry.delay_after(attempt))
            reason = SuspendReason("retry", None, fire_at)
            end = FlowEnd(
                "suspended",
                error=recorded,
                waiting_for=reason,
                wake_at=fire_at,
                seen_events=ctx.history.events_seen,
                attempts=attempt + 1,
            )
            return await self._end(ctx, end)
        return await self._end(ctx, FlowEnd("failed", error=recorded))

    async def _end(self, ctx: FlowContext, end: FlowEnd) -> Outcome:
        try:
            with internal():
                epoch = ctx.identity.epoch
                status = await self.store.finish_flow(self.flow_id, end, epoch=epoch)
        except FencedError:
            raise self._taken_over() from None
        except StoreValueError as exc:  # e.g. a result over the backend's size limit
            if end.error is not None and end.error.type == StoreValueError.CODE:
                raise  # not even that failure can be recorded: the caller sees why
            refused = exc.failure(f"the end of flow {self.flow_id} ({end.state})")
            return await self._end(ctx, FlowEnd("failed", error=refused))
        if end.state == "failed" and end.error is not None:
            return Failed(end.error)
        if end.state == "cancelled":
            return Cancelled()
        if end.waiting_for is not None:
            return Suspended(end.waiting_for)
        return outcome_of(status)


async def run_child_inline(parent: FlowIdentity, child: FlowModel, child_id: str, /) -> Outcome:
    """The `ChildRunner` of an `Executor`: the child runs inside the parent's execution, to its
    end or its suspension (the parent then suspends too, and resuming it resumes the child)."""
    found = await parent.store.get_flow(child_id)
    if found is not None and (mismatch := child_mismatch(parent.flow_id, child, found)) is not None:
        return mismatch
    child_executor = Executor(
        child_id, child, parent.store, parent_id=parent.flow_id, version=parent.version
    )
    return await child_executor.execute()
