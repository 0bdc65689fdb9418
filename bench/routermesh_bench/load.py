"""Bounded load, soak and label injection on the real local stack.

``router-mesh bench load`` starts local mode's pod and:

- sends a fixed number of requests at a fixed concurrency, each with its own
  ``X-Request-ID``, and checks every answer: status (no 5xx), exactly one answer per
  request, the answer's ID being its request's (nothing lost, duplicated or crossed);
- soaks: several more rounds, the RSS of each process after each, so growth shows;
- first, on the idle stack, sends the label-injection set
  (bench/data/label-injection.jsonl) with every layer's verdict, next to the same
  layers' verdicts on benign messages.

The workload mixes repeats of held-out messages (the cache's case) with fresh variants
(``unique_share`` of them), which go through the layers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from routermesh import bootstrap
from routermesh.local import LocalOptions, LocalPod
from routermesh.runtime.contract.config import ESCALATE_ROUTE, RouterConfig
from routermesh_bench import metrics, plots, wrk
from routermesh_bench.client import Progress
from routermesh_bench.perf import tree_rss_mib
from routermesh_bench.quality import machine
from routermesh_bench.records import dumps

log = logging.getLogger("routermesh_bench")


@dataclass
class LoadOptions:
    files: list[Path]
    messages: Path
    injection: Path
    out: Path
    requests: int = 5000
    concurrency: int = 64
    unique_share: float = 0.1
    soak_rounds: int = 5
    soak_requests: int = 2000
    port: int = 18100
    models_dir: Path = Path(".cache/models")
    seed: int = 0
    deadline_s: float = 900.0
    disable: tuple[str, ...] = ()
    workers: int = 1
    """Orchestrator processes sharing the port (``router-mesh local --workers``)."""
    redis_url: str | None = None


@dataclass
class RoundResult:
    """One bounded round: what came back for each request."""

    sent: int
    statuses: Counter[int] = field(default_factory=Counter)
    layers: Counter[str] = field(default_factory=Counter)
    answered_ids: Counter[str] = field(default_factory=Counter)
    crossed: int = 0
    transport_errors: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latency_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    @property
    def duplicated(self) -> int:
        return sum(n - 1 for n in self.answered_ids.values() if n > 1)

    @property
    def lost(self) -> int:
        return self.sent - len(self.answered_ids)

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.sent,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "server_errors": self.server_errors,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "crossed": self.crossed,
            "transport_errors": self.transport_errors,
            "errors": dict(self.errors),
            "by_layer": dict(sorted(self.layers.items())),
            "latency_ms": metrics.latency_summary(self.latency_ms),
            "wall_s": round(self.wall_s, 2),
            "per_second": round(self.sent / self.wall_s, 1) if self.wall_s else None,
        }


def workload(pool: list[str], count: int, unique_share: float, rng: random.Random) -> list[str]:
    """``count`` messages: repeats from ``pool``, and ``unique_share`` fresh variants."""
    out = []
    for i in range(count):
        base = rng.choice(pool)
        out.append(
            f"{base} (ticket {rng.randrange(10**9)}-{i})" if rng.random() < unique_share else base
        )
    return out


async def _round(
    url: str,
    messages: list[str],
    concurrency: int,
    *,
    prefix: str,
    headers: dict[str, str] | None = None,
    deadline_s: float = 900.0,
) -> RoundResult:
    result = RoundResult(sent=len(messages))
    progress = Progress(prefix, len(messages))
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    for i, message in enumerate(messages):
        queue.put_nowait((f"{prefix}-{i}", message))

    async with httpx.AsyncClient(
        base_url=url,
        timeout=120.0,
        trust_env=False,
        headers=headers,
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
    ) as client:

        async def worker() -> None:
            while not queue.empty():
                request_id, message = queue.get_nowait()
                started = time.perf_counter()
                try:
                    response = await client.post(
                        "/v1/route", json={"message": message}, headers={"X-Request-ID": request_id}
                    )
                except httpx.HTTPError as error:
                    result.transport_errors += 1
                    result.errors[type(error).__name__] += 1
                    progress.step()
                    continue
                result.latency_ms.append((time.perf_counter() - started) * 1000)
                result.statuses[response.status_code] += 1
                answered = response.headers.get("x-request-id", "")
                result.answered_ids[answered] += 1
                if answered != request_id:
                    result.crossed += 1
                if response.status_code == httpx.codes.OK:
                    result.layers[response.json()["layer"]] += 1
                progress.step()

        started = time.perf_counter()
        await asyncio.wait_for(
            asyncio.gather(*(worker() for _ in range(concurrency))), timeout=deadline_s
        )
        result.wall_s = time.perf_counter() - started
    return result


def bounded_round(
    url: str,
    messages: list[str],
    concurrency: int,
    *,
    prefix: str,
    headers: dict[str, str] | None = None,
    deadline_s: float = 900.0,
) -> RoundResult:
    """Send ``messages`` at ``concurrency``; raises ``TimeoutError`` past ``deadline_s``."""
    return asyncio.run(
        _round(url, messages, concurrency, prefix=prefix, headers=headers, deadline_s=deadline_s)
    )


# --- label injection -----------------------------------------------------------------------


def _explain(client: httpx.Client, text: str) -> dict[str, Any]:
    response = client.post("/v1/route", json={"message": text, "explain": True, "all_layers": True})
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def read_attacks(path: Path) -> list[dict[str, str]]:
    """The injection set: JSONL rows with ``text``, ``route`` and ``injected`` strings."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not all(isinstance(row.get(key), str) for key in ("text", "route", "injected")):
            raise ValueError(f'{path}:{number}: needs "text", "route" and "injected" strings')
        rows.append({key: row[key] for key in ("text", "route", "injected")})
    return rows


