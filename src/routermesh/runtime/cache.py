"""The decision cache: decisions (route, deciding layer, confidence), never responses.

Keys hash the normalized message together with the cascade's version (the config's
``route_table_version`` plus the content of unpinned sources, see
:mod:`routermesh.runtime.content`), so a change of routes, examples, models or
thresholds never serves a stale decision, while a target or timeout change keeps the
cache warm.

:class:`MemoryCache` is an in-process LRU with a TTL. :class:`RedisCache` shares
decisions across replicas through Redis and never fails a request. Every ``set`` writes
both Redis and the in-process cache, and a lookup reads the in-process copy first (a key
never changes meaning, so a hit costs no round trip); what another replica decided comes
from Redis and is kept in process for as long as Redis still keeps it. Every Redis error
is metered, the call is answered in process, and Redis is tried again after a short
back-off; redis-py reconnects by itself once it is back.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from routermesh.runtime.metrics import RouterMetrics

KEY_PREFIX = "router-mesh:decision:"

Clock = Callable[[], float]


def normalize_message(message: str) -> str:
    """Unicode NFKC, case-folded, whitespace runs collapsed: trivially different spellings
    of one request share a cache entry."""
    return " ".join(unicodedata.normalize("NFKC", message).casefold().split())


def cache_key(message: str, route_table_version: str) -> str:
    digest = hashlib.sha256(
        f"{route_table_version}\0{normalize_message(message)}".encode()
    ).hexdigest()
    return KEY_PREFIX + digest


class CachedDecision(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    route: str
    layer: str = Field(pattern=r"^[a-z][a-z0-9]*$", description="deciding layer or 'escalated'")
    confidence: float = Field(ge=0.0, le=1.0)
    plan: tuple[str, ...] = Field(
        default=(), description="The routes a multi-step escalation needs, in order."
    )
    verdicts: tuple[tuple[str, str, float], ...] = Field(
        default=(),
        description="(layer, route, confidence) of each layer that answered: what feedback "
        "on this message measures (adaptive thresholds).",
    )


class DecisionCache(Protocol):
    backend: str

    async def get(self, key: str) -> CachedDecision | None: ...

    async def set(self, key: str, decision: CachedDecision, ttl_seconds: int) -> None: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


class MemoryCache:
    """LRU with per-entry expiry; bounded by ``max_entries``."""

    backend = "memory"

    def __init__(self, max_entries: int = 10_000, clock: Clock = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, CachedDecision]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> CachedDecision | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, decision = entry
        if expires <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return decision

    async def set(self, key: str, decision: CachedDecision, ttl_seconds: int) -> None:
        self._entries[key] = (self._clock() + ttl_seconds, decision)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._entries.clear()


def redis_client(url: str, timeout_seconds: float) -> aioredis.Redis:
    """A Redis client that fails fast: no retries (redis-py retries connection errors with
    back-off by default, seconds per call during an outage), short socket timeouts.
    Raises ``ValueError`` for a malformed URL."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        health_check_interval=30,
        retry=Retry(NoBackoff(), 0),
    )


class RedisCache:
    """Decisions shared through Redis, with this replica's copies in process: read there
    first, written to both; a Redis outage never fails a request."""

    backend = "redis"

    def __init__(
        self,
        url: str,
        metrics: RouterMetrics,
        *,
        fallback: MemoryCache | None = None,
        timeout_seconds: float = 0.05,
        retry_after_seconds: float = 1.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self._client = redis_client(url, timeout_seconds)
        self._timeout = timeout_seconds
        self._metrics = metrics
        # Not `fallback or ...`: an empty MemoryCache is falsy (it has a length).
        self.fallback = fallback if fallback is not None else MemoryCache()
        self._retry_after = retry_after_seconds
        self._clock = clock
        self._down_until = 0.0

    @property
    def available(self) -> bool:
        """False while backing off after a failure (answers come from the fallback)."""
        return self._clock() >= self._down_until

    def _failed(self, operation: str) -> None:
        self._metrics.cache_errors.labels(backend="redis", operation=operation).inc()
        self._down_until = self._clock() + self._retry_after

    async def get(self, key: str) -> CachedDecision | None:
        """This replica's copy first, then Redis. A key carries every version that changes
        an answer (route table, learned examples, adapted thresholds, loaded content), so a
        decision this replica wrote or read stays right for as long as it lives: served
        from memory, a hit costs no network round trip. What another replica decided is
        read from Redis once and kept here for the time Redis still keeps it (a failure's
        short TTL included)."""
        local = await self.fallback.get(key)
        if local is not None or not self.available:
            return local
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.get(key)
                pipe.pttl(key)
                raw, pttl = await asyncio.wait_for(pipe.execute(), self._timeout * 2)
        except (RedisError, OSError, TimeoutError):
            self._failed("get")
            return None
        if raw is None:
            return None
        try:
            decision = CachedDecision.model_validate_json(raw)
        except ValidationError:
            # Written by another version, or damaged: a miss, never an error.
            self._metrics.cache_errors.labels(backend="redis", operation="decode").inc()
            return None
        if isinstance(pttl, int) and pttl >= 1000:
            await self.fallback.set(key, decision, pttl // 1000)
        return decision

    async def set(self, key: str, decision: CachedDecision, ttl_seconds: int) -> None:
        await self.fallback.set(key, decision, ttl_seconds)
        if not self.available:
            return
        try:
            await asyncio.wait_for(
                self._client.set(key, decision.model_dump_json(), ex=ttl_seconds),
                self._timeout * 2,
            )
        except (RedisError, OSError, TimeoutError):
            self._failed("set")

    async def ping(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self._client.ping(), self._timeout * 2))
        except (RedisError, OSError, TimeoutError):
            self._failed("ping")
            return False

    async def close(self) -> None:
        await self._client.aclose()
        await self.fallback.close()
