"""Flows run in child processes by the process tests. Each step appends a line to a log file
(named in the flow's input) before doing anything, so tests can count executions across
processes; `ERGON_TEST_CRASH_AT=<step>` makes that step kill its process with os._exit.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import ergon


def log(path: str, line: str) -> None:
    with Path(path).open("a") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def crash_if_asked(step: str) -> None:
    if os.environ.get("ERGON_TEST_CRASH_AT") == step:
        os._exit(137)


class Pipeline(ergon.Flow):
    log: str

    @ergon.flow
    async def run(self) -> str:
        a = await self.a()
        b = await self.b(a)
        c = await self.c(b)
        return await self.d(c)

    @ergon.step
    async def a(self) -> str:
        log(self.log, "a")
        return "a"

    @ergon.step
    async def b(self, prev: str) -> str:
        log(self.log, "b")
        return prev + "b"

    @ergon.step
    def c(self, prev: str) -> str:
        log(self.log, "c")
        crash_if_asked("c")
        return prev + "c"

    @ergon.step
    async def d(self, prev: str) -> str:
        log(self.log, "d")
        return prev + "d"


class Retrying(ergon.Flow):
    log: str
    fail_attempts: int = 2

    @ergon.flow
    async def run(self) -> int:
        return await self.flaky()

    @ergon.step(retry=ergon.RetryPolicy(5, 1.0, 1.0, 1.0))
    async def flaky(self) -> int:
        attempt = ergon.current_step().attempt
        log(self.log, f"attempt {attempt}")
        if attempt <= self.fail_attempts:
            raise ConnectionError(f"attempt {attempt} failed")
        await asyncio.sleep(0)
        return attempt


class Wave(ergon.Flow):
    """Four parallel steps; the slowest one crashes the process when asked."""

    log: str
    use_dag: bool = False

    @ergon.flow
    async def run(self) -> list[int]:
        if self.use_dag:
            async with ergon.dag(limit=4) as g:
                parts = [g.add(self.part, i) for i in range(4)]
                total = g.add(self.total, *parts)
            return [total.result()]
        return list(await asyncio.gather(*(self.part(i) for i in range(4))))

    @ergon.step
    async def part(self, i: int) -> int:
        log(self.log, f"part{i}")
        await asyncio.sleep(0.05 * i)
        crash_if_asked(f"part{i}")
        return i * 10

    @ergon.step
    async def total(self, *parts: int) -> int:
        log(self.log, "total")
        return sum(parts)


class Nap(ergon.Flow):
    log: str
    seconds: float

    @ergon.flow
    async def run(self) -> str:
        await self.before()
        await ergon.sleep(self.seconds)
        return await self.after()

    @ergon.step
    async def before(self) -> None:
        log(self.log, "before")

    @ergon.step
    async def after(self) -> str:
        log(self.log, "after")
        return "rested"


class Tagged(ergon.Flow):
    """Three steps, each logging `<tag>:<step>` once per execution."""

    log: str
    tag: str

    @ergon.flow
    async def run(self) -> str:
        first = await self.one()
        second = await self.two(first)
        return await self.three(second)

    @ergon.step
    async def one(self) -> int:
        log(self.log, f"{self.tag}:one")
        return 1

    @ergon.step
    async def two(self, value: int) -> int:
        log(self.log, f"{self.tag}:two")
        await asyncio.sleep(0.01)
        return value + 1

    @ergon.step
    async def three(self, value: int) -> str:
        log(self.log, f"{self.tag}:three")
        return f"{self.tag}={value + 1}"


class Sleeper(ergon.Flow):
    log: str
    tag: str
    seconds: float = 1.0

    @ergon.flow
    async def run(self) -> str:
        await ergon.sleep(self.seconds)
        return await self.fired()

    @ergon.step
    async def fired(self) -> str:
        log(self.log, f"{self.tag}:fired")
        return self.tag


class SlowMiddle(ergon.Flow):
    log: str
    seconds: float

    @ergon.flow
    async def run(self) -> str:
        await self.first()
        await self.slow()
        return await self.last()

    @ergon.step
    async def first(self) -> None:
        log(self.log, "first")

    @ergon.step
    async def slow(self) -> None:
        log(self.log, f"slow:{os.getpid()}")
        await asyncio.sleep(self.seconds)

    @ergon.step
    async def last(self) -> str:
        log(self.log, f"last:{os.getpid()}")
        return "done"


class FlakyFlow(ergon.Flow):
    """Fails its first `failures` attempts (counted in a file), then succeeds."""

    log: str
    failures: int = 2

    @ergon.flow(retry=ergon.RetryPolicy(4, 0.2, 0.2, 1.0))
    async def run(self) -> str:
        await self.prepare()
        attempt = count_attempt(self.log)  # deliberately outside a step: seen anew each attempt
        if attempt <= self.failures:
            raise ConnectionError(f"attempt {attempt} failed")
        return f"succeeded on attempt {attempt}"

    @ergon.step
    async def prepare(self) -> None:
        log(self.log, "prepare")


def count_attempt(path: str) -> int:
    attempts = Path(path + ".attempts")
    attempt = len(attempts.read_text().split()) + 1 if attempts.exists() else 1
    log(str(attempts), str(attempt))
    return attempt
