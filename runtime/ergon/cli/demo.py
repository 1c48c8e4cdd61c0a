"""`ergon demo`: an order flow whose worker process is SIGKILLed mid-flow and then resumed.

The command runs the flow in a child process (`python -m ergon.cli.demo`), kills it with a real
SIGKILL while a step is in flight, starts a new process on the same SQLite file, and shows which
steps came back from checkpoints and which ran.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
import zlib
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

import ergon
from ergon.cli.common import STORE_HELP, err, fail, one_line, say, shown, store_url
from ergon.core.errors import ExitCode
from ergon.storage.urls import open_store

PAUSE_ENV = "ERGON_DEMO_PAUSE_AT"


class OrderDemo(ergon.Flow, name="ergon.demo.Order"):
    """Reserve stock, take payment, book a courier, confirm: four checkpointed steps."""

    order_id: str
    amount: float

    @ergon.flow
    async def run(self) -> str:
        reservation = await self.reserve_inventory()
        payment = await self.charge_payment(reservation)
        tracking = await self.create_shipment(payment)
        await self.send_confirmation(tracking)
        return f"order {self.order_id} shipped, tracking {tracking}"

    @ergon.step
    async def reserve_inventory(self) -> str:
        await _work("reserve_inventory")
        return f"rsv-{self.order_id}"

    @ergon.step(retry=ergon.RetryPolicy.STANDARD)
    async def charge_payment(self, reservation: str) -> str:
        await _work("charge_payment")
        return f"pay-{ergon.current_step().idempotency_key}"

    @ergon.step(retry=ergon.RetryPolicy.STANDARD)
    async def create_shipment(self, payment: str) -> str:
        await _work("create_shipment")
        return f"TRK{zlib.crc32(payment.encode()) % 100000:05d}"

    @ergon.step
    async def send_confirmation(self, tracking: str) -> None:
        await _work("send_confirmation")


async def _work(step: str) -> None:
    print(json.dumps({"event": "ran", "step": step}), flush=True)
    if os.environ.get(PAUSE_ENV) == step:
        print(json.dumps({"event": "paused", "step": step}), flush=True)
        await asyncio.sleep(3600)
    await asyncio.sleep(0.2)


def demo(
    store: Annotated[str | None, typer.Option(help=STORE_HELP)] = None,
) -> None:
    """Run an order flow, SIGKILL its worker mid-flow, resume it, and show what was replayed."""
    url = store_url(store)
    if url.startswith("memory://"):
        fail("the demo needs a store two processes can share (SQLite, Postgres or Redis)")
    asyncio.run(_recorded(url, "demo-check"))  # a store that cannot be opened fails here, once
    flow_id = f"demo-{uuid.uuid4().hex[:8]}"
    say(("Ergon demo", "bold"), " — flow ", (flow_id, "cyan"), " on ", (shown(url), "cyan"), "\n")

    say(("1.", "bold"), " worker process #1 starts the order flow")
    first = _worker(url, flow_id, pause_at="create_shipment")
    ran_first = _follow(first, until="paused")
    say(
        ("2. SIGKILL", "bold red"),
        f" worker #1 (pid {first.pid}) while create_shipment is running",
    )
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    checkpointed = asyncio.run(_recorded(url, flow_id))
    say(f"   checkpoints survived: {', '.join(checkpointed) or 'none'}\n")

    say(("3.", "bold"), " worker process #2 resumes the same flow from its checkpoints")
    second = _worker(url, flow_id, pause_at=None)
    ran_second = _follow(second, until="outcome")
    code = second.wait()
    outcome = ran_second.pop("__outcome__", None)

    table = Table(title=f"flow {flow_id}", title_style="bold")
    for column in ("step", "worker #1 (killed)", "worker #2 (resumed)"):
        table.add_column(column)
    for step in ("reserve_inventory", "charge_payment", "create_shipment", "send_confirmation"):
        before = Text("ran" if step in ran_first else "-")
        if step in checkpointed:
            before.append(", checkpointed")
        elif step in ran_first:
            before.append(", killed before its checkpoint", "red")
        after = (
            Text("ran", "green") if step in ran_second else Text("replayed from checkpoint", "cyan")
        )
        table.add_row(step, before, after)
    err.print(table)
    if code != 0 or outcome is None:
        fail(f"the resumed worker exited with {ExitCode.describe(code)}", ExitCode.FLOW_FAILED)
    say("\n", ("completed:", "bold green"), f" {outcome.get('result')}")
    say(
        (
            "create_shipment ran twice: it was interrupted before its checkpoint, so it ran "
            "again (at-least-once). Its idempotency key, ergon.current_step().idempotency_key, is "
            "the same both times, for the external system to deduplicate.",
            "dim",
        )
    )


def _worker(url: str, flow_id: str, pause_at: str | None) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env.pop(PAUSE_ENV, None)
    if pause_at:
        env[PAUSE_ENV] = pause_at
    return subprocess.Popen(
        [sys.executable, "-m", "ergon.cli.demo", url, flow_id],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def _follow(process: subprocess.Popen[str], until: str) -> dict[str, dict[str, object]]:
    """Echo the worker's events until `until`; returns the steps it ran. A worker that reports
    an error (or ends without reaching `until`) ends the demo with that error."""
    ran: dict[str, dict[str, object]] = {}
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    for line in process.stdout:
        event = json.loads(line)
        if event["event"] == "error":
            process.wait()
            fail(f"worker process (pid {process.pid}): {event['message']}")
        if event["event"] == "ran":
            ran[event["step"]] = event
            say("   ", ("▶", "green"), f" {event['step']} runs (pid {process.pid})")
        if event["event"] == "outcome":
            ran["__outcome__"] = event
        if event["event"] == until or time.monotonic() > deadline:
            return ran
    code = process.wait()
    ended = ExitCode.describe(code)
    fail(
        f"worker process (pid {process.pid}) exited with {ended} before its {until}",
        ExitCode.FLOW_FAILED,
    )


async def _recorded(url: str, flow_id: str) -> list[str]:
    store = open_store(url)
    try:
        return [s.name for s in await store.load_steps(flow_id) if s.state == "completed"]
    finally:
        await store.close()


async def _execute(url: str, flow_id: str) -> None:
    store = open_store(url)
    try:
        flow = OrderDemo(order_id="A-1042", amount=99.5)
        outcome = await ergon.Executor(flow_id, flow, store).execute()
    except ergon.ErgonError as exc:  # e.g. the store became unwritable: the demo reports it
        print(json.dumps({"event": "error", "message": one_line(str(exc))}), flush=True)
        raise SystemExit(ExitCode.USAGE) from None
    finally:
        await store.close()
    from ergon.cli.running import describe

    print(json.dumps({"event": "outcome", **describe(outcome)}), flush=True)


if __name__ == "__main__":
    asyncio.run(_execute(sys.argv[1], sys.argv[2]))
