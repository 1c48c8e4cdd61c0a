"""`ergon signal` and `ergon flows list|show|cancel|prune`: managing flows from the shell.

Ids are never cut: `flows list` prints plain aligned columns whenever stdout is not a terminal
(or with `--wide`), and `flows show` prints its timeline the same way.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated

import typer
from rich.table import Table

from ergon.cli.common import (
    STORE_HELP,
    fail,
    out,
    parse_json,
    run_async,
    say,
    store_url,
    with_store,
)
from ergon.core.records import FLOW_STATES, FlowStatus, StepRecord, utcnow
from ergon.core.redaction import redact
from ergon.core.store import Store
from ergon.distributed.client import Client

flows_app = typer.Typer(help="Inspect and cancel flows.", no_args_is_help=True)

WAITS = ("sleep", "signal", "child")


def signal(
    flow_id: Annotated[str, typer.Argument(help="The flow to signal.")],
    name: Annotated[str, typer.Argument(help="The signal's name.")],
    payload: Annotated[str, typer.Option(help="The payload as JSON.")] = "null",
    signal_id: Annotated[
        str | None, typer.Option(help="Idempotency id: a second send with it is a no-op.")
    ] = None,
    allow_missing: Annotated[
        bool,
        typer.Option(
            "--allow-missing",
            help="Queue the signal even if no flow has this id yet (it waits for the flow).",
        ),
    ] = False,
    store: Annotated[str | None, typer.Option(help=STORE_HELP)] = None,
) -> None:
    """Send a signal to a flow.

    Exits with 2, sending nothing, when the flow does not exist (unless --allow-missing) or has
    already ended (no wait could ever receive the signal).
    """
    value = parse_json(payload, "--payload")

    async def go(active: Store) -> tuple[FlowStatus | None, bool]:
        status = await active.get_flow(flow_id)
        if (status is None and not allow_missing) or (status is not None and status.is_terminal):
            return status, False
        return status, await Client(active).signal(flow_id, name, value, signal_id=signal_id)

    status, sent = run_async(lambda: with_store(store_url(store), go))
    if status is None and not allow_missing:
        fail(
            f"no flow {flow_id!r} exists yet; the signal was not sent (start the flow first, "
            "or pass --allow-missing to queue it for a flow that will have this id)"
        )
    if status is not None and status.is_terminal:
        fail(
            f"flow {flow_id!r} has already ended ({status.state}); the signal was not sent, "
            "as no wait could receive it"
        )
    if not sent:
        out.print(
            f"signal {name!r} with id {signal_id!r} was already delivered to {flow_id}",
            soft_wrap=True,
        )
        return
    out.print(f"sent {name!r} to {flow_id}", soft_wrap=True)
    if status is None:
        say(("note:", "yellow"), f" no flow {flow_id!r} exists yet; the signal waits for it")


def list_flows(
    state: Annotated[
        str | None, typer.Option(help=f"Only flows in this state ({', '.join(FLOW_STATES)}).")
    ] = None,
    flow: Annotated[str | None, typer.Option(help="Only flows of this flow name.")] = None,
    origin_prefix: Annotated[
        str | None,
        typer.Option(help="Only flows whose origin starts with this (e.g. flowrun:prod/)."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
    wide: Annotated[
        bool, typer.Option("--wide", help="Plain columns with full ids, even on a terminal.")
    ] = False,
    store: Annotated[str | None, typer.Option(help=STORE_HELP)] = None,
) -> None:
    """List flows, newest first. Ids are never cut when stdout is not a terminal."""
    if state is not None and state not in FLOW_STATES:
        fail(f"unknown state {state!r}; use one of {', '.join(FLOW_STATES)}")

    async def go(active: Store) -> list[FlowStatus]:
        return await Client(active).list_flows(
            state=state, flow=flow, origin_prefix=origin_prefix, limit=limit
        )

    rows = run_async(lambda: with_store(store_url(store), go))
    if as_json:
        for row in rows:
            print(json.dumps(_status_json(row)))
        return
    header = ["ID", "FLOW", "STATE", "ATTEMPTS", "WAITING", "UPDATED"]
    cells = [
        [row.id, row.flow, _state(row), str(row.attempts), _waiting(row), _time(row.updated_at)]
        for row in rows
    ]
    if wide or not sys.stdout.isatty():
        _print_columns(header, cells)
        return
    widths = [
        max([len(title), *(len(cell[i]) for cell in cells)]) for i, title in enumerate(header)
    ]
    room = out.width - sum(widths[1:]) - (3 * len(header) + 1)  # borders and padding
    longest = widths[0]
    widths[0] = max(min(longest, 36), min(longest, room))  # only ids give way, down to a uuid
    table = Table(*header, caption="--wide prints full ids" if widths[0] < longest else None)
    for column, width in zip(table.columns, widths, strict=True):
        column.no_wrap = True
        column.min_width = column.max_width = width
    table.columns[0].overflow = "ellipsis"
    for cell in cells:
        table.add_row(*(_printable(c) for c in cell))
    out.print(table)


def show(
    flow_id: Annotated[str, typer.Argument()],
    store: Annotated[str | None, typer.Option(help=STORE_HELP)] = None,
) -> None:
    """Show a flow and its timeline: each step, sleep, signal wait and child, with its start,
    duration (all attempts and backoffs of a step; how long a wait waited), and attempts."""

    async def go(active: Store) -> tuple[FlowStatus, list[StepRecord]]:
        client = Client(active)
        return await client.status(flow_id), await client.steps(flow_id)

    status, steps = run_async(lambda: with_store(store_url(store), go))
    now = utcnow()
    line = _line
    line(f"{status.id}  {status.flow}  {_state(status)}")
    line(
        f"attempts {status.attempts}  version {status.version or '-'}  "
        f"created {_time(status.created_at)}  updated {_time(status.updated_at)}  "
        f"took {_span(status.created_at, status.updated_at if status.is_terminal else None, now)}"
    )
    if status.waiting_for is not None and status.state in ("suspended", "pending"):
        line(f"waiting for {_waiting(status)}")
    if status.origin:
        line(f"origin {status.origin}")
    if status.lease_owner:
        line(f"held by {status.lease_owner}")
    if status.error is not None:
        line(f"error {status.error.type}: {redact(status.error.message)}")
    if status.result is not None:
        line(f"result {status.result}")
    if not steps:
        line("no recorded operations")
        return
    line("")
    day = status.created_at.astimezone().date()
    header = ["POSITION", "KIND", "NAME", "STATE", "STARTED", "DURATION", "ATTEMPTS", "DETAIL"]
    cells = [
        [
            step.key,
            step.kind,
            step.name,
            step.state,
            _clock(step.started_at, day),
            _step_span(step, now),
            str(step.attempts),
            _detail(step, day),
        ]
        for step in steps
    ]
    _print_columns(header, cells)


def cancel(
    flow_id: Annotated[str, typer.Argument()],
    store: Annotated[str | None, typer.Option(help=STORE_HELP)] = None,
) -> None:
    """Cancel a flow (and its unfinished children)."""

    async def go(active: Store) -> FlowStatus:
        return await Client(active).cancel(flow_id)

    status = run_async(lambda: with_store(store_url(store), go))
    if status.state == "cancelled":
        _line(f"cancelled {flow_id}")
    elif status.is_terminal:
        _line(f"{flow_id} had already ended ({status.state})")
    else:
        _line(f"cancellation requested: {flow_id} stops at its next step")


def prune(
    finished_before: Annotated[
        str,
        typer.Option(
            "--finished-before",
            help="Only flows that ended longer ago than this: a number and a unit, "
            "d (days), h (hours), m (minutes) or s (seconds), e.g. 7d, 12h, 30m.",
        ),
    ],
    origin_prefix: Annotated[
        str | None,
        typer.Option(help="Only flows whose origin starts with this (e.g. flowrun:prod/)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be deleted; delete nothing.")
    ] = False,
    store: Annotated[str | None, typer.Option(help=STORE_HELP)] = None,
) -> None:
    """Delete the records of flows that ended (completed, failed, cancelled) longer ago than
    --finished-before, with their steps and signals. Flows that have not ended are never
    touched, nor children whose parent has not ended."""
    age = parse_duration(finished_before)
    if age is None:
        fail(
            f"--finished-before {finished_before!r} is not a duration: use a number and a unit, "
            "d, h, m or s (e.g. 7d, 12h, 30m)"
        )
    cutoff = utcnow() - age

    async def go(active: Store) -> list[str]:
        return await Client(active).prune(
            finished_before=cutoff, origin_prefix=origin_prefix, dry_run=dry_run
        )

    pruned = run_async(lambda: with_store(store_url(store), go))
    verb = "would delete" if dry_run else "deleted"
    for flow_id in pruned:
        _line(f"{verb} {_printable(flow_id)}")
    noun = "flow" if len(pruned) == 1 else "flows"
    _line(f"{verb} {len(pruned)} {noun} that ended before {_time(cutoff)}")


_DURATION = re.compile(r"\s*(\d+)\s*([dhms])\s*")
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> timedelta | None:
    """`7d`, `12h`, `30m`, `45s` as a timedelta (`0s`: everything that ended until now); None
    for anything else. Public for the operator's retention setting, which reads the same form."""
    match = _DURATION.fullmatch(text)
    if match is None:
        return None
    return timedelta(seconds=int(match[1]) * _UNITS[match[2]])


