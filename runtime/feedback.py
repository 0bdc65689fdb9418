"""Feedback: reported misroutes (message, expected route) kept for calibration.

With Redis configured they go to a capped Redis list (``LPUSH`` + ``LTRIM``) shared
by all replicas; otherwise, or while Redis fails, to a bounded in-process buffer.
Either way nothing grows without bound.
"""

from __future__ import annotations

import time
from collections import deque

from pydantic import BaseModel, ConfigDict, Field
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from routermesh.runtime.metrics import RouterMetrics

FEEDBACK_KEY = "router-mesh:feedback:"
MAX_FEEDBACK = 10_000


class FeedbackRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    message: str
    expected_route: str
    decided_route: str | None = None
    config_hash: str
    route_table_version: str
    received_at: float = Field(default_factory=time.time)


class MemoryFeedback:
    backend = "memory"

    def __init__(self, max_records: int = MAX_FEEDBACK) -> None:
        self.records: deque[FeedbackRecord] = deque(maxlen=max_records)

    async def add(self, record: FeedbackRecord) -> str:
        self.records.append(record)
        return self.backend

    async def close(self) -> None:
        return None


class RedisFeedback:
    """Redis list per mesh, capped at ``max_records``; falls back to memory on errors."""

    backend = "redis"

    def __init__(
        self,
        url: str,
        mesh: str,
        metrics: RouterMetrics,
        *,
        max_records: int = MAX_FEEDBACK,
        timeout_seconds: float = 0.2,
    ) -> None:
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds
        )
        self.key = FEEDBACK_KEY + mesh
        self._max = max_records
        self._metrics = metrics
        self.fallback = MemoryFeedback(max_records)

    async def add(self, record: FeedbackRecord) -> str:
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.lpush(self.key, record.model_dump_json())
                pipe.ltrim(self.key, 0, self._max - 1)
                await pipe.execute()
        except (RedisError, OSError):
            self._metrics.cache_errors.labels(backend="redis", operation="feedback").inc()
            return await self.fallback.add(record)
        return self.backend

    async def close(self) -> None:
        await self._client.aclose()
