"""`ergon schedule`: queue a flow for workers from the shell."""

from __future__ import annotations

from typing import Annotated

import typer

from ergon.cli.common import STORE_HELP, build_flow, out, run_async, store_url, warn, with_store
from ergon.core.store import Store
from ergon.distributed.scheduler import Scheduler


def schedule(
    flow: Annotated[str, typer.Argument(help="The flow to queue, as package.module:FlowClass.")],
    input: Annotated[str, typer.Option("--input", "-i", help="The flow's input as JSON.")] = "{}",
    flow_id: Annotated[
        str | None, typer.Option(help="The flow's id (default: a new uuid); idempotent.")
    ] = None,
    version: Annotated[
        str | None, typer.Option(help="Deployment version: only workers of it claim the flow.")
    ] = None,
    store: Annotated[str | None, typer.Option(help=STORE_HELP)] = None,
) -> None:
    """Queue a flow for `ergon worker` processes and print its id.

    Scheduling an id that already exists changes nothing (the existing flow's id is printed).
    """
    instance = build_flow(flow, input)
    name = type(instance).flow_name()
    if name.startswith("__main__:"):
        warn(
            f"the flow's name is {name!r}: workers cannot import a class defined in a script "
            "run as __main__; define it in an importable module (or give it name=...)"
        )

    async def go(active: Store) -> str:
        scheduler = Scheduler(active).with_version(version) if version else Scheduler(active)
        return await scheduler.schedule(instance, flow_id=flow_id)

    out.print(run_async(lambda: with_store(store_url(store), go)), soft_wrap=True)