FLOWS_COMMANDS: dict[str, Callable[..., None]] = {
    "list": list_flows,
    "show": show,
    "cancel": cancel,
    "prune": prune,
}


# --- formatting ----------------------------------------------------------------------------


def _line(text: str) -> None:
    out.print(text, soft_wrap=True)


def _print_columns(header: list[str], rows: list[list[str]]) -> None:
    """Aligned columns separated by two spaces; nothing is cut or wrapped."""
    table = [header, *([_printable(cell) for cell in row] for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        padded = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        _line("  ".join([*padded, row[-1]]).rstrip())


def _printable(text: str) -> str:
    """One line per row: control characters (a newline in an id or a message) escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _state(status: FlowStatus) -> str:
    return f"{status.state} (cancelling)" if status.cancel_requested else status.state


def _waiting(status: FlowStatus) -> str:
    reason = status.waiting_for
    if reason is None or status.state not in ("suspended", "pending"):
        return "-"
    parts: list[str] = [reason.kind]
    if reason.name:
        parts.append(reason.name)
    if reason.fire_at:
        parts.append(_time(reason.fire_at))
    return " ".join(parts)


def _time(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _clock(value: datetime | None, day: object) -> str:
    """A local time to the millisecond, with its date when not the flow's first day."""
    if value is None:
        return "-"
    local = value.astimezone()
    text = local.strftime("%H:%M:%S.%f")[:-3]
    return text if local.date() == day else f"{local.strftime('%Y-%m-%d')} {text}"


def _step_span(step: StepRecord, now: datetime) -> str:
    """From the first attempt's start to the end (a wait still open: to now)."""
    if step.started_at is None:
        return "-"
    open_ = step.completed_at is None and step.state in ("waiting", "retrying")
    return _span(step.started_at, None if open_ else step.completed_at, now)


def _span(start: datetime, end: datetime | None, now: datetime) -> str:
    if end is None:
        return f"{_seconds((now - start).total_seconds())} so far"
    return _seconds((end - start).total_seconds())


def _seconds(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _detail(step: StepRecord, day: object) -> str:
    if step.error is not None:
        return f"{step.error.type}: {redact(step.error.message)}"
    if step.state == "retrying" and step.fire_at is not None:
        return f"attempt {step.attempts} failed; next at {_clock(step.fire_at, day)}"
    if step.state == "waiting" and step.fire_at is not None:
        return f"waiting until {_clock(step.fire_at, day)}"
    if step.state == "waiting":
        return "waiting"
    if step.kind in WAITS and step.state == "completed":
        return "waited"
    return ""


def _status_json(status: FlowStatus) -> dict[str, object]:
    return {
        "id": status.id,
        "flow": status.flow,
        "state": status.state,
        "attempts": status.attempts,
        "version": status.version,
        "origin": status.origin,
        "created_at": status.created_at.isoformat(),
        "updated_at": status.updated_at.isoformat(),
    }
