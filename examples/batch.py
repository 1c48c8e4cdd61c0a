"""A batch job: one checkpointed step per item, so a crash resumes at the first unfinished item.

    ergon run examples.batch:BatchFlow --input '{"items": ["a", "b", "c"], "seconds_per_item": 0.5}'

Each step prints a line, so a worker pod's log (`kubectl logs`) shows exactly which items that
pod processed: after a crash, the new pod's log starts at the item that was interrupted.
"""

from __future__ import annotations

import asyncio
import os

import pydantic

import ergon


class BatchFlow(ergon.Flow):
    items: list[str] = pydantic.Field(min_length=1)
    seconds_per_item: float = pydantic.Field(default=0.5, ge=0)

    @ergon.flow
    async def run(self) -> dict[str, object]:
        done = [await self.process(item) for item in self.items]
        return {"processed": len(done), "last": done[-1]}

    @ergon.step(retry=ergon.RetryPolicy.STANDARD)
    async def process(self, item: str) -> str:
        print(f"processing {item} in pid {os.getpid()}", flush=True)
        await asyncio.sleep(self.seconds_per_item)
        print(f"processed {item}", flush=True)
        return f"{item}:ok"
