"""PNG plots of benchmark results (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure


def _saved(figure: Figure, path: Path) -> list[Path]:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return [path]


def quality_plots(summary: dict[str, Any], out: Path, title: str) -> list[Path]:
    """Reliability diagram and accuracy-vs-coverage curve of each layer."""
    layers = summary["layers"]
    if not layers:
        return []
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    left.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    for name, layer in layers.items():
        bins = [b for b in layer["reliability"]["bins"] if b["n"]]
        left.plot(
            [b["confidence"] for b in bins],
            [b["accuracy"] for b in bins],
            marker="o",
            label=f"{name} (ECE {layer['reliability']['ece']:.3f})"
            if layer["reliability"]["ece"] is not None
            else name,
        )
        curve = [p for p in layer["accuracy_vs_coverage"] if p["n"]]
        right.plot(
            [p["coverage"] for p in curve],
            [p["accuracy"] for p in curve],
            marker=".",
            label=name,
        )
    left.set(xlabel="confidence", ylabel="accuracy", title="reliability", xlim=(0, 1), ylim=(0, 1))
    right.set(
        xlabel="coverage (share of rows at or above the threshold)",
        ylabel="accuracy",
        title="accuracy vs coverage",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(title)
    return _saved(figure, out / "quality.png")


def perf_plots(perf: dict[str, Any], out: Path) -> list[Path]:
    """Decision latency by deciding layer against the seed's budgets, and throughput."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    rows = perf["latency_by_layer"]
    names = list(rows)
    xs = range(len(names))
    left.bar([x - 0.2 for x in xs], [rows[n]["p50"] or 0 for n in names], 0.4, label="p50")
    left.bar([x + 0.2 for x in xs], [rows[n]["p95"] or 0 for n in names], 0.4, label="p95")
    for x, name in zip(xs, names, strict=True):
        budget = perf["seed"].get(name)
        if budget:
            left.hlines(budget, x - 0.45, x + 0.45, colors="red", linestyles="--")
    left.set_xticks(list(xs), names)
    left.set(ylabel="ms", title="decision latency by deciding layer (red: seed budget)")
    left.set_yscale("log")
    left.legend(fontsize=8)
    for kind, points in perf["throughput"].items():
        right.plot(
            [p["concurrency"] for p in points],
            [p["per_second"] for p in points],
            marker="o",
            label=kind,
        )
    right.set(xlabel="concurrency", ylabel="decisions per second", title="throughput")
    right.set_xscale("log", base=2)
    right.set_yscale("log")
    right.legend(fontsize=8)
    for axis in (left, right):
        axis.grid(alpha=0.3)
    return _saved(figure, out / "perf.png")


def load_plots(load: dict[str, Any], out: Path) -> list[Path]:
    """RSS of each process across the soak rounds, and latency percentiles per round."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    rounds = load.get("soak") or []
    xs = [0] + [r["round"] for r in rounds]
    start = load.get("rss_mib_start") or {}
    for name in start:
        left.plot(
            xs, [start[name]] + [r["rss_mib"].get(name, 0) for r in rounds], marker="o", label=name
        )
    left.set(xlabel="soak round (0: before load)", ylabel="RSS MiB", title="memory over the soak")
    left.legend(fontsize=8)
    phases = [("bounded", load["bounded"])] + [(f"soak {r['round']}", r) for r in rounds]
    for key in ("p50", "p95", "p99"):
        right.plot(
            [name for name, _ in phases],
            [phase["latency_ms"][key] or 0 for _, phase in phases],
            marker="o",
            label=key,
        )
    right.set(ylabel="client ms", title=f"latency at concurrency {load['options']['concurrency']}")
    right.set_yscale("log")
    right.tick_params(axis="x", rotation=30)
    right.legend(fontsize=8)
    for axis in (left, right):
        axis.grid(alpha=0.3)
    return _saved(figure, out / "load.png")


def learn_plots(run: dict[str, Any], out: Path) -> list[Path]:
    """The four figures against the escalations reported back (``bench learn``)."""
    steps = run["steps"]
    figure, axis = plt.subplots(figsize=(7, 4.5))
    reported = [s["reported"] for s in steps]
    for key, label in (
        ("routed_accuracy", "routed accuracy"),
        ("coverage", "in-scope coverage"),
        ("out_of_scope_escalated", "out-of-scope escalated"),
        ("multi_step_escalated", "multi-step escalated"),
    ):
        values = [s["figures"][key] for s in steps]
        if any(v is not None for v in values):
            axis.plot(reported, values, marker="o", label=label)
    axis.set(
        xlabel="escalated in-scope requests reported back (learned as examples)",
        ylabel="%",
        title=f"{run['mesh']}: {run['eval_rows']} measured rows",
        ylim=(0, 101),
    )
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return _saved(figure, out / "learn.png")
