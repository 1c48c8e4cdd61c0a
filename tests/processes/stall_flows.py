"""Flows for the stall tests (`test_stalls.py`), run by `ergon worker --import` processes.

Every step execution appends `<flow id> <step> <attempt> <pid> run` to an external log (named in
the flow's input) before anything else, with O_APPEND and fsync, never through the store: the
log is the ground truth of what user code ran, whatever the store recorded.
"""

from __future__ import annotations

import asyncio
import os

import ergon


def record(path: str, event: str = "run") -> None:
    """Log the current step's execution: one whole line, durable before the step goes on."""
    step = ergon.current_step()
    line = f"{step.flow_id} {step.name} {step.attempt} {os.getpid()} {event}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


class Backoff(ergon.Flow, name="tests.processes.stalls.Backoff"):
    """`flaky` fails its first attempt and is retried 3 s later (longer than the tests' lease),
    then `after` runs: a worker stopped during that backoff wakes up holding a due retry."""

    log: str

    @ergon.flow
    async def run(self) -> str:
        attempt = await self.flaky()
        return await self.after(attempt)

    @ergon.step(retry=ergon.RetryPolicy(3, 3.0, 3.0, 1.0))
    async def flaky(self) -> int:
        record(self.log)
        attempt = ergon.current_step().attempt
        if attempt == 1:
            raise ConnectionError("attempt 1 fails on purpose")
        return attempt

    @ergon.step
    async def after(self, attempt: int) -> str:
        record(self.log)
        return f"flaky succeeded on attempt {attempt}"


class Paused(ergon.Flow, name="tests.processes.stalls.Paused"):
    """Three steps with `pause` seconds of plain waiting in the flow body between them (not a
    step, not a durable timer): the window in which a worker is stopped between steps."""

    log: str
    pause: float = 1.0

    @ergon.flow
    async def run(self) -> int:
        total = await self.one()
        await asyncio.sleep(self.pause)
        total += await self.two()
        await asyncio.sleep(self.pause)
        return total + await self.three()

    @ergon.step
    async def one(self) -> int:
        record(self.log)
        return 1

    @ergon.step
    async def two(self) -> int:
        record(self.log)
        return 2

    @ergon.step
    async def three(self) -> int:
        record(self.log)
        return 3


class SlowStep(ergon.Flow, name="tests.processes.stalls.SlowStep"):
    """`one`, then `slow` (which runs `seconds` and logs `done` when its body returns), then
    `three`: a worker stopped inside `slow` wakes up with a step body still to finish."""

    log: str
    seconds: float = 2.0

    @ergon.flow
    async def run(self) -> int:
        await self.one()
        await self.slow()
        return await self.three()

    @ergon.step
    async def one(self) -> int:
        record(self.log)
        return 1

    @ergon.step
    async def slow(self) -> int:
        record(self.log)
        await asyncio.sleep(self.seconds)
        record(self.log, "done")
        return 2

    @ergon.step
    async def three(self) -> int:
        record(self.log)
        return 3
