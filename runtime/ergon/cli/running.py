"""`ergon run` (a flow to its end, from the command line) and `ergon run-flow` (one recorded
flow, as the operator's worker pods do).
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated

import pydantic
import typer

from ergon.cli.common import (
    STORE_HELP,
    err,
    fail,
    import_modules,
    out,
    parse_json,
    run_async,
    store_url,
    validation_message,
    with_store,
)
from ergon.core import codec
from ergon.core.children import outcome_of
from ergon.core.errors import (
    FlowCancelledError,
    FlowError,
    FlowFailed,
    FlowLoadError,
    FlowNotFoundError,
)
from ergon.core.executor import Executor
from ergon.core.flow import Flow, load_flow
from ergon.core.outcomes import Cancelled, Completed, Failed, Outcome, Suspended
from ergon.core.records import FlowEnd, FlowStatus
from ergon.core.store import Store
from ergon.distributed.client import end_flow
from ergon.distributed.runner import run as run_flow_to_end

EXIT_FAILED = 1
EXIT_USAGE = 2


def build_flow(path: str, input_json: str) -> Flow:
    """Import `module:Flow` and validate the input against it, with messages a user can act on."""
    import_modules([])
    try:
        cls = load_flow(path)
    except FlowLoadError as exc:
        fail(str(exc))
    data = parse_json(input_json, "--input")
    try:
        return cls.model_validate(data)
    except pydantic.ValidationError as exc:
        fail(f"invalid input for flow {path}:\n{validation_message(exc)}")


def run(
    flow: Annotated[str, typer.Argument(help="The flow to run, as package.module:FlowClass.")],
    input: Annotated[str, typer.Option("--input", "-i", help="The flow's input as JSON.")] = "{}",
    store: Annotated[str | None, typer.Option(help=STORE_HELP)] = None,
    flow_id: Annotated[str | None, typer.Option(help="Resume or start this flow id.")] = None,
) -> None:
    """Run a flow to its end in this process and print its result as JSON."""
    instance = build_flow(flow, input)
    ident = flow_id or str(uuid.uuid4())
    err.print(f"[dim]flow {ident} on {store_url(store)}[/]")

    async def go(active: Store) -> object:
        return await run_flow_to_end(instance, store=active, flow_id=ident)

    try:
        value = run_async(lambda: with_store(store_url(store), go))
    except FlowFailed as exc:
        err.print(f"[bold red]failed:[/] {exc.error.type}: {exc.error.message}", soft_wrap=True)
        raise typer.Exit(EXIT_FAILED) from None
    except FlowCancelledError as exc:
        err.print(f"[yellow]{exc}[/]")
        raise typer.Exit(EXIT_FAILED) from None
    out.print_json(codec.dump(value, what="flow result"))


def run_flow(
    flow_id: Annotated[str, typer.Option("--flow-id", help="The recorded flow to execute.")],
    store: Annotated[str | None, typer.Option(help=STORE_HELP)] = None,
    imports: Annotated[
        list[str] | None, typer.Option("--import", help="Modules to import first.")
    ] = None,
) -> None:
    """Execute one recorded flow until it completes, fails or suspends, then exit.

    This is the entry point of the operator's worker pods. Exit codes: 0 completed or
    suspended, 1 failed, 3 cancelled, 2 the flow cannot be run (unknown flow, invalid input).
    The outcome is also printed as one JSON line.
    """
    import_modules(imports or [])

    async def go(active: Store) -> Outcome:
        status = await active.get_flow(flow_id)
        if status is None:
            raise FlowNotFoundError(f"no flow with id {flow_id!r} in {store_url(store)}")
        if status.is_terminal:
            return outcome_of(status)
        try:
            instance = load_flow(status.flow).model_validate_json(status.input)
        except FlowLoadError as exc:
            return await _cannot_run(active, status, "InvalidFlow", str(exc))
        except pydantic.ValidationError as exc:
            message = f"invalid input for flow {status.flow}:\n{validation_message(exc)}"
            return await _cannot_run(active, status, "InvalidInput", message)
        return await Executor(flow_id, instance, active, flow_retries=True).execute()

    outcome = run_async(lambda: with_store(store_url(store), go))
    print(json.dumps(describe(outcome)), flush=True)
    match outcome:
        case Failed(error=error) if error.type in ("InvalidFlow", "InvalidInput"):
            err.print(f"[bold red]error:[/] {error.message}", soft_wrap=True)
            raise typer.Exit(EXIT_USAGE)
        case Failed():
            raise typer.Exit(EXIT_FAILED)
        case Cancelled():
            raise typer.Exit(3)
        case _:
            return


async def _cannot_run(store: Store, status: FlowStatus, kind: str, message: str) -> Outcome:
    """Record that this flow cannot run here (not retryable), so whoever watches it learns why."""
    error = FlowError(kind, message, False)
    await end_flow(store, status, FlowEnd("failed", error=error), owner="ergon run-flow")
    return Failed(error)


def describe(outcome: Outcome) -> dict[str, object]:
    """An outcome as plain JSON (for pods' logs and scripts)."""
    match outcome:
        case Completed(value=value):
            return {"outcome": "completed", "result": json.loads(codec.dump(value, what="result"))}
        case Failed(error=error):
            return {
                "outcome": "failed",
                "error": {
                    "type": error.type,
                    "message": error.message,
                    "retryable": error.retryable,
                },
            }
        case Suspended(reason=reason):
            return {
                "outcome": "suspended",
                "kind": reason.kind,
                "name": reason.name,
                "fire_at": reason.fire_at.isoformat() if reason.fire_at else None,
            }
        case _:
            return {"outcome": "cancelled"}
