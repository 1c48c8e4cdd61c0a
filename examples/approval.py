"""Human in the loop: an expense waits (durably) for an approval signal.

ergon run examples.approval:ApprovalFlow --input '{"request_id": "7", "amount": 120}' &
ergon signal <flow id> approval --payload '{"approved": true, "by": "ops"}'
"""

from __future__ import annotations

from datetime import timedelta

import pydantic

import ergon


class Approval(pydantic.BaseModel):
    approved: bool
    by: str


class ApprovalFlow(ergon.Flow):
    request_id: str
    amount: float = 0.0
    timeout_hours: float = 48

    @ergon.flow
    async def run(self) -> str:
        await self.notify_approvers()
        try:
            decision = await ergon.wait_for_signal(
                "approval", Approval, timeout=timedelta(hours=self.timeout_hours)
            )
        except ergon.SignalTimeoutError:
            return await self.close("expired")
        if not decision.approved:
            return await self.close(f"rejected by {decision.by}")
        await self.pay()
        return await self.close(f"approved by {decision.by}")

    @ergon.step
    async def notify_approvers(self) -> None:
        return None

    @ergon.step
    async def pay(self) -> None:
        return None

    @ergon.step
    async def close(self, result: str) -> str:
        return f"request {self.request_id} {result}"
