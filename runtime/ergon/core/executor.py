"""`ergon.Executor`: run one flow until it completes, fails or suspends."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import typing
from datetime import timedelta
from typing import Any
from uuid import UUID

from ergon.core import branches, codec
from ergon.core.children import outcome_of
from ergon.core.context import FlowContext, Scope, Sequence, enter, internal, leave
from ergon.core.errors import (
    FencedError,
    LeaseLost,
    StoreValueError,
    _Fenced,
    _Interrupt,
    _Refused,
    _Unavailable,
)
from ergon.core.fencing import LeaseDeadline
from ergon.core.flow import Flow, FlowOptions, entry_point
from ergon.core.identifiers import check_flow_id
from ergon.core.outcomes import Cancelled, Completed, Failed, Outcome, Suspended, SuspendReason
from ergon.core.records import FlowEnd, Lease, NewFlow, OpenedFlow, utcnow
from ergon.core.retry import is_retryable
from ergon.core.store import Store

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
        flow: Flow,
        store: Store,
        *,
        lease: Lease | None = None,
        parent_id: str | None = None,
        version: str | None = None,
        owner: str | None = None,
        inline_children: bool = True,
        flow_retries: bool = False,
        deadline: LeaseDeadline | None = None,
    ) -> None:
        if not isinstance(flow, Flow):
            raise TypeError(f"Executor needs an ergon.Flow instance, got {type(flow).__qualname__}")
        if lease is None:  # the flow may be new: refuse what not every store can hold
            self.flow_id = check_flow_id(flow_id)
            codec.dump_input(flow)
        else:  # a claimed flow runs under the id its store holds
            self.flow_id = str(flow_id)
        self.flow = flow
        self.store = store
        self.lease = lease
        self.parent_id = parent_id
        self.version = version
        self.owner = owner or default_owner()
        self.inline_children = inline_children
        self.flow_retries = flow_retries
        self.deadline = deadline
        self.entry, self.options = entry_point(type(flow))
        self.context: FlowContext | None = None

    async def execute(self) -> Outcome:
        """Run (or resume) the flow; returns `Completed`, `Failed`, `Suspended` or `Cancelled`.

        Raises `ergon.LeaseLost` if another executor took the flow over meanwhile.
        """
        branches.install(asyncio.get_running_loop())
        with internal():  # an inline child's store calls run inside its parent's flow body
            opened = await self._open()
        status = opened.flow
        if status.is_terminal:
            return outcome_of(status)
        if opened.lease is None:
            raise LeaseLost(f"flow {self.flow_id} is held by another executor")
        flow = self._recorded_input(status.input)
        ctx = FlowContext(
            flow_id=self.flow_id,
            store=self.store,
            epoch=opened.lease.epoch,
            attempt=status.attempts,
            steps=opened.steps,
            events_seen=status.events,
            version=status.version,
            inline_children=self.inline_children,
            deadline=self.deadline,
        )
        self.context = ctx
        if self.deadline is not None and self.deadline.lapsed:  # e.g. stalled since the claim
            raise LeaseLost(self._lapsed())
        if status.cancel_requested:
            return await self._end(ctx, FlowEnd("cancelled", seen_events=ctx.events_seen))
        value, error = await self._run_body(ctx, flow)
        await _settle(ctx)
        return await self._conclude(ctx, value, error)

    def _lapsed(self) -> str:
        overdue = self.deadline.overdue() if self.deadline is not None else 0.0
        why = (
            "its lease was lost"
            if overdue == float("inf")
            else f"its lease may have lapsed {overdue:.1f} s ago (no renewal confirmed in time)"
        )
        return f"flow {self.flow_id}: {why}; stopped without running more of it"

    async def _open(self) -> OpenedFlow:
        if self.lease is not None:
            return await self.store.resume_flow(self.lease)
        new = NewFlow(
            id=self.flow_id,
            flow=type(self.flow).flow_name(),
            input=self.flow.model_dump_json(),
            state="running",
            version=self.version,
            parent_id=self.parent_id,
        )
        return await self.store.open_flow(new, owner=self.owner)

    def _recorded_input(self, recorded: str) -> Flow:
        """A flow resumes with the input it was started with, whatever instance was passed."""
        if recorded == self.flow.model_dump_json():
            return self.flow
        flow = type(self.flow).model_validate_json(recorded)
        if flow != self.flow:
            log.warning("flow %s resumes with its recorded input, not the one passed", self.flow_id)
        return flow

    async def _run_body(self, ctx: FlowContext, flow: Flow) -> tuple[Any, BaseException | None]:
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
        if isinstance(ctx.interrupt, _Unavailable):
            raise ctx.interrupt.error
        if isinstance(ctx.interrupt, _Fenced):
            if ctx.deadline is not None and ctx.deadline.lapsed:
                raise LeaseLost(self._lapsed())
            raise LeaseLost(f"flow {self.flow_id} was taken over by another executor")
        if isinstance(ctx.interrupt, _Refused):  # never retried: it would be refused again
            return await self._end(ctx, FlowEnd("failed", error=ctx.interrupt.error))
        if ctx.interrupt is not None or ctx.cancel_requested:
            return await self._end(ctx, FlowEnd("cancelled", seen_events=ctx.events_seen))
        if ctx.fatal is not None:
            error = ctx.fatal
        elif ctx.suspension is not None:
            end = FlowEnd(
                "suspended",
                waiting_for=ctx.suspension,
                wake_at=ctx.wake_at,
                seen_events=ctx.events_seen,
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
                return Completed(codec.load(text, _return_type(self.entry)))
        return await self._fail(ctx, error, self.options)

    async def _fail(self, ctx: FlowContext, error: BaseException, options: FlowOptions) -> Outcome:
        recorded = codec.error_from_exception(error)
        if self.flow_retries and is_retryable(error) and options.retry.allows_another(ctx.attempt):
            fire_at = utcnow() + timedelta(seconds=options.retry.delay_after(ctx.attempt))
            reason = SuspendReason("retry", None, fire_at)
            end = FlowEnd(
                "suspended",
                error=recorded,
                waiting_for=reason,
                wake_at=fire_at,
                seen_events=ctx.events_seen,
                attempts=ctx.attempt + 1,
            )
            return await self._end(ctx, end)
        return await self._end(ctx, FlowEnd("failed", error=recorded))

    async def _end(self, ctx: FlowContext, end: FlowEnd) -> Outcome:
        try:
            with internal():
                status = await self.store.finish_flow(self.flow_id, end, epoch=ctx.epoch)
        except FencedError:
            raise LeaseLost(f"flow {self.flow_id} was taken over by another executor") from None
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


async def _settle(ctx: FlowContext) -> None:
    """Let steps still running in spawned tasks finish and checkpoint; then stop the rest.

    A branch that reaches its next durable operation after the flow body ended stops there.
    """
    ctx.closing = True
    while True:
        pending = [task for task in ctx.tasks if not task.done()]
        if not pending:
            return
        if ctx.active == 0:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            return
        await asyncio.wait(pending, timeout=0.05, return_when=asyncio.FIRST_COMPLETED)


def _return_type(entry: Any) -> object:
    try:
        return typing.get_type_hints(entry).get("return", Any)
    except Exception:
        return Any
