"""`ergon.sleep`: durable timers."""

from __future__ import annotations

from collections.abc import Coroutine
from datetime import datetime, timedelta
from typing import Any

from ergon.core import replay
from ergon.core.branches import operation
from ergon.core.context import Scope, flow_scope
from ergon.core.records import StepRecord, StepState, SuspendReason, utcnow
from ergon.core.retry import seconds

SLEEP = "sleep"


def sleep(duration: float | timedelta) -> Coroutine[Any, Any, None]:
    """Wait durably: the wake-up time is recorded once, and the flow suspends until then.

    Executing the flow again before the wake-up time suspends it again with the same time; a
    crash or restart never restarts the full duration.
    """
    scope = flow_scope("ergon.sleep()")
    return _sleep(scope, scope.sequence.next_key(), seconds(duration))


@operation
async def _sleep(scope: Scope, key: str, duration: float) -> None:
    ctx = scope.flow
    ctx.stop.check()
    record = replay.recorded(ctx, key, "sleep", SLEEP)
    if record is not None and record.state == "completed":
        return
    now = utcnow()
    if record is not None and record.fire_at is not None:
        fire_at = record.fire_at
    else:
        fire_at = now + timedelta(seconds=max(duration, 0.0))
    attempt = ctx.identity.attempt
    if fire_at <= now:
        began = record.started_at if record is not None and record.started_at else now
        await ctx.save(_record(key, "completed", fire_at, began, attempt, now))
        return
    if record is None:
        await ctx.save(_record(key, "waiting", fire_at, now, attempt, None))
    raise ctx.stop.suspend(SuspendReason("timer", None, fire_at))


def _record(
    key: str,
    state: StepState,
    fire_at: datetime,
    started: datetime,
    attempt: int,
    done: datetime | None,
) -> StepRecord:
    return StepRecord(
        key=key,
        name=SLEEP,
        state=state,
        kind="sleep",
        started_at=started,
        completed_at=done,
        fire_at=fire_at,
        flow_attempt=attempt,
    )
