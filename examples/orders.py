"""An order: reserve stock, charge the card (with retries and an idempotency key), ship.

ergon run examples.orders:OrderFlow --input '{"order_id": "42", "amount": 99.5}'
"""

from __future__ import annotations

import pydantic

import ergon


class Receipt(pydantic.BaseModel):
    payment_id: str
    amount: float


class OrderFlow(ergon.Flow):
    order_id: str
    amount: float = pydantic.Field(ge=0)

    @ergon.flow
    async def run(self) -> str:
        reservation = await self.reserve()
        receipt = await self.charge(reservation)
        tracking = await self.ship(receipt)
        return f"order {self.order_id}: charged {receipt.amount:.2f}, tracking {tracking}"

    @ergon.step
    async def reserve(self) -> str:
        return f"rsv-{self.order_id}"

    @ergon.step(retry=ergon.RetryPolicy.STANDARD)
    async def charge(self, reservation: str) -> Receipt:
        # A real payment API would take this key and refuse to charge twice for it.
        key = ergon.current_step().idempotency_key
        return Receipt(payment_id=f"pay-{key}", amount=self.amount)

    @ergon.step(retry=ergon.RetryPolicy.STANDARD)
    def ship(self, receipt: Receipt) -> str:
        return f"TRK-{self.order_id}"
