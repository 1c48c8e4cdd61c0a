"""The Redis store (redis.asyncio): `store` (the `Store` methods), `connection` (the pool, errors,
pub/sub), `scripts` (the key layout and the Lua scripts)."""

from ergon.storage.redis.store import DEFAULT_PREFIX, RedisStore

__all__ = ["DEFAULT_PREFIX", "RedisStore"]
