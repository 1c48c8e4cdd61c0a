"""Matching a durable operation against what was recorded at its position."""

from __future__ import annotations

import logging

from ergon.core.context import FlowContext
from ergon.core.errors import NonDeterminismError
from ergon.core.records import StepKind, StepRecord

log = logging.getLogger("ergon.replay")


def recorded(ctx: FlowContext, key: str, kind: StepKind, name: str) -> StepRecord | None:
    """The record at `key`, checked to be the same operation as the one now called.

    A different operation at a recorded position means the code changed under a running flow;
    handing one step's result to another would corrupt it, so the flow fails with
    `NonDeterminismError`, which no `except` in the flow can turn into success.
    """
    record = ctx.history.lookup(key)
    if record is not None:
        check_operation(ctx, record, kind, name)
    return record


def check_operation(ctx: FlowContext, record: StepRecord, kind: StepKind, name: str) -> None:
    """`recorded()`'s check, for a caller that looked the record up itself."""
    if record.name != name or record.kind != kind:
        flow_id = ctx.identity.flow_id
        error = NonDeterminismError(
            f"non-deterministic flow {flow_id}: position {record.key} recorded {record.kind} "
            f"{record.name!r} but the flow now calls {kind} {name!r} there. The flow's code "
            "changed in a way that does not match its recorded history; deploy the change under "
            "a new version (Scheduler.with_version) so running flows finish on the old code."
        )
        ctx.stop.fail(error)
        raise error


def check_arguments(ctx: FlowContext, record: StepRecord, digest: str | None) -> None:
    """Arguments that differ on replay are reported, not enforced (see docs: "Replay")."""
    if record.args_hash and digest and record.args_hash != digest:
        log.warning(
            "flow %s: step %r at position %s is replayed with different arguments than it was "
            "recorded with; returning the recorded result",
            ctx.identity.flow_id,
            record.name,
            record.key,
        )
