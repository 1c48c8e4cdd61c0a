"""What every command shares: finding the store, importing user modules, reporting errors.

Errors: a command that cannot do its work says why in one line on stderr (`error: …`) and
exits with 2 (`ExitCode.USAGE`); `ergon --verbose …` prints the traceback first. Every URL and
exception text is redacted (`ergon.core.redaction`) and printed literally: the consoles
interpret no Rich markup, so `[…]` in a user's message, a URL or a pydantic error is never
swallowed.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import json
import os
import sys
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import ContextVar
from typing import Any, NoReturn, ParamSpec, TypeVar

import pydantic
import typer
from rich.console import Console
from rich.text import Text

from ergon.core.definition import entry_point
from ergon.core.errors import ErgonError, ExitCode, FlowDefinitionError, FlowLoadError
from ergon.core.flow import Flow, load_flow
from ergon.core.redaction import redact, redact_url
from ergon.core.store import Store
from ergon.storage.urls import DEFAULT_SQLITE, open_store

T = TypeVar("T")
P = ParamSpec("P")

STORE_HELP = "Store URL (default: $ERGON_STORE, else sqlite:///ergon.db in this directory)."
# No markup, no emoji codes, no highlighting: what we print is what the user or the system wrote.
err = Console(stderr=True, highlight=False, markup=False, emoji=False)
out = Console(highlight=False, markup=False, emoji=False)
_verbose: ContextVar[bool] = ContextVar("ergon_cli_verbose", default=False)


def store_url(option: str | None) -> str:
    return option or os.environ.get("ERGON_STORE") or f"sqlite:///{DEFAULT_SQLITE}"


def shown(url: str) -> str:
    """A store URL as messages show it: its password hidden."""
    return redact_url(url)


def one_line(text: str) -> str:
    """`text` redacted and on one line (multi-line messages joined with spaces)."""
    return " ".join(part.strip() for part in redact(text).splitlines() if part.strip())


def say(*parts: str | tuple[str, str]) -> None:
    """Print to stderr: plain strings literally, `(text, style)` pairs styled."""
    err.print(Text.assemble(*parts), soft_wrap=True)


def fail(message: str, code: int = ExitCode.USAGE) -> NoReturn:
    """Report an error in one line on stderr and exit with `code`."""
    say(("error:", "bold red"), " ", one_line(message))
    raise typer.Exit(code)


def warn(message: str) -> None:
    say(("warning:", "yellow"), " ", one_line(message))


def set_verbose(on: bool) -> None:
    """`ergon --verbose` (or a command's own `--verbose`): print tracebacks of errors."""
    if on:
        _verbose.set(True)


def verbose() -> bool:
    return _verbose.get()


def reporting(command: Callable[P, None]) -> Callable[P, None]:
    """Wrap a command so that any error it raises ends it with one line and `ExitCode.USAGE`."""

    @functools.wraps(command)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:
            if verbose():
                err.print(redact("".join(traceback.format_exception(exc))), end="", soft_wrap=True)
            fail(describe_error(exc))

    return guarded


def describe_error(exc: BaseException) -> str:
    """What went wrong, for one line: Ergon's own messages as they are, others with their type."""
    if isinstance(exc, ErgonError):
        return str(exc)
    if isinstance(exc, pydantic.ValidationError):
        return f"invalid value for {exc.title}: {validation_message(exc)}"
    hint = "" if verbose() else " (ergon --verbose … prints the traceback)"
    return f"{type(exc).__name__}: {exc}{hint}"


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
        except Exception as exc:
            fail(f"cannot import module {name!r}: {import_error(exc)}")


def load_user_flow(path: str) -> type[Flow]:
    """`load_flow`, with any failure while importing the user's module (a SyntaxError, an error
    in a Flow's declaration, an exception at import time) as a `FlowLoadError`."""
    try:
        return load_flow(path)
    except FlowLoadError:
        raise
    except Exception as exc:
        module = path.partition(":")[0]
        raise FlowLoadError(
            f"cannot import module {module!r} for flow {path!r}: {import_error(exc)}"
        ) from exc


def build_flow(path: str, input_json: str) -> Flow:
    """Import `module:Flow` and validate the input against it, with messages a user can act on."""
    import_modules([])
    try:
        cls = load_user_flow(path)
        entry_point(cls)
    except (FlowLoadError, FlowDefinitionError) as exc:
        fail(str(exc))
    data = parse_json(input_json, "--input")
    try:
        return cls.model_validate(data)
    except pydantic.ValidationError as exc:
        fail(f"invalid input for flow {path}: {validation_message(exc)}")


def import_error(exc: BaseException) -> str:
    if isinstance(exc, ImportError | ErgonError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"  # SyntaxError's text names the file and line


def validation_message(exc: pydantic.ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(input)"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def run_async(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to its end (errors are reported by the command's `reporting`)."""
    return asyncio.run(make())


async def with_store(url: str, use: Callable[[Store], Awaitable[T]]) -> T:
    store = open_store(url)
    try:
        return await use(store)
    finally:
        await store.close()
