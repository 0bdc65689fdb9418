"""Feedback: reported outcomes (message, expected route) kept for learning and calibration.

With Redis configured they go to a capped Redis list (``LPUSH`` + ``LTRIM``) shared
by all replicas; otherwise, or while Redis fails, to a bounded in-process buffer.
Either way nothing grows without bound.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from routermesh.runtime.cache import redis_client
from routermesh.runtime.metrics import RouterMetrics

FEEDBACK_KEY = "router-mesh:feedback:"
MAX_FEEDBACK = 10_000
MAX_STORED_CHARS = 2_000
"""Stored message length: what the layers read; bounds the buffer at ~20 M characters."""


FeedbackSource = Literal["api", "answer", "tool_call"]


class FeedbackRecord(BaseModel):
    # Records in the shared list may come from pods of a newer release: their new fields
    # are ignored, not the whole record.
    model_config = ConfigDict(extra="ignore", frozen=True)

    message: str = Field(max_length=MAX_STORED_CHARS)
    expected_route: str
    decided_route: str | None = None
    config_hash: str
    route_table_version: str
    received_at: float = Field(default_factory=time.time)
    plan: tuple[str, ...] = Field(
        default=(),
        description="The plan of the decision reported on (a multi-step escalation), when "
        "it was still cached.",
    )
    source: str | None = Field(
        default=None,
        max_length=32,
        description="Who reported it (:data:`FeedbackSource`): ``api`` (POST /v1/feedback), "
        "``answer`` (a dispatched answer's X-Router-Expected-Route), ``tool_call`` (the "
        "tools an agent called through /mcp after an unsure answer: inferred, not said). "
        "None: a record stored by a release that did not keep it. Any string reads: a "
        "newer release may name a source this one does not know.",
    )
    verdicts: tuple[tuple[str, str, float], ...] = Field(
        default=(),
        description="(layer, route, confidence) recorded with the decision, when the "
        "decision was still cached: the outcomes adaptive thresholds learn from.",
    )

    @property
    def misroute(self) -> bool:
        return self.decided_route != self.expected_route

    def learnable(self, escalation_route: str) -> bool:
        """An example for L0: a misroute, or a request reported with the escalation route
        (the reasoning endpoint's own, outside every server, whatever was decided). A
        confirmed server route is an outcome for the adaptive thresholds, not an example
        (it would only churn the cache); so is a confirmed multi-step escalation: its
        parts are servers' tasks, and as an example of the escalation route its words
        would pull those parts, and so the plan, away from the servers."""
        if self.expected_route == escalation_route:
            return not self.plan  # a plan is a multi-step escalation's, whatever was decided
        return self.misroute


class MemoryFeedback:
    backend = "memory"

    def __init__(self, max_records: int = MAX_FEEDBACK) -> None:
        self.records: deque[FeedbackRecord] = deque(maxlen=max_records)

    async def add(self, record: FeedbackRecord) -> str:
        self.records.append(record)
        return self.backend

    async def recent(self, limit: int) -> list[FeedbackRecord]:
        """The newest ``limit`` records, newest first."""
        return list(reversed(self.records))[:limit]

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
        self._client: aioredis.Redis = redis_client(url, timeout_seconds)
        self.key = FEEDBACK_KEY + mesh
        self._max = max_records
        self._metrics = metrics
        self.fallback = MemoryFeedback(max_records)

    async def add(self, record: FeedbackRecord) -> str:
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                # Defaults left out: a pod of the release before reads what it knows.
                pipe.lpush(self.key, record.model_dump_json(exclude_defaults=True))
                pipe.ltrim(self.key, 0, self._max - 1)
                await asyncio.wait_for(pipe.execute(), 1.0)
        except (RedisError, OSError, TimeoutError):
            self._metrics.cache_errors.labels(backend="redis", operation="feedback").inc()
            return await self.fallback.add(record)
        return self.backend

    async def recent(self, limit: int) -> list[FeedbackRecord]:
        """The newest ``limit`` records of every replica, newest first (this replica's
        buffer while Redis fails); records that do not parse are skipped."""
        try:
            raw = await asyncio.wait_for(self._client.lrange(self.key, 0, limit - 1), 1.0)
        except (RedisError, OSError, TimeoutError):
            self._metrics.cache_errors.labels(backend="redis", operation="feedback_read").inc()
            return await self.fallback.recent(limit)
        records = []
        for item in raw:
            try:
                records.append(FeedbackRecord.model_validate_json(item))
            except ValueError:
                continue
        return records

    async def close(self) -> None:
        await self._client.aclose()
