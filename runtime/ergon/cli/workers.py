"""`ergon worker`: run a worker process until SIGTERM/SIGINT (then finish in-flight flows)."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import signal
from typing import Annotated

import typer

from ergon.cli.common import STORE_HELP, err, fail, import_modules, store_url
from ergon.core.flow import Flow
from ergon.distributed.worker import Worker
from ergon.storage.urls import open_store

log = logging.getLogger("ergon.worker")


def flows_in(modules: list[str]) -> list[type[Flow]]:
    """Every Flow class with an entry point found in the given (imported) modules."""
    import_modules(modules)
    found: dict[str, type[Flow]] = {}
    for name in modules:
        module = importlib.import_module(name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, Flow) and value is not Flow and _has_entry(value):
                found[value.flow_name()] = value
    return list(found.values())


def _has_entry(cls: type[Flow]) -> bool:
    return any(hasattr(v, "__ergon_flow__") for k in cls.__mro__ for v in vars(k).values())


def worker(
    imports: Annotated[
        list[str], typer.Option("--import", help="Module(s) whose Flow classes this worker runs.")
    ],
    store: Annotated[str | None, typer.Option(help=STORE_HELP)] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Flows executed at once.")] = 16,
    version: Annotated[
        str | None, typer.Option(help="Deployment version: claim flows of it and unversioned ones.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Worker name (default: host-pid).")] = None,
    lease_seconds: Annotated[float, typer.Option(min=0.1, help="Lease length in seconds.")] = 30.0,
    poll_interval: Annotated[
        float, typer.Option(min=0.01, help="Seconds between checks when nothing notifies.")
    ] = 1.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run a worker: claim flows from the store and execute them until SIGTERM or Ctrl-C.

    On SIGTERM or SIGINT the worker stops claiming, finishes the flows it is executing, and exits.
    """
    logging.getLogger("ergon").setLevel(logging.DEBUG if verbose else logging.INFO)
    flows = flows_in(imports)
    if not flows:
        fail(f"no ergon.Flow classes found in {', '.join(imports)}")
    url = store_url(store)
    err.print(
        f"[bold]ergon worker[/] {name or ''} on {url}: {len(flows)} flows, "
        f"concurrency {concurrency}, version {version or 'none'}",
        soft_wrap=True,
    )
    asyncio.run(_serve(url, flows, concurrency, version, name, lease_seconds, poll_interval))


async def _serve(
    url: str,
    flows: list[type[Flow]],
    concurrency: int,
    version: str | None,
    name: str | None,
    lease_seconds: float,
    poll_interval: float,
) -> None:
    store = open_store(url)
    try:
        runner = Worker(
            store,
            name,
            flows=flows,
            concurrency=concurrency,
            version=version,
            lease_seconds=lease_seconds,
            poll_interval=poll_interval,
        )
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, runner.stop)
        await runner.run()
    finally:
        await store.close()
