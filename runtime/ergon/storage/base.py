"""What every store adapter shares besides the protocol itself."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class StoreLifecycle:
    """`async with store:` closes the store's connections on the way out."""

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
