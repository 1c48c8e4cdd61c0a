"""`ergon run` (a flow to its end, from the command line) and `ergon run-flow` (one recorded
flow, as the operator's worker pods do).
"""

from __future__ import annotations

import json
import shlex
import uuid
from typing import Annotated

import pydantic
import typer

from ergon.cli.common import (
    STORE_HELP,
    build_flow,
    fail,
    import_modules,
    load_user_flow,
    out,
    run_async,
    say,
    shown,
    store_url,
    validation_message,
    with_store,
)
from ergon.core import codec
from ergon.core.errors import (
    ErrorInfo,
    ExitCode,
    FailureCode,
    FlowCancelledError,
    FlowFailedError,
    FlowLoadError,
    FlowNotFoundError,
)
from ergon.core.outcomes import Cancelled, Completed, Failed, Outcome, Suspended, outcome_of
from ergon.core.records import FlowStatus
from ergon.core.redaction import redact
from ergon.core.store import Store
from ergon.distributed.client import Client
from ergon.distributed.runner import execute_watched
from ergon.distributed.runner import run as run_flow_to_end


def run(
    flow: Annotated[str, typer.Argument(help="The flow to run, as package.module:FlowClass.")],
    input: Annotated[str, typer.Option("--input", "-i", help="The flow's input as JSON.")] = "{}",
    store: Annotated[str | None, typer.Option(help=STORE_HELP)] = None,
    flow_id: Annotated[str | None, typer.Option(help="Resume or start this flow id.")] = None,
) -> None:
    """Run a flow to its end in this process and print its result as JSON.

    Ctrl-C stops it and prints the command that resumes it from its checkpoints.
    """
    instance = build_flow(flow, input)
    ident = flow_id or str(uuid.uuid4())
    url = store_url(store)

    async def go(active: Store) -> object:
        await active.get_flow(ident)  # reach the store before announcing the run
        say((f"flow {ident} on {shown(url)}", "dim"))
        return await run_flow_to_end(instance, store=active, flow_id=ident)

    try:
        value = run_async(lambda: with_store(url, go))
    except FlowFailedError as exc:
        say(("failed:", "bold red"), f" {exc.error.type}: {redact(exc.error.message)}")
        raise typer.Exit(ExitCode.FLOW_FAILED) from None
    except FlowCancelledError as exc:
        say((str(exc), "yellow"))
        raise typer.Exit(ExitCode.FLOW_FAILED) from None
    except KeyboardInterrupt:
        again = ["ergon", "run", flow, "--input", input, "--flow-id", ident]
        if store is not None:
            again += ["--store", shown(store)]
        say(
            ("interrupted:", "yellow"),
            f" flow {ident} stopped at its last checkpoint; resume it with: {shlex.join(again)}",
        )
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    out.print_json(codec.dump(value, what="flow result"))


def run_flow(
    flow_id: Annotated[str, typer.Option("--flow-id", help="The recorded flow to execute.")],
    store: Annotated[str | None, typer.Option(help=STORE_HELP)] = None,
    imports: Annotated[
        list[str] | None, typer.Option("--import", help="Modules to import first.")
    ] = None,
) -> None:
    """Execute one recorded flow until it completes, fails or suspends, then exit.

    This is the entry point of the operator's worker pods. Exit codes (`ergon.ExitCode`):
    0 completed or suspended, 1 failed, 3 cancelled, 2 the flow cannot be run here (its class
    cannot be imported, its input does not validate: recorded as `FailureCode.INVALID_FLOW` or
    `INVALID_INPUT`). The outcome is also printed as one JSON line.
    """
    import_modules(imports or [])

    async def go(active: Store) -> Outcome:
        status = await active.get_flow(flow_id)
        if status is None:
            raise FlowNotFoundError(f"no flow with id {flow_id!r} in {shown(store_url(store))}")
        if status.is_terminal:
            return outcome_of(status)
        try:
            instance = load_user_flow(status.flow).model_validate_json(status.input)
        except FlowLoadError as exc:
            return await _cannot_run(active, status, FailureCode.INVALID_FLOW, str(exc))
        except pydantic.ValidationError as exc:
            message = f"invalid input for flow {status.flow}: {validation_message(exc)}"
            return await _cannot_run(active, status, FailureCode.INVALID_INPUT, message)
        return await execute_watched(flow_id, instance, active)

    outcome = run_async(lambda: with_store(store_url(store), go))
    print(json.dumps(describe(outcome)), flush=True)
    match outcome:
        case Failed(error=error) if _cannot_run_here(error):
            fail(error.message)
        case Failed():
            raise typer.Exit(ExitCode.FLOW_FAILED)
        case Cancelled():
            raise typer.Exit(ExitCode.CANCELLED)
        case _:
            return


async def _cannot_run(store: Store, status: FlowStatus, code: FailureCode, message: str) -> Outcome:
    """Record that this flow cannot run here (not retryable), so whoever watches it learns why."""
    error = ErrorInfo(code, message, False)
    await Client(store).fail_flow(status.id, error=error, owner="ergon run-flow")
    return Failed(error)


def _cannot_run_here(error: ErrorInfo) -> bool:
    code = FailureCode.of(error.type)
    return code is not None and code.cannot_run


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
                    "message": redact(error.message),
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
