"""Connections for `RedisStore`: the client, its scripts, error translation, and pub/sub.

redis-py's own retries are switched off: it would re-send a script whose reply was lost, and a
re-sent claim or signal is not harmless. Instead, calls the store marks idempotent are retried
once at once after a connection error (a pooled connection that died with a restarted server);
the pool reconnects by itself. Everything else that means "the server is not there" becomes a
`StoreError` naming the host, port and database and what to check.

Wake-ups arrive over pub/sub on a dedicated connection. Pub/sub forgets what was published while
a subscriber was away, so after re-subscribing the listener bumps the notifier once and waiters
re-check the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ergon.core.errors import StoreError
from ergon.core.store import Notifier
from ergon.storage.redis_scripts import LAYOUT_VERSION, PRELUDE, SCRIPTS, layout_key

T = TypeVar("T")
log = logging.getLogger("ergon.storage.redis")

HEALTH_SECONDS = 10.0
RECONNECT_MAX_DELAY = 2.0
_UNREACHABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    TimeoutError,
)
_ANY_ERROR: tuple[type[BaseException], ...] = (*_UNREACHABLE, RedisError)


def split_url(url: str) -> tuple[str, str | None]:
    """The URL without Ergon's own `prefix` query option, and that option."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((v for k, v in query if k == "prefix"), None)
    rest = urlencode([(k, v) for k, v in query if k != "prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix


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
    if isinstance(exc, StoreError):
        return exc
    detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
    if isinstance(exc, RedisTimeoutError | TimeoutError):
        return StoreError(
            f"Redis at {where} did not answer in time to {what} ({detail}). Check that the "
            "server is up, reachable and not overloaded; the next call tries again."
        )
    if isinstance(exc, _UNREACHABLE):
        return StoreError(
            f"cannot reach Redis at {where} to {what}: {detail}. Check that the server is "
            "running and accepts connections there (and the URL's password); the store "
            "reconnects on the next call."
        )
    return StoreError(f"Redis at {where}: {what} failed: {detail}")


class Connection:
    """The client of one store, created with its scripts on first use."""

    def __init__(
        self, url: str, *, prefix: str, connect_timeout: float, command_timeout: float | None
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.where = describe(url)
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._client: aioredis.Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._opening: asyncio.Lock | None = None

    def new_client(self) -> aioredis.Redis:
        client: aioredis.Redis = aioredis.Redis.from_url(
            self.url,
            decode_responses=True,
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=self.connect_timeout,
            socket_timeout=self.command_timeout,
        )
        return client

    async def client(self) -> aioredis.Redis:
        if self._client is not None:
            return self._client
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._client is None:
                self._client = await self._open()
        return self._client

    async def _open(self) -> aioredis.Redis:
        client = self.new_client()
        try:
            await client.set(layout_key(self.prefix), LAYOUT_VERSION, nx=True)
            layout = int(await client.get(layout_key(self.prefix)) or 0)
            if layout > LAYOUT_VERSION:
                raise StoreError(
                    f"Redis keys under prefix {self.prefix!r} at {self.where} use layout "
                    f"{layout}, newer than this ergon understands ({LAYOUT_VERSION}); upgrade "
                    "ergon"
                )
            await self._check_persistence(client)
        except BaseException as exc:
            await client.aclose()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise store_error(exc, where=self.where, what="open the store") from exc
        self._scripts = {
            name: client.register_script(PRELUDE + body) for name, body in SCRIPTS.items()
        }
        return client

    async def _check_persistence(self, client: aioredis.Redis) -> None:
        """Warn once when the server may evict keys or loses writes on restart (CONFIG may be
        disabled on managed servers: then nothing is checked)."""
        try:
            config: dict[Any, Any] = await client.config_get("maxmemory-policy")
            config.update(await client.config_get("append*"))
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
                "see ergon.storage.redis",
                self.where,
                config.get("appendonly"),
                config.get("appendfsync"),
            )

    async def call(self, what: str, script: str, args: list[Any], *, idempotent: bool) -> Any:
        """Run one of the store's scripts with ARGV = [prefix, *args]."""
        if self._client is None:
            await self.client()
        argv = [self.prefix, *args]
        try:
            return await self._scripts[script](args=argv)
        except _UNREACHABLE as exc:
            if not idempotent:
                raise store_error(exc, where=self.where, what=what) from exc
            log.info("retrying %s on Redis at %s after %r", what, self.where, exc)
        except RedisError as exc:
            raise store_error(exc, where=self.where, what=what) from exc
        try:
            return await self._scripts[script](args=argv)
        except _ANY_ERROR as exc:
            raise store_error(exc, where=self.where, what=what) from exc

    async def read(self, what: str, read: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        """A plain read, retried once after a connection error."""
        client = self._client or await self.client()
        try:
            return await read(client)
        except _UNREACHABLE:
            pass
        except RedisError as exc:
            raise store_error(exc, where=self.where, what=what) from exc
        try:
            return await read(client)
        except _ANY_ERROR as exc:
            raise store_error(exc, where=self.where, what=what) from exc

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(*_ANY_ERROR):
                await client.aclose()


class Subscriber:
    """SUBSCRIBE to the store's channel on a dedicated connection that survives restarts."""

    def __init__(self, connection: Connection, channel: str, notifier: Notifier) -> None:
        self.connection = connection
        self.channel = channel
        self.notifier = notifier
        self._client: aioredis.Redis | None = None
        self._pubsub: PubSub | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
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
                    self.notifier.notify()
            elif now - quiet_since >= HEALTH_SECONDS:
                quiet_since = now
                await self._pubsub.ping()  # an idle, dead connection fails here or next read

    async def _resubscribe(self) -> None:
        delay = 0.05
        while True:
            await self._drop()
            try:
                await self._subscribe()
            except _ANY_ERROR as exc:
                log.debug("pub/sub to %s not back yet: %r", self.connection.where, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_DELAY)
                continue
            log.info("pub/sub connection to %s re-established", self.connection.where)
            self.notifier.notify()  # messages published while away are lost: waiters re-check
            return

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
