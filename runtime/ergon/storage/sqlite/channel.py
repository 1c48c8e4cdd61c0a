"""Cross-process wake-ups for stores that have no notification channel of their own (SQLite).

Every process using a database binds a Unix datagram socket in a directory derived from the
database's path; after a state change a process sends one byte to every socket there. Delivery
is best effort (a full or vanished socket is skipped), so listeners also re-check on a timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import tempfile
from pathlib import Path

from ergon.core.store import Notifier


def channel_dir(database: Path) -> Path:
    digest = hashlib.sha1(str(database.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"ergon-{os.getuid()}-{digest}"


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.notifier.notify()


class SocketChannel:
    """One process's end of a database's wake-up channel."""

    def __init__(self, database: Path, notifier: Notifier) -> None:
        self.directory = channel_dir(database)
        self.notifier = notifier
        self.path: Path | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sender.setblocking(False)

    async def listen(self) -> None:
        if self._transport is not None:
            return
        self.directory.mkdir(mode=0o700, exist_ok=True)
        self.path = self.directory / f"{os.getpid()}-{os.urandom(4).hex()}.sock"
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Receiver(self.notifier), local_addr=str(self.path), family=socket.AF_UNIX
        )
        self._transport = transport

    def broadcast(self) -> None:
        """Tell every listening process (this one included) that something changed."""
        self.notifier.notify()
        try:
            entries = os.listdir(self.directory)
        except FileNotFoundError:
            return
        for entry in entries:
            target = self.directory / entry
            if target == self.path:
                continue
            try:
                self._sender.sendto(b"!", str(target))
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(OSError):
                    target.unlink()
            except (BlockingIOError, OSError):
                continue

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self.path = None
        self._sender.close()
