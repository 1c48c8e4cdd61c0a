"""A fan-out: fetch several sources in parallel (at most `limit` at a time), then merge.

ergon run examples.fanout:FanOutFlow --input '{"sources": ["a", "b", "c"], "limit": 2}'
"""

from __future__ import annotations

import asyncio

import ergon


class FanOutFlow(ergon.Flow):
    sources: list[str]
    limit: int = 4

    @ergon.flow
    async def run(self) -> dict[str, int]:
        async with ergon.dag(limit=self.limit) as g:
            fetched = [g.add(self.fetch, source) for source in self.sources]
            report = g.add(self.merge, *fetched)
        return report.result()

    @ergon.step(retry=ergon.RetryPolicy.STANDARD)
    async def fetch(self, source: str) -> int:
        await asyncio.sleep(0.01)  # an API call
        return len(source)

    @ergon.step
    async def merge(self, *sizes: int) -> dict[str, int]:
        return dict(zip(self.sources, sizes, strict=True))
