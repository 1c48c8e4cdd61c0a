"""A parent flow that runs one child flow per parcel and collects their results.

ergon run examples.parent:ShipmentFlow --input '{"parcels": ["p1", "p2"]}'
"""

from __future__ import annotations

import ergon


class ParcelFlow(ergon.Flow):
    parcel: str

    @ergon.flow
    async def run(self) -> str:
        label = await self.label()
        return await self.hand_over(label)

    @ergon.step
    async def label(self) -> str:
        return f"label-{self.parcel}"

    @ergon.step
    async def hand_over(self, label: str) -> str:
        if self.parcel.startswith("bad"):
            raise ValueError(f"courier refused {self.parcel}")
        return f"{label}: handed over"


class ShipmentFlow(ergon.Flow):
    parcels: list[str]

    @ergon.flow
    async def run(self) -> list[str]:
        results = []
        for parcel in self.parcels:
            try:
                results.append(await ergon.invoke(ParcelFlow(parcel=parcel)))
            except ergon.ChildFlowError as exc:
                results.append(f"{parcel}: failed ({exc.error.message})")
        return results
