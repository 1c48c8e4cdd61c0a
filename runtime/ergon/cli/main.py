"""The `ergon` command: `demo`, `run`, `run-flow`, `schedule`, `worker`, `signal`, `flows`."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from ergon.cli import demo, manage, running, scheduling, workers
from ergon.cli.common import reporting, set_verbose
from ergon.core.redaction import RedactingFormatter

app = typer.Typer(
    name="ergon",
    help="Durable execution for Python: run flows that survive crashes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def options(
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Print the full traceback of an error.")
    ] = False,
) -> None:
    """Durable execution for Python: run flows that survive crashes.

    Exit codes: 0 done, 1 the flow failed, 2 the command could not do its work (the error is
    one line on stderr), 3 the flow was cancelled (run-flow), 130 interrupted.
    """
    set_verbose(verbose)


app.command("demo")(reporting(demo.demo))
app.command("run")(reporting(running.run))
app.command("run-flow")(reporting(running.run_flow))
app.command("schedule")(reporting(scheduling.schedule))
app.command("worker")(reporting(workers.worker))
app.command("signal")(reporting(manage.signal))
for command, function in manage.FLOWS_COMMANDS.items():
    manage.flows_app.command(command)(reporting(function))
app.add_typer(manage.flows_app, name="flows")


def main() -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    app()


if __name__ == "__main__":
    main()
