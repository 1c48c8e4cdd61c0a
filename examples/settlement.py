"""A settlement that waits on a durable timer: restarts never restart the wait.

ergon run examples.settlement:SettlementFlow --input '{"batch_id": "1", "delay_seconds": 2}'
"""

from __future__ import annotations

import pydantic

import ergon


class SettlementFlow(ergon.Flow):
    batch_id: str
    delay_seconds: float = pydantic.Field(default=5, ge=0)

    @ergon.flow
    async def run(self) -> str:
        total = await self.collect()
        await ergon.sleep(self.delay_seconds)  # e.g. the end of the bank's cut-off window
        return await self.settle(total)

    @ergon.step
    async def collect(self) -> int:
        return 3

    @ergon.step
    async def settle(self, total: int) -> str:
        return f"batch {self.batch_id}: settled {total} payments"
