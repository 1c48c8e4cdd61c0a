"""Container output kept for ``kubectl logs``: line buffers that followers can wait on.

The kubelet appends whatever the process writes (stdout and stderr share one pipe, as a
container runtime's log file interleaves them); each line keeps its arrival time for
``timestamps=true`` and ``sinceSeconds``. A follower waits on an :class:`asyncio.Event` that
is replaced on every append, so following costs nothing while the process is quiet.

With a `path` (the server's ``--pod-log-dir``) every byte is also appended to a file, as a
real kubelet keeps ``/var/log/pods/NAMESPACE_NAME_UID/CONTAINER/RESTART.log``: the output of
pods long deleted stays readable (the end-to-end suite scans it for leaked secrets).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

MAX_LINES = 200_000


def _now() -> datetime:
    return datetime.now(UTC)


class ContainerLog:
    """The output of one run of one container."""

    def __init__(self, path: Path | None = None) -> None:
        self._file: BinaryIO | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("ab")
        self._lines: list[tuple[datetime, bytes]] = []
        self._dropped = 0  # lines discarded from the front to bound memory
        self._partial = b""
        self._changed = asyncio.Event()
        self.closed = False

    def append(self, data: bytes) -> None:
        if self._file is not None:
            self._file.write(data)
            self._file.flush()
        stamp = _now()
        chunks = (self._partial + data).split(b"\n")
        self._partial = chunks.pop()
        self._lines.extend((stamp, chunk + b"\n") for chunk in chunks)
        if len(self._lines) > MAX_LINES:
            excess = len(self._lines) - MAX_LINES
            del self._lines[:excess]
            self._dropped += excess
        self._wake()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._partial:
            self._lines.append((_now(), self._partial))
            self._partial = b""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _start(self, tail: int | None, since: datetime | None) -> int:
        start = self._dropped
        if since is not None:
            start = next(
                (self._dropped + i for i, (stamp, _) in enumerate(self._lines) if stamp >= since),
                self._dropped + len(self._lines),
            )
        if tail is not None:
            start = max(start, self._dropped + len(self._lines) - max(tail, 0))
        return start

    async def stream(
        self,
        *,
        follow: bool,
        tail: int | None,
        since: datetime | None,
        timestamps: bool,
        limit_bytes: int | None,
    ) -> AsyncIterator[bytes]:
        position = self._start(tail, since)
        sent = 0
        while True:
            waiter, closed = self._changed, self.closed
            index = max(position - self._dropped, 0)
            batch = self._lines[index:]
            position = self._dropped + len(self._lines)
            for stamp, line in batch:
                if timestamps:
                    line = stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ ").encode() + line
                if limit_bytes is not None and sent + len(line) > limit_bytes:
                    yield line[: limit_bytes - sent]
                    return
                sent += len(line)
                yield line
            if not follow or closed:
                return
            await waiter.wait()
