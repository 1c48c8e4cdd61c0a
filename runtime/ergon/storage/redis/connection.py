"""Connections for `RedisStore`: the client, its scripts, error translation, and pub/sub.

redis-py's own retries are not used: it would re-send a script whose reply was lost, and a
re-sent claim or signal is not harmless. Instead, calls the store marks idempotent are retried
once at once after a connection error; a pooled connection the server closed is replaced before
it is reused, so the next call after a restart works. Everything that means "the server is not
there" becomes a `StoreError` naming the host, port and database and what to check. An error
reply that is about the command itself (a value over `proto-max-bulk-len`, a script that cannot
take its arguments), and a string the client cannot encode (an unpaired surrogate), become a
`StoreValueError`, never retried; replies that mean the server cannot serve writes right now
(READONLY, LOADING, BUSY, OOM, MASTERDOWN, ...) stay ordinary, retryable `StoreError`s.

Wake-ups arrive over pub/sub on a dedicated connection. Pub/sub forgets what was published while
a subscriber was away, so after re-subscribing the listener bumps the notifier once and waiters
re-check the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import re
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.connection import AbstractConnection as RedisConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    ClusterDownError,
    MasterDownError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ergon.core.errors import StoreError, StoreValueError
from ergon.core.store import Notifier
from ergon.storage.base import pop_option
from ergon.storage.pooling import Pool, PooledConnections, driver_error, reconnect
from ergon.storage.redis.scripts import LAYOUT_VERSION, PRELUDE_FOR, SCRIPTS, layout_key

log = logging.getLogger("ergon.storage.redis")

HEALTH_SECONDS = 10.0
DEFAULT_MAX_BULK = 512 * 1024 * 1024
_UNREACHABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    TimeoutError,
)
_ANY_ERROR: tuple[type[BaseException], ...] = (*_UNREACHABLE, RedisError)
# What a call can fail with: also a str that cannot be encoded as UTF-8 (found before sending).
_CALL_ERRORS: tuple[type[BaseException], ...] = (*_ANY_ERROR, UnicodeEncodeError)
# Error replies about the server's state, not the command: waiting may help.
_SERVER_STATE: tuple[type[BaseException], ...] = (
    ReadOnlyError,
    OutOfMemoryError,
    NoPermissionError,
    TryAgainError,
    ClusterDownError,
    MasterDownError,
    NoScriptError,
)
_SERVER_STATE_CODES = re.compile(r"\b(BUSY|LOADING|MISCONF|NOREPLICAS|UNBLOCKED|READONLY|OOM)\b")
# A call that ended like this leaves its connection in an unknown state.
_IN_DOUBT: tuple[type[BaseException], ...] = (asyncio.CancelledError, *_UNREACHABLE)


def split_url(url: str) -> tuple[str, str | None]:
    """The URL without Ergon's own `prefix` query option, and that option."""
    return pop_option(url, "prefix")


