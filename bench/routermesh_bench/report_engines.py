"""Tabulate and plot the engine benchmark results (bench/results/engines-*.json).

.venv/bin/python bench/report_engines.py   # writes bench/results/engines.md and engines.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench/results"
LIMITS_MIB = {"l1": 512, "l2": 2048}
"""The seed's pod memory limits per model-server container."""


def main() -> int:
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