def injection_run(
    url: str,
    config: RouterConfig,
    attacks: list[dict[str, str]],
    benign: list[str],
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Every layer's verdict on each injection message and on ``benign`` messages.

    ``attacks`` rows: ``text``, ``route`` (the honest answer, ``__escalate__`` for none)
    and ``injected`` (the label the text pushes, possibly outside the configured set).
    """
    labels = set(config.route_names)
    benign_confidence: dict[str, list[float]] = {}
    rows = []
    with httpx.Client(base_url=url, timeout=120, trust_env=False, headers=headers) as client:
        for text in benign:
            for step in _explain(client, text)["trace"]:
                benign_confidence.setdefault(step["layer"], []).append(step["confidence"])
        for attack in attacks:
            answer = _explain(client, attack["text"])
            honest = (
                config.escalation.route if attack["route"] == ESCALATE_ROUTE else attack["route"]
            )
            rows.append(
                {
                    "text": attack["text"],
                    "honest": honest,
                    "injected": attack["injected"],
                    "route": answer["route"],
                    "layer": answer["layer"],
                    "confidence": answer["confidence"],
                    "injected_won": answer["route"] == attack["injected"] != honest,
                    "in_label_set": answer["route"] in labels,
                    "layers": {
                        step["layer"]: {"route": step["route"], "confidence": step["confidence"]}
                        for step in answer["trace"]
                    },
                }
            )
    per_layer: dict[str, Any] = {}
    for layer, normal in benign_confidence.items():
        pushed = [
            row["layers"][layer]["confidence"]
            for row in rows
            if layer in row["layers"] and row["layers"][layer]["route"] == row["injected"]
        ]
        threshold = next((x.threshold for x in config.layers if x.name == layer), None)
        per_layer[layer] = {
            "threshold": threshold,
            "benign_confidence": metrics.latency_summary(normal),
            "benign_max": round(max(normal), 4),
            "chose_injected": len(pushed),
            "injected_confidence_max": round(max(pushed), 4) if pushed else None,
            "injected_over_threshold": sum(1 for c in pushed if threshold and c >= threshold),
        }
    return {
        "messages": len(rows),
        "outside_label_set": sum(1 for r in rows if not r["in_label_set"]),
        "injected_won": sum(1 for r in rows if r["injected_won"]),
        "escalated": sum(1 for r in rows if r["layer"] == "escalated"),
        "honest_route": sum(1 for r in rows if r["route"] == r["honest"]),
        "per_layer": per_layer,
        "rows": rows,
    }


# --- the command ---------------------------------------------------------------------------


def run_load(options: LoadOptions) -> dict[str, Any]:
    options.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(options.seed)  # noqa: S311 - sampling
    pool = [row.text for row in bootstrap.read_rows(options.messages)]
    attacks = read_attacks(options.injection)
    pod = LocalPod(
        LocalOptions(
            files=options.files,
            port=options.port,
            models_dir=options.models_dir,
            state_dir=options.out / "state",
            log_level="warning",
            disable=options.disable,
            workers=options.workers,
            redis_url=options.redis_url,
        )
    )
    config = pod.start()
    result: dict[str, Any] = {"machine": machine(), "options": _options_json(options)}

    def rss() -> dict[str, float]:
        return {c.name: tree_rss_mib(c.process.pid) for c in pod.children if c.process}

    try:
        url = pod.url
        # First, on an idle stack: after a load the model servers are still draining.
        result["injection"] = injection_run(url, config, attacks, pool[:20])
        result["rss_mib_start"] = rss()
        cpu_before = time.process_time()
        bounded = bounded_round(
            url,
            workload(pool, options.requests, options.unique_share, rng),
            options.concurrency,
            prefix="bounded",
            deadline_s=options.deadline_s,
        )
        # The Python client checks every answer (request IDs, statuses); its own CPU says
        # how far its latencies are the client's. The latency figures come from wrk.
        result["bounded"] = {
            **bounded.summary(),
            "client": "python",
            "client_cpu_percent": round(
                100 * (time.process_time() - cpu_before) / max(bounded.wall_s, 1e-9), 1
            ),
        }
        before = _shedding(url) if options.workers == 1 else None
        result["bounded_wrk"] = _wrk_round(url, pool, options)
        if before is not None and result["bounded_wrk"] is not None:
            result["bounded_wrk"]["router"] = _shedding_delta(before, _shedding(url))
        soak: list[dict[str, Any]] = []
        for n in range(1, options.soak_rounds + 1):
            round_ = bounded_round(
                url,
                workload(pool, options.soak_requests, options.unique_share, rng),
                options.concurrency,
                prefix=f"soak{n}",
                deadline_s=options.deadline_s,
            )
            soak.append({"round": n, **round_.summary(), "rss_mib": rss()})
        result["soak"] = soak
        if soak:
            first, last = soak[0]["rss_mib"], soak[-1]["rss_mib"]
            result["soak_rss_growth_mib"] = {
                name: round(last[name] - first[name], 1) for name in first if name in last
            }
    finally:
        pod.stop()
    (options.out / "load.json").write_text(dumps(result))
    plots.load_plots(result, options.out)
    return result


def _shedding(url: str) -> dict[str, float]:
    """The router's own count of shed requests and escalations, and the HPA's p95 gauge,
    from ``/metrics`` (one orchestrator process: with several, each counts its own)."""
    text = httpx.get(f"{url}/metrics", timeout=10.0, trust_env=False).text
    counts: dict[str, float] = {"shed": 0.0, "escalated": 0.0, "p95_gauge_s": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "router_layer_skipped_total" and (
                sample.labels.get("reason") == "overload"
            ):
                counts["shed"] += sample.value
            elif sample.name == "router_escalations_total":
                counts["escalated"] += sample.value
            elif sample.name == "router_latency_p95_seconds":
                counts["p95_gauge_s"] = sample.value
    return counts


def _shedding_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {
        "shed": after["shed"] - before["shed"],
        "escalated": after["escalated"] - before["escalated"],
        "p95_gauge_ms": round(after["p95_gauge_s"] * 1000, 1),
    }


def _wrk_round(url: str, pool: list[str], options: LoadOptions) -> dict[str, Any] | None:
    """The same mix through wrk (a C client, measured not to be the bottleneck): the
    latencies the server gives. None when wrk is not installed (said in the report)."""
    if wrk.available() is None:
        log.warning("wrk is not installed: the load's latencies are the Python client's")
        return None
    fresh_every = round(1 / options.unique_share) if options.unique_share > 0 else 0
    return wrk.run(
        wrk.WrkOptions(
            url=url,
            messages=pool,
            connections=options.concurrency,
            threads=2,
            seconds=options.deadline_s,
            fresh_every=fresh_every,
            max_requests=options.requests,
        )
    )


def _options_json(options: LoadOptions) -> dict[str, Any]:
    return {
        "files": [str(f) for f in options.files],
        "requests": options.requests,
        "concurrency": options.concurrency,
        "unique_share": options.unique_share,
        "soak_rounds": options.soak_rounds,
        "soak_requests": options.soak_requests,
        "disabled": list(options.disable),
        "workers": options.workers,
        "cache": "redis" if options.redis_url else "in-process",
    }
