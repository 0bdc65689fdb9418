"""The decision cache: keys, the in-process LRU, and Redis (a real redis-server) with its
fallback through an outage and back."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis

from routermesh.runtime.cache import (
    CachedDecision,
    MemoryCache,
    RedisCache,
    cache_key,
    normalize_message,
)
from routermesh.runtime.metrics import RouterMetrics
from tests.support import RedisProcess, needs_redis

DECISION = CachedDecision(route="proxmox", layer="l1", confidence=0.93)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_keys_normalize_the_message_and_include_the_route_table_version() -> None:
    assert normalize_message("  Restart   VM\t104 ") == "restart vm 104"
    assert normalize_message("\uff36\uff2d") == "vm"  # NFKC folds full-width letters
    key = cache_key("Restart VM 104", "v1")
    assert key == cache_key("restart  vm 104", "v1")
    assert key != cache_key("Restart VM 104", "v2")
    assert key != cache_key("Restart VM 105", "v1")
    assert key.startswith("router-mesh:decision:") and "restart" not in key


async def test_memory_cache_expires_entries() -> None:
    clock = FakeClock()
    cache = MemoryCache(clock=clock)
    await cache.set("k", DECISION, ttl_seconds=10)
    clock.now += 9.9
    assert await cache.get("k") == DECISION
    clock.now += 0.2
    assert await cache.get("k") is None and len(cache) == 0


async def test_memory_cache_evicts_least_recently_used() -> None:
    cache = MemoryCache(max_entries=2)
    await cache.set("a", DECISION, 60)
    await cache.set("b", DECISION, 60)
    assert await cache.get("a") == DECISION  # a is now the most recent
    await cache.set("c", DECISION, 60)
    assert await cache.get("b") is None
    assert await cache.get("a") == DECISION and await cache.get("c") == DECISION
    with pytest.raises(ValueError, match="at least 1"):
        MemoryCache(max_entries=0)


@pytest.fixture
async def metrics() -> AsyncIterator[RouterMetrics]:
    yield RouterMetrics()


def _errors(metrics: RouterMetrics, operation: str) -> float:
    value = metrics.registry.get_sample_value(
        "router_cache_errors_total", {"backend": "redis", "operation": operation}
    )
    return value or 0.0


@needs_redis
async def test_redis_shares_decisions_between_replicas(
    redis_server: RedisProcess, metrics: RouterMetrics
) -> None:
    one = RedisCache(redis_server.url, metrics)
    two = RedisCache(redis_server.url, metrics)
    try:
        assert await one.ping()
        await one.set("k", DECISION, ttl_seconds=3600)
        assert await two.get("k") == DECISION
        ttl = redis.Redis(port=redis_server.port).ttl("k")
        assert 3590 <= ttl <= 3600
    finally:
        await one.close()
        await two.close()


@needs_redis
async def test_a_replica_answers_from_memory_what_it_wrote_or_read(
    redis_server: RedisProcess, metrics: RouterMetrics
) -> None:
    clock = FakeClock()
    one = RedisCache(redis_server.url, metrics)
    two = RedisCache(redis_server.url, metrics, fallback=MemoryCache(clock=clock))
    server = redis.Redis(port=redis_server.port)
    try:
        await one.set("mine", DECISION, ttl_seconds=3600)
        server.delete("mine")
        assert await one.get("mine") == DECISION  # its own write: no round trip

        await one.set("shared", DECISION, ttl_seconds=3600)
        await one.set("brief", DECISION, ttl_seconds=5)  # e.g. an escalation after a failure
        assert await two.get("shared") == DECISION  # read from Redis once...
        assert await two.get("brief") == DECISION
        server.delete("shared", "brief")
        assert await two.get("shared") == DECISION  # ...then kept in process
        assert await two.get("brief") == DECISION
        clock.now += 5  # what Redis still kept it for, not longer
        assert await two.get("brief") is None
        assert await two.get("shared") == DECISION
        assert await two.get("never") is None
    finally:
        await one.close()
        await two.close()


async def test_the_configured_in_process_cache_is_the_one_used(metrics: RouterMetrics) -> None:
    bounded = MemoryCache(max_entries=2)
    cache = RedisCache("redis://127.0.0.1:1/0", metrics, fallback=bounded)
    assert cache.fallback is bounded  # empty, yet not replaced by a default one
    await cache.close()


@needs_redis
async def test_damaged_entries_are_misses(
    redis_server: RedisProcess, metrics: RouterMetrics
) -> None:
    redis.Redis(port=redis_server.port).set("k", b"\xff not json")
    cache = RedisCache(redis_server.url, metrics)
    try:
        assert await cache.get("k") is None
        assert _errors(metrics, "decode") == 1
        await cache.fallback.set("k", DECISION, 60)  # e.g. written during an outage
        assert await cache.get("k") == DECISION
    finally:
        await cache.close()


@needs_redis
async def test_redis_outage_falls_back_and_recovers(
    redis_server: RedisProcess, metrics: RouterMetrics
) -> None:
    clock = FakeClock()
    cache = RedisCache(redis_server.url, metrics, retry_after_seconds=5, clock=clock)
    try:
        await cache.set("before", DECISION, 3600)
        redis.Redis(port=redis_server.port).set("elsewhere", DECISION.model_dump_json())
        redis_server.stop()

        # Outage: this replica's decisions are answered in process; one another replica
        # wrote is a miss, and the error is metered.
        assert await cache.get("before") == DECISION
        assert await cache.get("elsewhere") is None
        assert _errors(metrics, "get") == 1 and not cache.available
        await cache.set("during", DECISION, 3600)  # skipped while backing off
        assert await cache.get("during") == DECISION
        assert not await cache.ping()

        redis_server.start()
        clock.now += 6
        assert cache.available
        # The first call after the restart may still hit the dead connection; the
        # client reconnects by itself on the next one.
        for _ in range(3):
            await cache.set("after", DECISION, 3600)
            if redis.Redis(port=redis_server.port).get("after") is not None:
                break
            clock.now += 6
        assert redis.Redis(port=redis_server.port).get("after") is not None
        assert await cache.ping()
    finally:
        await cache.close()
