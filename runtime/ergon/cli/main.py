"""The `ergon` command: `demo`, `run`, `run-flow`, `worker`, `signal`, `flows`."""

from __future__ import annotations

import logging

import typer

from ergon.cli import demo, manage, running, workers

app = typer.Typer(
    name="ergon",
    help="Durable execution for Python: run flows that survive crashes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("demo")(demo.demo)
app.command("run")(running.run)
app.command("run-flow")(running.run_flow)
app.command("worker")(workers.worker)
app.command("signal")(manage.signal)
app.add_typer(manage.flows_app, name="flows")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
