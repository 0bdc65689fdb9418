"""``router-mesh bench perf``: the real local stack's latency, throughput, memory, start.

The stack is local mode's pod (model servers and orchestrator as processes, the
packaged models when the configured sources cannot be reached). Measured:

- start: each process from spawn to its health endpoint answering, and the whole
  pod from ``router-mesh local``'s start to ``/readyz``;
- uncached decisions at concurrency 1 (``explain``, so the cache is bypassed and
  each layer's time is reported): cascade time by deciding layer, each layer's
  model time, and the orchestrator's overhead (client time minus layer time);
- cache hits at concurrency 1, in-process and Redis (a second orchestrator on the
  same model servers with a Redis cache);
- a replay of held-out messages with about half repeated, on a fresh cache;
- throughput at concurrency 1, 8 and 32, uncached and cached;
- RSS of each process tree after the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from routermesh import bootstrap
from routermesh.local import Child, LocalOptions, LocalPod, write_config
from routermesh.runtime.contract.config import CacheConfig, RouterConfig
from routermesh_bench import metrics, plots, wrk
from routermesh_bench.client import Progress
from routermesh_bench.quality import machine
from routermesh_bench.records import dumps

log = logging.getLogger("routermesh_bench")

SEED_MS = {"l1": 20.0, "l2": 50.0, "cache": 5.0}
SEED_END_TO_END_MS = {"p50": 25.0, "p95": 75.0}
SEED_MEMORY_MIB = {"orchestrator": 512, "l1": 512, "l2": 2048}
CONCURRENCY = (1, 8, 32)


@dataclass
class PerfOptions:
    files: list[Path]
    messages: Path
    out: Path
    requests: int = 64
    cached_requests: int = 400
    port: int = 18090
    models_dir: Path = Path(".cache/models")
    seed: int = 0
    disable: tuple[str, ...] = ()
    workers: int = 1
    """Orchestrator processes sharing the port (``router-mesh local --workers``)."""
    redis_url: str | None = None


@dataclass
class Answer:
    layer: str
    latency_ms: float
    client_ms: float
    layer_ms: dict[str, float] = field(default_factory=dict)
    escalation_reason: str | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def tree_rss_mib(pid: int) -> float:
    """RSS of ``pid`` and all its descendants (from /proc), MiB."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    total_kib = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        with contextlib.suppress(OSError):
            for line in (Path("/proc") / str(current) / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
    return round(total_kib / 1024, 1)


class HealthWatch(threading.Thread):
    """Records when each URL first answers 200 (process start times)."""

    def __init__(self, urls: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.urls = urls
        self.first_ok: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=1.0, trust_env=False) as client:
            while not self.stop.is_set() and len(self.first_ok) < len(self.urls):
                for name, url in self.urls.items():
                    if name in self.first_ok:
                        continue
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get(url).status_code == httpx.codes.OK:
                            self.first_ok[name] = time.monotonic()
                self.stop.wait(0.05)


async def _send(
    url: str, messages: list[str], concurrency: int, *, explain: bool, what: str
) -> tuple[list[Answer], float]:
    progress = Progress(what, len(messages))
    limit = asyncio.Semaphore(concurrency)
    answers: list[Answer] = []
    async with httpx.AsyncClient(
        base_url=url,
        timeout=120.0,
        trust_env=False,
        limits=httpx.Limits(max_connections=max(concurrency, 1)),
    ) as client:

        async def one(message: str) -> None:
            async with limit:
                started = time.perf_counter()
                response = await client.post(
                    "/v1/route", json={"message": message, "explain": explain}
                )
                client_ms = (time.perf_counter() - started) * 1000
            if response.status_code != httpx.codes.OK:
                raise RuntimeError(f"/v1/route answered {response.status_code}")
            body = response.json()
            answers.append(
                Answer(
                    layer=body["layer"],
                    latency_ms=body["latency_ms"],
                    client_ms=client_ms,
                    layer_ms={t["layer"]: t["ms"] for t in body["trace"] or ()},
                    escalation_reason=body["escalation_reason"],
                )
            )
            progress.step()

        started = time.perf_counter()
        await asyncio.gather(*(one(m) for m in messages))
        wall = time.perf_counter() - started
    return answers, wall


def send(
    url: str, messages: list[str], concurrency: int = 1, *, explain: bool, what: str
) -> tuple[list[Answer], float]:
    return asyncio.run(_send(url, messages, concurrency, explain=explain, what=what))


def _cycle(messages: list[str], count: int) -> list[str]:
    return [messages[i % len(messages)] for i in range(count)]


def replay_stream(messages: list[str], rng: random.Random) -> list[str]:
    """Every message once, in order, and as many repeats of already-seen ones mixed in at
    random places: half of the stream repeats."""
    kinds = ["new"] * len(messages) + ["repeat"] * len(messages)
    rng.shuffle(kinds)
    if kinds:
        kinds.remove("new")  # a repeat needs something seen before it
        kinds.insert(0, "new")
    stream: list[str] = []
    pending = iter(messages)
    seen: list[str] = []
    for kind in kinds:
        if kind == "new":
            seen.append(next(pending))
            stream.append(seen[-1])
        else:
            stream.append(rng.choice(seen))
    return stream


class ExtraOrchestrator:
    """Another orchestrator process on the same model servers, with its own config."""

    def __init__(self, config: RouterConfig, folder: Path, port: int, models_dir: Path) -> None:
        write_config(config, folder)
        self.url = f"http://127.0.0.1:{port}"
        self.child = Child(
            "orchestrator-extra",
            [
                sys.executable,
                "-m",
                "routermesh.cli",
                "orchestrator",
                "--config-dir",
                str(folder),
                "--models-dir",
                str(models_dir),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
        )

    def __enter__(self) -> ExtraOrchestrator:
        self.child.start()
        deadline = time.monotonic() + 300
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}/readyz").status_code == httpx.codes.OK:
                        return self
                time.sleep(0.2)
        self.child.stop()
        raise RuntimeError("the extra orchestrator did not get ready")

    def __exit__(self, *_: object) -> None:
        self.child.stop()


class RedisServer:
    def __init__(self, binary: str, port: int) -> None:
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process = subprocess.Popen(  # noqa: S603 - a local binary we found
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def flush(self) -> None:
        import redis  # noqa: PLC0415

        redis.Redis.from_url(self.url).flushall()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def _by_layer(answers: list[Answer]) -> dict[str, dict[str, Any]]:
    layers = sorted({a.layer for a in answers})
    return {
        name: {
            **metrics.latency_summary([a.latency_ms for a in answers if a.layer == name]),
            "share": round(sum(a.layer == name for a in answers) / len(answers), 4),
        }
        for name in layers
    }


def _model_time(answers: list[Answer]) -> dict[str, Any]:
    names = sorted({n for a in answers for n in a.layer_ms})
    return {
        n: metrics.latency_summary([a.layer_ms[n] for a in answers if n in a.layer_ms])
        for n in names
    }


def _throughput(
    url: str, messages: list[str], count: int, *, explain: bool
) -> list[dict[str, Any]]:
    points = []
    for concurrency in CONCURRENCY:
        kind = "uncached" if explain else "cached"
        answers, wall = send(
            url,
            _cycle(messages, count),
            concurrency,
            explain=explain,
            what=f"throughput {kind} c={concurrency}",
        )
        points.append(
            {
                "concurrency": concurrency,
                "requests": len(answers),
                "seconds": round(wall, 3),
                "per_second": round(len(answers) / wall, 2),
                "client_ms": metrics.latency_summary([a.client_ms for a in answers]),
                "decided_by": dict(Counter(a.layer for a in answers)),
                "escalation_reasons": dict(
                    Counter(a.escalation_reason for a in answers if a.escalation_reason)
                ),
            }
        )
    return points


WRK_SECONDS = 10.0


def _server_side(url: str, messages: list[str]) -> dict[str, Any] | None:
    """The same paths through wrk, a C client that uses a fraction of a core here: cached
    decisions at concurrency 1, 8 and 32, and fresh ones (every request new) at 1 and 8.
    The Python client's figures above are what such a client sees; these are the
    server's. None without wrk (apt-get install wrk)."""
    if wrk.available() is None:
        log.warning("wrk is not installed: no server-side figures")
        return None
    points: dict[str, Any] = {"cached": [], "fresh": []}
    for concurrency in CONCURRENCY:
        points["cached"].append(
            wrk.run(
                wrk.WrkOptions(
                    url=url,
                    messages=messages,
                    connections=concurrency,
                    threads=min(concurrency, 2),
                    seconds=WRK_SECONDS,
                )
            )
        )
    for concurrency in CONCURRENCY[:2]:
        points["fresh"].append(
            wrk.run(
                wrk.WrkOptions(
                    url=url,
                    messages=messages,
                    connections=concurrency,
                    threads=min(concurrency, 2),
                    seconds=WRK_SECONDS,
                    fresh_every=1,
                )
            )
        )
    return points


def _hits(answers: list[Answer]) -> dict[str, Any]:
    """Cache-hit latency over the answers the cache gave (a decision that followed a layer
    failure is never cached, so a repeat of it is no hit)."""
    hits = [a for a in answers if a.layer == "cache"]
    return {**_summary(hits), "hit_ratio": round(len(hits) / len(answers), 4) if answers else None}


def _summary(answers: list[Answer]) -> dict[str, Any]:
    return {
        "client_ms": metrics.latency_summary([a.client_ms for a in answers]),
        "latency_ms": metrics.latency_summary([a.latency_ms for a in answers]),
        "decided_by": dict(Counter(a.layer for a in answers)),
    }


def run_perf(options: PerfOptions) -> dict[str, Any]:
    options.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(options.seed)  # noqa: S311 - sampling
    messages = [row.text for row in bootstrap.read_rows(options.messages)]
    if not messages:
        raise ValueError(f"{options.messages}: no messages")
    rng.shuffle(messages)
    port = options.port
    pod = LocalPod(
        LocalOptions(
            files=options.files,
            port=port,
            models_dir=options.models_dir,
            state_dir=options.out / "state",
            log_level="warning",
            disable=options.disable,
            workers=options.workers,
            redis_url=options.redis_url,
        )
    )
    watch = HealthWatch(
        {
            "l1": f"http://127.0.0.1:{port + 1}/health",
            "l2": f"http://127.0.0.1:{port + 2}/health",
            "orchestrator": f"http://127.0.0.1:{port}/healthz",
        }
    )
    watch.start()
    began = time.monotonic()
    config = pod.start()
    pod_ready_s = time.monotonic() - began
    watch.stop.set()
    result: dict[str, Any] = {
        "machine": machine(),
        "files": [str(f) for f in options.files],
        "disabled": list(options.disable),
        "workers": options.workers,
        "cache": "redis" if options.redis_url else "in-process",
    }
    try:
        started = {c.name: c.started_at for c in pod.children}
        result["start_seconds"] = {
            **{
                name: round(watch.first_ok[name] - started[name], 2)
                for name in started
                if name in watch.first_ok
            },
            "pod_ready": round(pod_ready_s, 2),
        }
        result["layers"] = [
            {
                "name": layer.name,
                "engine": layer.engine,
                "model": layer.model.path,
                "threshold": layer.threshold,
                "timeout_ms": layer.timeout_ms,
            }
            for layer in config.layers
            if layer.enabled
        ]
        url = pod.url
        uncached, _ = send(
            url, _cycle(messages, options.requests), explain=True, what="uncached c=1"
        )
        result["uncached"] = _summary(uncached)
        result["latency_by_layer"] = _by_layer(uncached)
        result["model_time_ms"] = _model_time(uncached)
        result["orchestrator_overhead_ms"] = metrics.latency_summary(
            [a.client_ms - sum(a.layer_ms.values()) for a in uncached]
        )
        send(url, messages, explain=False, what="fill the in-process cache")
        hits, _ = send(
            url, _cycle(messages, options.cached_requests), explain=False, what="cache hits"
        )
        result["cache_hit"] = {"memory": _hits(hits)}
        result["throughput"] = {
            "uncached": _throughput(url, messages, options.requests, explain=True),
            "cached": _throughput(url, messages, options.cached_requests, explain=False),
        }
        result["server_side"] = _server_side(url, messages)
        result["replay"] = _replay(config, options, messages, rng)
        result["cache_hit"]["redis"] = result["replay"].pop("redis_hits", None)
        result["rss_mib"] = {c.name: tree_rss_mib(c.process.pid) for c in pod.children if c.process}
    finally:
        pod.stop()
    hit = result["cache_hit"]["memory"]["latency_ms"]
    result["latency_by_layer"]["cache"] = {**hit, "share": None}
    result["seed"] = {**SEED_MS, **{f"end_to_end_{k}": v for k, v in SEED_END_TO_END_MS.items()}}
    result["seed_memory_mib"] = SEED_MEMORY_MIB
    (options.out / "perf.json").write_text(dumps(result))
    plots.perf_plots(result, options.out)
    return result


def _replay(
    config: RouterConfig, options: PerfOptions, messages: list[str], rng: random.Random
) -> dict[str, Any]:
    """The replay on a fresh cache: Redis when redis-server is installed, else in-process."""
    stream = replay_stream(messages, rng)
    binary = shutil.which("redis-server")
    folder = options.out / "state" / "extra-config"
    out: dict[str, Any] = {"messages": len(stream), "unique": len(messages)}
    if binary is None:
        with ExtraOrchestrator(config, folder, _free_port(), options.models_dir) as extra:
            answers, _ = send(extra.url, stream, explain=False, what="replay")
        return {**out, "cache": "memory", **_summary(answers), "redis_hits": None}
    redis = RedisServer(binary, _free_port())
    try:
        with_redis = config.model_copy(
            update={"cache": CacheConfig(backend="redis", redis_url=redis.url)}
        ).sealed()
        with ExtraOrchestrator(with_redis, folder, _free_port(), options.models_dir) as extra:
            send(extra.url, messages, explain=False, what="fill the Redis cache")
            hits, _ = send(
                extra.url,
                _cycle(messages, options.cached_requests),
                explain=False,
                what="Redis cache hits",
            )
        # A fresh cache for the replay: Redis emptied, and a new process (the old one's
        # in-process fallback holds every decision it wrote).
        redis.flush()
        fresh = ExtraOrchestrator(with_redis, folder, _free_port(), options.models_dir)
        with fresh:
            answers, _ = send(fresh.url, stream, explain=False, what="replay")
    finally:
        redis.stop()
    return {**out, "cache": "redis", **_summary(answers), "redis_hits": _hits(hits)}
