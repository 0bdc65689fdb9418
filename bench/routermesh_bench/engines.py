"""Engine benchmark: one layer's model server, started through `router-mesh serve-model`
exactly as the pod starts it, measured with the router's real prompt and client.

    .venv/bin/python bench/engines.py --engine llamacpp --layer l1 \
        --model .cache/models/packaged/SmolLM2-135M-Instruct.Q4_1.gguf
    .venv/bin/python bench/engines.py --engine vllm --layer l1 \
        --model .cache/models/hf/smollm2-135m --python .cache/vllm-venv/bin/python

Measures: start time (spawn to the first answered decision, the prefix warm-up
included), RSS of the server's process tree (after the run, and the peak of its
largest process), and per-decision latency (p50/p95/p99 over --requests decisions at
concurrency 1, each message once, so only the prompt prefix is cached). Writes
bench/results/engines-<engine>-<layer>.json; bench/report_engines.py tabulates and plots.

Each decision is the router's judge call (``GenerativeLayer.judge``) among L0's top
candidates, as the cascade sends it: L0 (the packaged embedding model, offline) ranks
the routes for every message before the server starts. ``--candidates all`` asks
``classify`` instead (every route; it abstains without a request when the table has
more routes than the layer's ``candidates``). ``--messages`` takes the messages from a
JSONL file (``text``, ``route``) instead of the table's examples.

Tuning runs (llamacpp): ``--server-arg`` appends llama-server flags to the command
serve-model would exec (a later flag overrides an earlier one), ``--tag`` and
``--out-dir`` name the result. Every result also holds llama-server's own timings per
decision (prompt tokens evaluated after the cached prefix, prompt-eval time) and the
server log's lines on weight repacking and flash attention.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from routermesh.local import LocalOptions, ensure_models, render
from routermesh.runtime.contract.config import CONFIG_FILENAME, ModelRef, RouterConfig
from routermesh.runtime.decision import Candidate
from routermesh.runtime.embedding import EmbeddingLayer
from routermesh.runtime.generative import GenerativeLayer
from routermesh.runtime.model_server import server_command
from routermesh.runtime.prompts import PREFIX

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench/results"


def homelab(layer: str, model: Path, port: int, engine: str) -> RouterConfig:
    """The seed sample with ``layer`` served by ``engine`` from ``model`` on ``port``."""
    config = render(LocalOptions(files=[REPO / "samples/homelab"]))
    layers = tuple(
        item.model_copy(
            update={
                "url": f"http://127.0.0.1:{port}",
                "model": ModelRef(uri=model.resolve().as_uri(), path=model.name),
                "timeout_ms": 60_000,
                "engine": engine,
            }
        )
        if item.name == layer
        else item
        for item in config.layers
    )
    return config.model_copy(update={"layers": layers}).sealed()


def messages(config: RouterConfig, count: int) -> list[tuple[str, str]]:
    """Distinct messages with their expected route: the examples not shown in the prompt
    first, then variations, so no message repeats (the server caches only the prefix)."""
    pool = [(text, route.name) for route in config.routes for text in route.examples[3:]]
    pool += [(text, route.name) for route in config.routes for text in route.examples[:3]]
    out: list[tuple[str, str]] = []
    round_ = 0
    while len(out) < count:
        for text, route in pool:
            out.append((text if round_ == 0 else f"{text} (request {round_})", route))
        round_ += 1
    return out[:count]


def file_messages(path: Path, count: int) -> list[tuple[str, str]]:
    """The first ``count`` distinct messages of a JSONL file (``text``, ``route``)."""
    seen: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            seen.setdefault(row["text"], row.get("route", ""))
    if len(seen) < count:
        raise SystemExit(f"{path} has {len(seen)} distinct messages, fewer than {count}")
    return list(seen.items())[:count]


async def l0_candidates(texts: list[str]) -> list[tuple[Candidate, ...]]:
    """L0's candidates (route and nearest example) for each message, as the cascade hands
    them to a judge: the homelab sample's L0, its packaged model, offline."""
    options = LocalOptions(files=[REPO / "samples/homelab"], offline=True)
    config = ensure_models(render(options), options)
    layer = EmbeddingLayer(
        next(item for item in config.layers if item.name == "l0"), config, options.models_dir
    )
    await layer.prepare()
    if layer.error:
        raise SystemExit(f"L0 unavailable: {layer.error}")
    return [(await layer.classify(text)).candidates for text in texts]


