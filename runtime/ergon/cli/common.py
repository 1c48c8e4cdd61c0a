"""What every command shares: finding the store, importing user modules, reporting errors."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn, TypeVar

import pydantic
import typer
from rich.console import Console

from ergon.core.errors import ErgonError, FlowCancelledError, FlowFailed
from ergon.core.store import Store
from ergon.storage.urls import DEFAULT_SQLITE, open_store

T = TypeVar("T")

STORE_HELP = "Store URL (default: $ERGON_STORE, else sqlite:///ergon.db in this directory)."
err = Console(stderr=True, highlight=False)
out = Console(highlight=False)


def store_url(option: str | None) -> str:
    return option or os.environ.get("ERGON_STORE") or f"sqlite:///{DEFAULT_SQLITE}"


def fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(code)


def parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{what} is not valid JSON: {exc}")


def import_modules(modules: list[str]) -> None:
    """Import user modules (flows register nothing globally; importing makes them loadable)."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            fail(f"cannot import module {name!r}: {exc}")


def validation_message(exc: pydantic.ValidationError) -> str:
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(input)"
        lines.append(f"  {where}: {error['msg']}")
    return "\n".join(lines)


def run_async(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine, turning Ergon's errors into a clear message and exit code 2."""
    try:
        return asyncio.run(make())
    except (FlowFailed, FlowCancelledError):
        raise
    except ErgonError as exc:
        fail(str(exc))


async def with_store(url: str, use: Callable[[Store], Awaitable[T]]) -> T:
    store = open_store(url)
    try:
        return await use(store)
    finally:
        await store.close()