def describe(url: str) -> str:
    """host:port (db n), or the socket path, for messages (without credentials)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix socket {parts.path}"
    try:
        port = parts.port or 6379
    except ValueError:
        port = 6379
    db = parts.path.lstrip("/") or "0"
    return f"{parts.hostname or 'localhost'}:{port} (db {db})"


def store_error(exc: BaseException, *, where: str, what: str) -> StoreError:
    """A `StoreError` for a redis-py or socket error, saying what to do about it."""
    return driver_error(
        exc,
        backend="Redis",
        where=where,
        what=what,
        timed_out=isinstance(exc, RedisTimeoutError | TimeoutError),
        unreachable=isinstance(exc, _UNREACHABLE),
        refused_value=_refuses_value(exc),
        credentials="the URL's password",
    )


def _refuses_value(exc: BaseException) -> bool:
    if isinstance(exc, UnicodeEncodeError):
        return True
    if not isinstance(exc, ResponseError) or isinstance(exc, _SERVER_STATE):
        return False
    return _SERVER_STATE_CODES.search(str(exc)) is None  # e.g. from a script: "... -BUSY ..."


def _usable(conn: RedisConnection) -> bool:
    # A connection the server closed has seen EOF in the event loop already; redis-py only
    # finds out on the next read, so look at its stream (private; without it, assume usable:
    # the retry of idempotent calls covers the rest).
    reader = getattr(conn, "_reader", None)
    return bool(conn.is_connected) and not (reader is not None and reader.at_eof())


async def _disconnect(conn: RedisConnection) -> None:
    with contextlib.suppress(*_ANY_ERROR):
        await conn.disconnect(nowait=True)


class Connection(PooledConnections[RedisConnection]):
    """The connections of one store: a pool opened (and the layout checked) on first use.

    Commands go straight to pooled redis-py connections (send, read): no per-command socket
    probe, no client-side retry. Scripts are called by SHA and loaded when the server does not
    know them (first use, or after a restart that emptied its script cache).
    """

    backend = "Redis"
    transient = _UNREACHABLE
    failure = _CALL_ERRORS

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        max_connections: int,
        connect_timeout: float,
        command_timeout: float | None,
        outage_grace: float,
    ) -> None:
        super().__init__(where=describe(url), outage_grace=outage_grace)
        self.url = url
        self.prefix = prefix
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.max_connections = max_connections
        self.max_bulk = DEFAULT_MAX_BULK  # the server's proto-max-bulk-len, read on opening
        self._factory: aioredis.ConnectionPool | None = None
        self._shas = {name: _sha(PRELUDE_FOR[name] + body) for name, body in SCRIPTS.items()}

    def new_client(self) -> aioredis.Redis:
        """A redis-py client of its own (for pub/sub)."""
        client: aioredis.Redis = aioredis.Redis.from_url(
            self.url,
            decode_responses=True,
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=self.connect_timeout,
            socket_timeout=None,
        )
        return client

    async def _connect(self) -> RedisConnection:
        assert self._factory is not None
        conn: RedisConnection = self._factory.make_connection()  # type: ignore[no-untyped-call, unused-ignore]
        await conn.connect()  # type: ignore[no-untyped-call, unused-ignore]
        return conn

    def translate(self, error: BaseException, *, what: str) -> StoreError:
        return store_error(error, where=self.where, what=what)

    async def _open(self) -> Pool[RedisConnection]:
        # socket_timeout None: the command timeout is applied around each call instead (one
        # asyncio.timeout, rather than a wait_for task per send).
        self._factory = aioredis.ConnectionPool.from_url(
            self.url,
            decode_responses=True,
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=self.connect_timeout,
            socket_timeout=None,
        )
        pool: Pool[RedisConnection] = Pool(
            connect=self._connect,
            disconnect=_disconnect,
            usable=_usable,
            max_size=self.max_connections,
        )
        try:
            conn = await pool.acquire()
            try:
                layout = await self._check_layout(conn)
                await self._check_persistence(conn)
                self.max_bulk = await _max_bulk(conn)
            except BaseException:
                await pool.discard(conn)
                raise
            pool.release(conn)
        except _ANY_ERROR as exc:
            raise store_error(exc, where=self.where, what="open the store") from exc
        if layout > LAYOUT_VERSION:
            raise StoreError(
                f"Redis keys under prefix {self.prefix!r} at {self.where} use layout "
                f"{layout}, newer than this ergon understands ({LAYOUT_VERSION}); upgrade ergon"
            )
        return pool

    async def _check_layout(self, conn: RedisConnection) -> int:
        key = layout_key(self.prefix)
        await _command(conn, "SET", key, LAYOUT_VERSION, "NX")
        return int(await _command(conn, "GET", key) or 0)

    async def _check_persistence(self, conn: RedisConnection) -> None:
        """Warn when the server may evict keys, note when it can lose acknowledged writes
        (CONFIG may be disabled on managed servers: then nothing is checked)."""
        try:
            config = _fields(await _command(conn, "CONFIG", "GET", "maxmemory-policy"))
            config.update(_fields(await _command(conn, "CONFIG", "GET", "append*")))
        except ResponseError:
            return
        policy = config.get("maxmemory-policy", "noeviction")
        if policy.startswith("allkeys"):
            log.warning(
                "Redis at %s has maxmemory-policy=%s: it may evict the keys of live flows; "
                "use noeviction",
                self.where,
                policy,
            )
        if config.get("appendonly") != "yes" or config.get("appendfsync") != "always":
            log.info(
                "Redis at %s runs with appendonly=%s appendfsync=%s: checkpoints acknowledged "
                "shortly before a crash of the machine (or, without AOF, of Redis) can be lost; "
                "see ergon.storage.redis.store",
                self.where,
                config.get("appendonly"),
                config.get("appendfsync"),
            )

    async def call(
        self,
        what: str,
        script: str,
        args: list[Any],
        *,
        idempotent: bool,
        ride_through: bool = False,
    ) -> Any:
        """Run one of the store's scripts with ARGV = [prefix, *args]."""
        command = ("EVALSHA", script, args)
        return await self.run(what, command, idempotent=idempotent, ride_through=ride_through)

    async def read(self, what: str, *command: Any) -> Any:
        """One plain read command, retried once after a connection error."""
        return await self.run(what, command, idempotent=True)

    async def run(
        self, what: str, command: tuple[Any, ...], *, idempotent: bool, ride_through: bool = False
    ) -> Any:
        """Idempotent commands are retried once at once after a connection error; with
        `ride_through` (checkpoints and ends of executions, whose failure would make steps run
        again) they keep retrying with backoff for up to `outage_grace` seconds while a server
        that was reachable before restarts."""
        try:
            return await self._once(command)
        except _CALL_ERRORS as exc:
            if (size := self._oversized(command)) is not None:
                raise StoreValueError(
                    f"Redis at {self.where} refused a value ({size} bytes, over the server's "
                    f"proto-max-bulk-len of {self.max_bulk} bytes) to {what}"
                ) from exc
            attempt = functools.partial(self._once, command)
            return await self.retry(
                exc, what, attempt, idempotent=idempotent, ride_through=ride_through
            )

    def _oversized(self, command: tuple[Any, ...]) -> int | None:
        """The size of an argument the server refuses for its length, if any. Asked only after a
        call failed: the server closes the connection on such an argument, often before the
        client finished sending it, which would look like an outage."""
        args = command[2] if command[0] == "EVALSHA" else command[1:]
        for arg in args:
            if isinstance(arg, str) and len(arg) * 4 > self.max_bulk:
                size = len(arg.encode("utf-8", "surrogatepass"))
                if size > self.max_bulk:
                    return size
        return None

    async def _once(self, command: tuple[Any, ...]) -> Any:
        pool = self._pool or await self.pool()
        conn = await pool.acquire()
        try:
            async with asyncio.timeout(self.command_timeout):
                if command[0] == "EVALSHA":
                    result = await self._script(conn, command[1], command[2])
                else:
                    result = await _command(conn, *command)
        except _IN_DOUBT:
            await pool.discard(conn)  # mid-command: what it will read next is unknown
            raise
        except BaseException as exc:
            if isinstance(exc, ResponseError) and str(exc).startswith("Protocol error"):
                await pool.discard(conn)  # the server closes the connection after this reply
            else:
                pool.release(conn)  # an error reply leaves the connection in step
            raise
        pool.release(conn)
        return result

    async def _script(self, conn: RedisConnection, name: str, args: list[Any]) -> Any:
        sha = self._shas[name]
        try:
            return await _command(conn, "EVALSHA", sha, 0, self.prefix, *args)
        except NoScriptError:
            pass
        await _command(conn, "SCRIPT", "LOAD", PRELUDE_FOR[name] + SCRIPTS[name])
        return await _command(conn, "EVALSHA", sha, 0, self.prefix, *args)

    async def close(self) -> None:
        await super().close()
        factory, self._factory = self._factory, None
        if factory is not None:
            with contextlib.suppress(*_ANY_ERROR):
                await factory.aclose()


