"""Sends eval rows to a running orchestrator's ``/v1/route`` and records the answers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import httpx

from routermesh_bench.records import LayerVerdict, Record
from routermesh_bench.stack import EvalRow

log = logging.getLogger("routermesh_bench")

PROGRESS_SECONDS = 10.0


class Progress:
    """A JSON log line every few seconds: done, rate, ETA."""

    def __init__(self, what: str, total: int) -> None:
        self.what = what
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self._last = self.started

    def step(self, count: int = 1) -> None:
        self.done += count
        now = time.monotonic()
        if now - self._last >= PROGRESS_SECONDS or self.done == self.total:
            self._last = now
            rate = self.done / max(now - self.started, 1e-9)
            log.info(
                f"{self.what}: {self.done}/{self.total}",
                extra={
                    "event": "bench_progress",
                    "what": self.what,
                    "done": self.done,
                    "total": self.total,
                    "per_second": round(rate, 2),
                    "eta_s": round((self.total - self.done) / rate, 1) if rate else None,
                },
            )


async def route_rows(
    url: str,
    rows: Sequence[EvalRow],
    *,
    concurrency: int = 1,
    all_layers: bool = True,
    what: str = "quality",
    timeout: float = 120.0,
) -> list[Record]:
    """Route every row through ``url`` with ``explain`` (each layer's verdict recorded).

    A non-200 answer is an error of the router under test and stops the run.
    """
    progress = Progress(what, len(rows))
    limit = asyncio.Semaphore(concurrency)
    results: list[Record | None] = [None] * len(rows)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, trust_env=False) as client:

        async def one(index: int, row: EvalRow) -> None:
            async with limit:
                started = time.perf_counter()
                response = await client.post(
                    "/v1/route",
                    json={"message": row.text, "explain": True, "all_layers": all_layers},
                )
                client_ms = (time.perf_counter() - started) * 1000
            if response.status_code != httpx.codes.OK:
                raise RuntimeError(
                    f"/v1/route answered {response.status_code}: {response.text[:300]}"
                )
            body = response.json()
            results[index] = Record(
                text=row.text,
                gold=row.gold,
                in_scope=row.in_scope,
                kind=row.kind,
                gold_plan=row.plan,
                route=body["route"],
                layer=body["layer"],
                confidence=body["confidence"],
                escalation_reason=body["escalation_reason"],
                plan=tuple(body.get("plan") or ()),
                trace=tuple(LayerVerdict.model_validate(t) for t in body["trace"] or ()),
                latency_ms=body["latency_ms"],
                client_ms=round(client_ms, 3),
            )
            progress.step()

        await asyncio.gather(*(one(i, row) for i, row in enumerate(rows)))
    return [r for r in results if r is not None]
