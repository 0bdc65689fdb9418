"""Tabulate and plot the engine benchmark results (bench/results/engines-*.json).

.venv/bin/python bench/report_engines.py   # writes bench/results/engines.md and engines.png
.venv/bin/python bench/routermesh_bench/report_engines.py tuning
    # bench/results/engines-tuning/*.json -> tuning.json, tuning.md, tuning.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench/results"
LIMITS_MIB = {"l1": 512, "l2": 2048}
"""The seed's pod memory limits per model-server container."""
TUNING = RESULTS / "engines-tuning"
TARGETS_MS = {"l1": (25.0, 40.0), "l2": (60.0, 90.0)}
"""The engine-speed issue's targets per layer: (p50, p95)."""


def tuning_row(r: dict[str, Any]) -> str:
    """One tuning run as a markdown table row."""
    t = r.get("server_timings", {})
    lat = r["latency_ms"]
    evaluated = t.get("evaluated_tokens", {})
    errors = sum(r["errors"].values())
    return (
        f"| {r['tag']} | {r['model']} | {' '.join(r['server_args']) or '-'} | {r['threads']} | "
        f"{lat['p50']:.0f} | {lat['p95']:.0f} | {t.get('prompt_tokens_mean', '')} | "
        f"{t.get('cached_tokens_mean', '')} | {evaluated.get('p50', '')} | "
        f"{t.get('ms_per_evaluated_token', '')} | {t.get('prefix_hit_share', '')} | "
        f"{r['rss_mib']:.0f} / {LIMITS_MIB[r['layer']]} | {errors} |"
    )


def tuning() -> int:
    """The tuning runs: one JSON of every figure, a table, a plot."""
    rows = [
        json.loads(p.read_text()) for p in sorted(TUNING.glob("l*.json")) if p.name != "tuning.json"
    ]
    if not rows:
        print("no results: run bench/results/engines-tuning/run.sh first", file=sys.stderr)  # noqa: T201
        return 1
    sweep = [
        json.loads(line)
        for path in sorted(TUNING.glob("llama-bench-*.jsonl"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]
    figures = {"server_runs": rows, "llama_bench": sweep}
    (TUNING / "tuning.json").write_text(json.dumps(figures, indent=1) + "\n")
    lines = [
        "| setting | model file | extra llama-server flags | threads | p50 (ms) | p95 (ms) | "
        "prompt tokens | cached | evaluated p50 | ms / evaluated token | prefix hit | "
        "RSS / limit (MiB) | error verdicts |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(tuning_row(r) for r in rows),
    ]
    if sweep:
        lines += [
            "",
            f"llama-bench: {sweep[0]['n_prompt']} new prompt tokens after {sweep[0]['n_depth']} "
            "cached ones (the judge prompt's shape), no generation",
            "",
            "| model file | threads | flash attention | ubatch | repack | ms / token | "
            "ms for the prompt |",
            "|---|---:|---|---:|---|---:|---:|",
            *(
                f"| {Path(b['model_filename']).name} | {b['n_threads']} | "
                f"{ {-1: 'auto', 0: 'off', 1: 'on'}[b['flash_attn']] } | {b['n_ubatch']} | "
                f"{'yes' if b['repack'] else 'no'} | {1000 / b['avg_ts']:.2f} | "
                f"{b['avg_ns'] / 1e6:.0f} |"
                for b in sweep
            ),
        ]
    (TUNING / "tuning.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))  # noqa: T201
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    layers = sorted({r["layer"] for r in rows})
    figure, axes = plt.subplots(1, len(layers), figsize=(7 * len(layers), 4.5), squeeze=False)
    for axis, layer in zip(axes[0], layers, strict=True):
        mine = [r for r in rows if r["layer"] == layer]
        positions = list(range(len(mine)))
        axis.bar([p - 0.2 for p in positions], [r["latency_ms"]["p50"] for r in mine], 0.4)
        axis.bar([p + 0.2 for p in positions], [r["latency_ms"]["p95"] for r in mine], 0.4)
        p50, p95 = TARGETS_MS[layer]
        axis.axhline(p50, color="#1f77b4", linestyle="--", label=f"target p50 {p50:.0f} ms")
        axis.axhline(p95, color="#ff7f0e", linestyle="--", label=f"target p95 {p95:.0f} ms")
        labels = [r["tag"].removeprefix(f"{layer}-") for r in mine]
        axis.set_xticks(positions, labels, rotation=40, ha="right")
        axis.set_ylabel("ms per decision (bars: p50, p95)")
        axis.set_title(f"{layer.upper()}: judge prompt, 2 cores, concurrency 1")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(TUNING / "tuning.png", dpi=110)
    return 0


def main() -> int:
    if sys.argv[1:] == ["tuning"]:
        return tuning()
    rows = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("engines-*.json"))]
    if not rows:
        print("no results: run bench/engines.py first", file=sys.stderr)  # noqa: T201
        return 1
    lines = [
        "| layer | engine | model | start (s) | RSS (MiB) | limit (MiB) | fits | "
        "p50 (ms) | p95 (ms) | p99 (ms) | requests |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["layer"], r["engine"])):
        limit = LIMITS_MIB[r["layer"]]
        lat = r["latency_ms"]
        lines.append(
            f"| {r['layer']} | {r['engine']} | {r['model']} | {r['start_seconds']} | "
            f"{r['rss_mib']} | {limit} | {'yes' if r['rss_mib'] <= limit else 'no'} | "
            f"{lat['p50']} | {lat['p95']} | {lat['p99']} | {r['requests']} |"
        )
    (RESULTS / "engines.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))  # noqa: T201
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        print("matplotlib not installed: no plot (pip install -e '.[bench]')")  # noqa: T201
        return 0
    figure, (memory, latency) = plt.subplots(1, 2, figsize=(11, 4))
    labels = [f"{r['layer']}\n{r['engine']}" for r in rows]
    memory.bar(labels, [r["rss_mib"] for r in rows], color="#4c72b0")
    for i, r in enumerate(rows):
        memory.hlines(LIMITS_MIB[r["layer"]], i - 0.4, i + 0.4, colors="#c44e52")
    memory.set_ylabel("RSS (MiB); red: the seed's limit")
    memory.set_yscale("log")
    memory.set_title("Model server memory")
    positions = range(len(rows))
    latency.bar(
        [p - 0.2 for p in positions], [r["latency_ms"]["p50"] for r in rows], 0.4, label="p50"
    )
    latency.bar(
        [p + 0.2 for p in positions], [r["latency_ms"]["p95"] for r in rows], 0.4, label="p95"
    )
    latency.set_xticks(list(positions), labels)
    latency.set_ylabel("ms per decision")
    latency.set_title("Decision latency (router prompt, 2 cores)")
    latency.legend()
    figure.tight_layout()
    figure.savefig(RESULTS / "engines.png", dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main())
