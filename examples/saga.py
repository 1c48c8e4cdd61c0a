"""A saga: book a trip's parts; if one fails, undo the ones already done, in reverse order.

Each compensation is a step too, so a crash in the middle of undoing resumes the undoing.

    ergon run examples.saga:TripSaga --input '{"trip_id": "t1", "fail_at": "car"}'
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import ergon


class BookingFailed(Exception):
    retryable = False


class TripSaga(ergon.Flow):
    trip_id: str
    fail_at: str | None = None

    @ergon.flow
    async def run(self) -> dict[str, object]:
        undo: list[Callable[[], Awaitable[str]]] = []
        booked: list[str] = []
        try:
            booked.append(await self.book("flight"))
            undo.append(lambda: self.cancel("flight"))
            booked.append(await self.book("hotel"))
            undo.append(lambda: self.cancel("hotel"))
            booked.append(await self.book("car"))
            undo.append(lambda: self.cancel("car"))
        except BookingFailed as exc:
            undone = [await compensate() for compensate in reversed(undo)]
            return {"status": "compensated", "reason": str(exc), "undone": undone}
        return {"status": "booked", "booked": booked}

    @ergon.step(retry=ergon.RetryPolicy.with_max_attempts(3))
    async def book(self, part: str) -> str:
        if part == self.fail_at:
            raise BookingFailed(f"no {part} available")
        return f"{part}-{self.trip_id}"

    @ergon.step(retry=ergon.RetryPolicy.AGGRESSIVE)
    async def cancel(self, part: str) -> str:
        return f"cancelled {part}-{self.trip_id}"