async def _command(conn: RedisConnection, *args: str | int) -> Any:
    await conn.send_packed_command(_pack(args), check_health=False)
    return await conn.read_response()


def _pack(args: tuple[str | int, ...]) -> bytes:
    """The RESP encoding of a command. redis-py's general packer (buffers, memoryviews, size
    cut-offs) costs more than the checkpoint's own work; our arguments are only str and int."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = (arg if isinstance(arg, str) else str(arg)).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


async def _max_bulk(conn: RedisConnection) -> int:
    """The longest string the server accepts (CONFIG may be disabled: then Redis' default)."""
    try:
        reply = _fields(await _command(conn, "CONFIG", "GET", "proto-max-bulk-len"))
        return int(reply.get("proto-max-bulk-len", DEFAULT_MAX_BULK))
    except (ResponseError, ValueError):
        return DEFAULT_MAX_BULK


def _fields(reply: Any) -> dict[str, Any]:
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=True))


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


class Subscriber:
    """SUBSCRIBE to the store's channel on a dedicated connection that survives restarts."""

    def __init__(self, connection: Connection, channel: str, notifier: Notifier) -> None:
        self.connection = connection
        self.channel = channel
        self.notifier = notifier
        self._client: aioredis.Redis | None = None
        self._pubsub: PubSub | None = None
        self._task: asyncio.Task[None] | None = None
        self._starting: asyncio.Lock | None = None
        self._closing = False

    async def start(self) -> None:
        if self._task is not None:
            return
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:  # several workers may ask for the notifier at once
            if self._task is not None:
                return
            self._closing = False
            try:
                await self._subscribe()
            except _ANY_ERROR as exc:
                await self._drop()
                raise store_error(
                    exc, where=self.connection.where, what="subscribe to notifications"
                ) from exc
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _subscribe(self) -> None:
        self._client = self.connection.new_client()
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(self.channel)

    async def _watch(self) -> None:
        while not self._closing:
            try:
                await self._receive()
            except _ANY_ERROR as exc:
                log.info("pub/sub connection to %s lost: %r", self.connection.where, exc)
            if not self._closing:
                await self._resubscribe()

    async def _receive(self) -> None:
        assert self._pubsub is not None
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        while True:
            # None also comes back for the ignored PONG replies, not only after the timeout.
            message = await self._pubsub.get_message(timeout=HEALTH_SECONDS)
            now = loop.time()
            if message is not None:
                quiet_since = now
                if message.get("type") == "message":
                    data = message.get("data")
                    if isinstance(data, bytes):
                        data = data.decode("utf-8", "replace")
                    self.notifier.notify(data if isinstance(data, str) and data else None)
            elif now - quiet_since >= HEALTH_SECONDS:
                quiet_since = now
                await self._pubsub.ping()  # an idle, dead connection fails here or next read

    async def _resubscribe(self) -> None:
        await reconnect(
            self._subscribe_again,
            errors=_ANY_ERROR,
            notifier=self.notifier,
            what=f"pub/sub connection to {self.connection.where}",
        )

    async def _subscribe_again(self) -> None:
        await self._drop()
        await self._subscribe()

    async def _drop(self) -> None:
        pubsub, client = self._pubsub, self._client
        self._pubsub = self._client = None
        with contextlib.suppress(*_ANY_ERROR):
            if pubsub is not None:
                await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
        with contextlib.suppress(*_ANY_ERROR):
            if client is not None:
                await client.aclose()

    async def close(self) -> None:
        self._closing = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # Python 3.11's wait_for (used inside redis-py) can swallow a cancellation; closing
            # the connection under the task ends it all the same.
            done, _ = await asyncio.wait({task}, timeout=1.0)
            if not done:
                await self._drop()
                task.cancel()
                await asyncio.wait({task}, timeout=5.0)
        await self._drop()