def timing_summary(timings: list[dict[str, Any]], prefix_tokens: int) -> dict[str, Any]:
    """llama-server's ``timings`` of each decision summed up: prompt tokens per request,
    those evaluated (after the cached part), their cost per token, and whether each
    request reused at least the fixed prefix from the cache."""
    if not timings:
        return {}
    evaluated = [t["prompt_n"] for t in timings]
    cached = [t.get("cache_n", 0) for t in timings]
    prompt_ms = [t["prompt_ms"] for t in timings]
    server_ms = [t["prompt_ms"] + t.get("predicted_ms", 0.0) for t in timings]
    return {
        "prefix_tokens": prefix_tokens,
        "prompt_tokens_mean": round(
            statistics.fmean(e + c for e, c in zip(evaluated, cached, strict=True)), 1
        ),
        "evaluated_tokens": {
            "p50": statistics.median(evaluated),
            "mean": round(statistics.fmean(evaluated), 1),
            "min": min(evaluated),
            "max": max(evaluated),
        },
        "cached_tokens_mean": round(statistics.fmean(cached), 1),
        "prefix_hit_share": round(sum(c >= prefix_tokens for c in cached) / len(cached), 3),
        "ms_per_evaluated_token": round(sum(prompt_ms) / max(1, sum(evaluated)), 3),
        "prompt_ms_p50": round(statistics.median(prompt_ms), 2),
        "server_ms_p50": round(statistics.median(server_ms), 2),
    }


LOG_MARKERS = ("repack", "REPACK", "flash_attn", "n_batch", "n_ubatch", "system_info")


def log_notes(path: Path) -> list[str]:
    """The server log's lines on weight repacking, flash attention and batch sizes."""
    lines = path.read_text(errors="replace").splitlines()
    return sorted({line.strip()[-200:] for line in lines if any(m in line for m in LOG_MARKERS)})


def cpu_ticks(pid: int) -> tuple[int, int]:
    """(busy clock ticks of the whole machine, user+system ticks of ``pid`` and its
    reaped children), from /proc: their difference over a run is the CPU that other
    processes took while it ran (on a shared machine, the measurement's noise)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(value) for value in fields]
    busy = sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return busy, sum(int(value) for value in stat[11:15])


def tree_rss(pid: int) -> tuple[int, int]:
    """(sum of VmRSS over the process tree, largest VmHWM in it), bytes."""
    total = peak = 0
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        total += int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
        peak = max(peak, int(fields.get("VmHWM", "0 kB").split()[0]) * 1024)
        frontier += [int(c) for c in children]
    return total, peak


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def launch_command(
    args: argparse.Namespace, config: RouterConfig, model: Path, config_dir: Path
) -> list[str]:
    """``router-mesh serve-model`` as the pod runs it; with ``--server-arg``, the argv it
    would exec (the same function builds it) followed by the extra flags."""
    if args.server_arg:
        served = server_command(config, args.layer, model.parent, threads=args.threads)
        return [*served.argv, *args.server_arg]
    return [
        args.python,
        "-m",
        "routermesh.cli",
        "serve-model",
        "--layer",
        args.layer,
        "--config-dir",
        str(config_dir),
        "--models-dir",
        str(model.parent),
        "--threads",
        str(args.threads),
    ]


async def count_tokens(client: httpx.AsyncClient, port: int, text: str) -> int:
    """Tokens of ``text`` by llama-server's own tokenizer."""
    response = await client.post(f"http://127.0.0.1:{port}/tokenize", json={"content": text})
    return len(response.json()["tokens"])


async def decide(
    layer: GenerativeLayer,
    batch: list[tuple[str, str]],
    ranked: list[tuple[Candidate, ...]] | None,
    server_pid: int,
) -> tuple[list[float], int, dict[str, int], float]:
    """One decision per message at concurrency 1: (latencies in ms, how many matched the
    expected route, errors by reason, the share of the machine's CPU that processes
    other than this one and the server took meanwhile)."""
    busy, own = cpu_ticks(os.getpid())
    served = cpu_ticks(server_pid)[1]
    measured = time.monotonic()
    latencies: list[float] = []
    agree = 0
    errors: dict[str, int] = {}
    for index, (text, expected) in enumerate(batch, 1):
        started = time.perf_counter()
        if ranked is None:
            verdict = await layer.classify(text)
        else:
            verdict = await layer.judge(text, ranked[index - 1])
        latencies.append((time.perf_counter() - started) * 1000)
        if verdict.reason is not None and verdict.reason.is_error:
            errors[verdict.reason] = errors.get(verdict.reason, 0) + 1
        agree += verdict.route == expected
        if index % 25 == 0:
            print(  # noqa: T201
                f"  {index}/{len(batch)} p50 {statistics.median(latencies):.1f} ms", flush=True
            )
    window = (time.monotonic() - measured) * (os.cpu_count() or 1)
    busy_now, own_now = cpu_ticks(os.getpid())
    foreign = busy_now - busy - (own_now - own) - (cpu_ticks(server_pid)[1] - served)
    return latencies, agree, errors, max(0.0, foreign / os.sysconf("SC_CLK_TCK") / window)


