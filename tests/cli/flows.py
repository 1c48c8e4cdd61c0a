"""Flows the command-line tests run in real `ergon` processes."""

from __future__ import annotations

import asyncio

import ergon

QUICK_RETRY = ergon.RetryPolicy(3, 0.3, 0.3, 1.0)


class Timeline(ergon.Flow):
    """A step that fails twice (0.3 s backoffs), a 0.3 s sleep, then a wait for signal "go"."""

    @ergon.flow
    async def run(self) -> str:
        tries = await self.flaky()
        await ergon.sleep(0.3)
        payload = await ergon.wait_for_signal("go", str)
        return f"{tries} {payload}"

    @ergon.step(retry=QUICK_RETRY)
    async def flaky(self) -> int:
        attempt = ergon.current_step().attempt
        if attempt < 3:
            raise ConnectionError(f"[attempt {attempt}] failed [type=flaky]")
        return attempt


class Brackets(ergon.Flow):
    """Fails with a message full of Rich markup and a DSN with a password."""

    note: str = "[bold]x[/]"

    @ergon.flow
    async def run(self) -> str:
        return await self.boom()

    @ergon.step
    async def boom(self) -> str:
        raise ValueError(
            f"[red]not red[/] {self.note} [type=value_error] "
            "postgresql://app:S3cret@db.internal:5432/app"
        )


class Slow(ergon.Flow):
    """Steps that take long enough to interrupt."""

    @ergon.flow
    async def run(self) -> int:
        total = 0
        for _ in range(100):
            total += await self.tick()
        return total

    @ergon.step
    async def tick(self) -> int:
        print("tick", flush=True)
        await asyncio.sleep(0.1)
        return 1


class Script(ergon.Flow, name="__main__:Script"):
    """A flow named as if defined in a script: workers could not import it."""

    @ergon.flow
    async def run(self) -> str:
        return "never run by a worker"
