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
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from routermesh.local import LocalOptions, render
from routermesh.runtime.contract.config import CONFIG_FILENAME, ModelRef, RouterConfig
from routermesh.runtime.generative import GenerativeLayer

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


async def run(args: argparse.Namespace) -> dict[str, Any]:
    port = args.port
    model = Path(args.model)
    config = homelab(args.layer, model, port, args.engine)
    layer_config = next(item for item in config.layers if item.name == args.layer)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / CONFIG_FILENAME).write_text(config.to_json())
        command = [
            args.python,
            "-m",
            "routermesh.cli",
            "serve-model",
            "--layer",
            args.layer,
            "--config-dir",
            tmp,
            "--models-dir",
            str(model.parent),
            "--threads",
            str(args.threads),
        ]
        log = (RESULTS / f"engines-{args.engine}-{args.layer}.log").open("wb")
        spawned = time.monotonic()
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)  # noqa: S603
        try:
            async with httpx.AsyncClient(trust_env=False) as client:
                layer = GenerativeLayer(layer_config, config, client)
                while True:
                    if server.poll() is not None:
                        raise SystemExit(f"server exited; see {log.name}")
                    if time.monotonic() - spawned > args.start_timeout:
                        raise SystemExit(f"not ready in {args.start_timeout} s; see {log.name}")
                    if await layer.ready():
                        break
                    await asyncio.sleep(0.5)
                start_seconds = time.monotonic() - spawned
                print(f"{args.engine}/{args.layer}: ready in {start_seconds:.1f} s", flush=True)  # noqa: T201
                latencies: list[float] = []
                agree = 0
                errors: dict[str, int] = {}
                batch = messages(config, args.requests)
                for index, (text, expected) in enumerate(batch, 1):
                    started = time.perf_counter()
                    verdict = await layer.classify(text)
                    latencies.append((time.perf_counter() - started) * 1000)
                    if verdict.reason is not None and verdict.reason.is_error:
                        errors[verdict.reason] = errors.get(verdict.reason, 0) + 1
                    agree += verdict.route == expected
                    if index % 25 == 0:
                        print(  # noqa: T201
                            f"  {index}/{len(batch)} p50 {statistics.median(latencies):.1f} ms",
                            flush=True,
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
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(run(args))
    out = RESULTS / f"engines-{args.engine}-{args.layer}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
