"""The flow the fault tests run in worker processes (imported by `ergon worker --import`)."""

from __future__ import annotations

import asyncio
import os

import ergon


def record(path: str, line: str) -> None:
    """Append one line; O_APPEND keeps lines from several processes whole and in write order."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


class Chain(ergon.Flow, name="tests.stores.Chain"):
    """`steps` sequential steps; each logs `<tag> <index> <pid>` when it runs."""

    log: str
    tag: str
    steps: int = 4
    pause: float = 0.02

    @ergon.flow
    async def run(self) -> int:
        total = 0
        for index in range(self.steps):
            total += await self.step(index)
        return total

    @ergon.step
    async def step(self, index: int) -> int:
        record(self.log, f"{self.tag} {index} {os.getpid()}")
        await asyncio.sleep(self.pause)
        return index
