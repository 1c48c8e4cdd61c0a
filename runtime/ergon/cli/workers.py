"""`ergon worker`: run a worker process until SIGTERM/SIGINT (then finish in-flight flows).

A worker started while its Postgres or Redis server is unreachable (a cluster starting up, an
outage) waits for it, backing off from 0.5 s to 30 s and logging one line per attempt, rather
than dying. An SQLite file that cannot be opened (corrupt, read-only) is not an outage: that
fails at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
import signal
from collections.abc import Callable
from typing import Annotated

import typer

from ergon.cli.common import STORE_HELP, fail, import_modules, say, set_verbose, shown, store_url
from ergon.core.errors import StoreError
from ergon.core.flow import Flow
from ergon.core.store import Store
from ergon.distributed.worker import Worker
from ergon.storage.urls import open_store

log = logging.getLogger("ergon.worker")

FIRST_DELAY = 0.5
MAX_DELAY = 30.0
NETWORK_SCHEMES = ("postgres://", "postgresql://", "redis://", "rediss://", "unix://")


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
    exclusive: Annotated[
        bool,
        typer.Option("--exclusive", help="Claim only flows of --version, never unversioned ones."),
    ] = False,
    name: Annotated[str | None, typer.Option(help="Worker name (default: host-pid).")] = None,
    lease_seconds: Annotated[float, typer.Option(min=0.1, help="Lease length in seconds.")] = 30.0,
    poll_interval: Annotated[
        float, typer.Option(min=0.01, help="Seconds between checks when nothing notifies.")
    ] = 1.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run a worker: claim flows from the store and execute them until SIGTERM or Ctrl-C.

    On SIGTERM or SIGINT the worker stops claiming, finishes the flows it is executing, and exits.
    A Postgres or Redis server that cannot be reached yet is waited for (logged once per try).
    With --version V --exclusive it claims only flows of version V (a worker pool of one
    version), never unversioned ones.
    """
    logging.getLogger("ergon").setLevel(logging.DEBUG if verbose else logging.INFO)
    set_verbose(verbose)
    if exclusive and not version:
        fail("--exclusive needs --version: it claims only flows of that version")
    flows = flows_in(imports)
    if not flows:
        fail(f"no ergon.Flow classes found in {', '.join(imports)}")
    url = store_url(store)

    def banner() -> None:
        say(
            ("ergon worker", "bold"),
            f"{' ' + name if name else ''} on {shown(url)}: {len(flows)} flows, "
            f"concurrency {concurrency}, version {version or 'none'}"
            f"{' (exclusive)' if exclusive else ''}",
        )

    runner = Worker(
        open_store(url),  # connects lazily: reaching it is _serve's job
        name=name,
        flows=flows,
        concurrency=concurrency,
        version=version,
        lease_seconds=lease_seconds,
        poll_interval=poll_interval,
        exclusive=exclusive,
    )
    asyncio.run(_serve(runner, url=url, banner=banner))


async def _serve(runner: Worker, *, url: str, banner: Callable[[], None]) -> None:
    """Wait for the store, then run the worker until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        if not await _reachable(runner.store, url, stop):
            log.info("stopped before the store at %s was reachable", shown(url))
            return
        banner()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, runner.stop)
        if stop.is_set():
            runner.stop()
        await runner.run()
    finally:
        await runner.store.close()


async def _reachable(store: Store, url: str, stop: asyncio.Event) -> bool:
    """Wait until the store answers (True), or until a stop signal (False).

    Only network stores are waited for; their first failure is the only one a worker that
    never connected can see, so any `StoreError` counts as "not reachable yet" (the log line
    says why, e.g. a refused password, for whoever watches it).
    """
    delay = FIRST_DELAY
    attempt = 1
    while True:
        probe = asyncio.ensure_future(_probe(store))
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait([probe, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if stop.is_set():
            probe.cancel()
            with contextlib.suppress(BaseException):
                await probe
            return False
        error = probe.exception()
        if error is None:
            if attempt > 1:
                log.info("store at %s is reachable; starting", shown(url))
            return True
        if not (isinstance(error, StoreError) and url.lower().startswith(NETWORK_SCHEMES)):
            raise error
        log.warning(
            "store at %s not reachable (attempt %d), retrying in %.1f s: %s",
            shown(url),
            attempt,
            delay,
            error,
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        if stop.is_set():
            return False
        delay = min(delay * 2, MAX_DELAY)
        attempt += 1


async def _probe(store: Store) -> None:
    await store.get_flow("ergon-worker-startup-check")
    await store.notifier()
