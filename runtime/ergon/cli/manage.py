"""`ergon signal` and `ergon flows list|show|cancel`: managing flows from the shell."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from ergon.cli.common import STORE_HELP, fail, out, parse_json, run_async, store_url, with_store
from ergon.core.records import FLOW_STATES, FlowStatus, StepRecord
from ergon.core.store import Store
from ergon.distributed.client import Client

flows_app = typer.Typer(help="Inspect and cancel flows.", no_args_is_help=True)


def signal(
    flow_id: Annotated[str, typer.Argument(help="The flow to signal.")],
    name: Annotated[str, typer.Argument(help="The signal's name.")],
    payload: Annotated[str, typer.Option(help="The payload as JSON.")] = "null",
    signal_id: Annotated[
        str | None, typer.Option(help="Idempotency id: a second send with it is a no-op.")
    ] = None,
    store: Annotated[str | None, typer.Option(help=STORE_HELP)] = None,
) -> None:
    """Send a signal to a flow."""
    value = parse_json(payload, "--payload")

    async def go(active: Store) -> tuple[bool, bool]:
        exists = await active.get_flow(flow_id) is not None
        return await Client(active).signal(flow_id, name, value, signal_id), exists

    sent, exists = run_async(lambda: with_store(store_url(store), go))
    if not sent:
        out.print(f"signal {name!r} with id {signal_id!r} was already delivered to {flow_id}")
        return
    out.print(f"sent {name!r} to {flow_id}")
    if not exists:
        out.print(f"[yellow]note:[/] no flow {flow_id!r} exists yet; the signal waits for it")


@flows_app.command("list")
def list_flows(
    state: Annotated[
        str | None, typer.Option(help=f"Only flows in this state ({', '.join(FLOW_STATES)}).")
    ] = None,
    flow: Annotated[str | None, typer.Option(help="Only flows of this flow name.")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
    store: Annotated[str | None, typer.Option(help=STORE_HELP)] = None,
) -> None:
    """List flows, newest first."""
    if state is not None and state not in FLOW_STATES:
        fail(f"unknown state {state!r}; use one of {', '.join(FLOW_STATES)}")

    async def go(active: Store) -> list[FlowStatus]:
        return await Client(active).list(state=state, flow=flow, limit=limit)

    rows = run_async(lambda: with_store(store_url(store), go))
    if as_json:
        for row in rows:
            print(json.dumps(_status_json(row)))
        return
    table = Table("ID", "FLOW", "STATE", "ATTEMPTS", "WAITING", "UPDATED")
    for row in rows:
        table.add_row(
            row.id, row.flow, _state(row), str(row.attempts), _waiting(row), _time(row.updated_at)
        )
    out.print(table)


@flows_app.command("show")
def show(
    flow_id: Annotated[str, typer.Argument()],
    store: Annotated[str | None, typer.Option(help=STORE_HELP)] = None,
) -> None:
    """Show a flow and its step timeline (position, name, state, attempts, duration)."""

    async def go(active: Store) -> tuple[FlowStatus, list[StepRecord]]:
        client = Client(active)
        return await client.status(flow_id), await client.steps(flow_id)

    status, steps = run_async(lambda: with_store(store_url(store), go))
    out.print(f"[bold]{status.id}[/]  {status.flow}  [bold]{_state(status)}[/]", soft_wrap=True)
    out.print(
        f"attempts {status.attempts}  version {status.version or '-'}  "
        f"created {_time(status.created_at)}  updated {_time(status.updated_at)}"
    )
    if status.waiting_for is not None:
        out.print(f"waiting for {_waiting(status)}")
    if status.lease_owner:
        out.print(f"held by {status.lease_owner}")
    if status.error is not None:
        out.print(f"[red]error {status.error.type}: {status.error.message}[/]", soft_wrap=True)
    if status.result is not None:
        out.print(f"result {status.result}", soft_wrap=True)
    table = Table("POSITION", "NAME", "KIND", "STATE", "ATTEMPTS", "DURATION", "DETAIL")
    for step in steps:
        table.add_row(
            step.key,
            step.name,
            step.kind,
            step.state,
            str(step.attempts),
            _duration(step),
            _detail(step),
        )
    out.print(table)


@flows_app.command("cancel")
def cancel(
    flow_id: Annotated[str, typer.Argument()],
    store: Annotated[str | None, typer.Option(help=STORE_HELP)] = None,
) -> None:
    """Cancel a flow (and its unfinished children)."""

    async def go(active: Store) -> FlowStatus:
        return await Client(active).cancel(flow_id)

    status = run_async(lambda: with_store(store_url(store), go))
    if status.state == "cancelled":
        out.print(f"cancelled {flow_id}")
    elif status.is_terminal:
        out.print(f"{flow_id} had already ended ({status.state})")
    else:
        out.print(f"cancellation requested: {flow_id} stops at its next step")


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


def _duration(step: StepRecord) -> str:
    if step.started_at is None or step.completed_at is None:
        return "-"
    seconds = (step.completed_at - step.started_at).total_seconds()
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _detail(step: StepRecord) -> str:
    if step.error is not None:
        return f"{step.error.type}: {step.error.message}"[:80]
    if step.state in ("waiting", "retrying") and step.fire_at is not None:
        return f"until {_time(step.fire_at)}"
    return ""


def _status_json(status: FlowStatus) -> dict[str, object]:
    return {
        "id": status.id,
        "flow": status.flow,
        "state": status.state,
        "attempts": status.attempts,
        "version": status.version,
        "created_at": status.created_at.isoformat(),
        "updated_at": status.updated_at.isoformat(),
    }