async def workload(
    args: argparse.Namespace, config: RouterConfig
) -> tuple[list[tuple[str, str]], list[tuple[Candidate, ...]] | None]:
    """The messages with their expected routes, and L0's candidates for each (None: the
    layer classifies among all routes)."""
    if args.messages:
        batch = file_messages(Path(args.messages), args.requests)
    else:
        batch = messages(config, args.requests)
    ranked = await l0_candidates([text for text, _ in batch]) if args.candidates == "l0" else None
    return batch, ranked


async def run(args: argparse.Namespace) -> dict[str, Any]:
    port = args.port
    model = Path(args.model)
    config = homelab(args.layer, model, port, args.engine)
    layer_config = next(item for item in config.layers if item.name == args.layer)
    batch, ranked = await workload(args, config)
    out_dir = Path(args.out_dir) if args.out_dir else RESULTS
    name = args.tag or f"engines-{args.engine}-{args.layer}"
    timings: list[dict[str, Any]] = []

    async def keep_timings(response: httpx.Response) -> None:
        if response.request.url.path.endswith("/v1/completions") and response.status_code == 200:
            await response.aread()
            body = response.json()
            if "timings" in body:
                timings.append(body["timings"])

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / CONFIG_FILENAME).write_text(config.to_json())
        command = launch_command(args, config, model, Path(tmp))
        log_path = out_dir / f"{name}.log"
        log = log_path.open("wb")
        spawned = time.monotonic()
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)  # noqa: S603
        try:
            hooks = {"response": [keep_timings]}
            async with httpx.AsyncClient(trust_env=False, event_hooks=hooks) as client:
                layer = GenerativeLayer(layer_config, config, client)
                while True:
                    if server.poll() is not None:
                        raise SystemExit(f"server exited; see {log.name}")
                    if time.monotonic() - spawned > args.start_timeout:
                        raise SystemExit(f"not ready in {args.start_timeout} s; see {log.name}")
                    if await layer.ready():
                        break
                    await asyncio.sleep(0.5)
                await layer.warm()
                timings.clear()
                prefix_tokens = 0
                if args.engine == "llamacpp":
                    prefix_tokens = await count_tokens(client, port, PREFIX)
                start_seconds = time.monotonic() - spawned
                print(f"{args.engine}/{args.layer}: ready in {start_seconds:.1f} s", flush=True)  # noqa: T201
                latencies, agree, errors, foreign_share = await decide(
                    layer, batch, ranked, server.pid
                )
                rss, peak = tree_rss(server.pid)
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
    return {
        "engine": args.engine,
        "layer": args.layer,
        "model": model.name,
        "threads": args.threads,
        "requests": len(latencies),
        "start_seconds": round(start_seconds, 2),
        "rss_mib": round(rss / 2**20, 1),
        "peak_process_rss_mib": round(peak / 2**20, 1),
        "latency_ms": {
            "p50": round(statistics.median(latencies), 2),
            "p95": round(percentile(latencies, 0.95), 2),
            "p99": round(percentile(latencies, 0.99), 2),
            "mean": round(statistics.fmean(latencies), 2),
        },
        "top_label_matches_example_route": round(agree / len(latencies), 3),
        "errors": errors,
        "prompt_chars": len(layer.prompt("x")),
        "command": " ".join(command),
        "tag": name,
        "foreign_cpu_share": round(foreign_share, 3),
        "candidates": args.candidates,
        "messages": args.messages or "table examples",
        "server_args": args.server_arg or [],
        "server_timings": timing_summary(timings, prefix_tokens),
        "server_log": log_notes(log_path),
        "latencies_ms": [round(value, 2) for value in latencies],
        "evaluated_tokens": [t["prompt_n"] for t in timings],
        "prompt_ms": [round(t["prompt_ms"], 2) for t in timings],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=["llamacpp", "vllm"], required=True)
    parser.add_argument("--layer", choices=["l1", "l2"], required=True)
    parser.add_argument("--model", required=True, help="GGUF file (llamacpp) or HF folder (vllm)")
    parser.add_argument("--python", default=sys.executable, help="Python that has the engine")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--port", type=int, default=18181)
    parser.add_argument("--start-timeout", type=float, default=600)
    parser.add_argument(
        "--candidates",
        choices=["l0", "all"],
        default="l0",
        help="judge among L0's top candidates (as the cascade does) or classify among all",
    )
    parser.add_argument("--messages", help="JSONL of messages (text, route); default: examples")
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="llama-server flag after serve-model's command (repeat; --server-arg=-fa)",
    )
    parser.add_argument("--tag", help="result name (default engines-<engine>-<layer>)")
    parser.add_argument("--out-dir", help="result folder (default bench/results)")
    args = parser.parse_args()
    out_dir = Path(args.out_dir) if args.out_dir else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(run(args))
    out = out_dir / f"{result['tag']}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
