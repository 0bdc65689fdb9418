"""The four few-shot dev sets as the runs in bench/results/fewshot/ sent them, for the
experiments that replay L0 in-process on those runs' tables (bench/experiments/)."""

from __future__ import annotations

import asyncio
import json
import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from routermesh.labelled import LabelledRequest
from routermesh.runtime import calibration
from routermesh.runtime.decision import Verdict
from routermesh.runtime.embedding import EmbeddingLayer
from routermesh.runtime.encoder import Encoder
from routermesh.table_check import CheckOptions, EvalReport, check_table
from routermesh_bench import prior
from routermesh_bench.stack import eval_rows, multi_step_rows
from routermesh_bench.tables import read_descriptions

FEWSHOT = Path("bench/results/fewshot")
SETS: dict[str, tuple[str, str, int]] = {
    "homelab": ("homelab-dev", "bench/data/homelab-dev.jsonl", 0),
    "tools": ("tools-dev", "bench/data/tools/dev.jsonl", 100),
    "clinc150": ("clinc150-k10-val", "{datasets}/clinc150/val.jsonl", 100),
    "hwu64": ("hwu64-k10-val", "{datasets}/hwu64/val.jsonl", 100),
}
"""Set -> (run folder, eval file, synthetic multi-step rows the run added)."""

HELD_OUT: dict[str, tuple[str, str, int]] = {
    "tools-test": ("tools-test", "bench/data/tools/test.jsonl", 100),
    "homelab-test": ("homelab-test", "bench/data/homelab-test.jsonl", 0),
}
"""The held-out runs: experiments measure them only when named, never tune on them."""


def stack_files(name: str) -> list[Path]:
    """The RouteTable and RouterMesh the run routed over."""
    stack = FEWSHOT / SETS[name][0] / "stack"
    return [stack / "routetable.yaml", stack / "routermesh.yaml"]


def eval_file(name: str, datasets: Path, scratch: Path) -> Path:
    """The run's eval rows as labelled requests (the same seeded sample and synthetic
    multi-step rows the run sent)."""
    folder, source, multi = SETS[name]
    run = json.loads((FEWSHOT / folder / "run.json").read_text())
    docs = yaml.safe_load_all((FEWSHOT / folder / "stack/routetable.yaml").read_text())
    routes = [r["name"] for d in docs if d for r in d["spec"]["routes"]]
    rows = eval_rows(
        Path(source.format(datasets=datasets)),
        routes,
        "__escalate__",
        run["limit"],
        run["seed"],
        absent=run["absent_routes"],
    )
    rows += multi_step_rows(rows, multi, "__escalate__", run["seed"])
    out = scratch / f"{name}.jsonl"
    with out.open("w") as handle:
        for row in rows:
            line = {"text": row.text, "route": row.gold, "kind": row.kind, "routes": row.plan}
            handle.write(json.dumps(line) + "\n")
    return out


def check_set(
    name: str, datasets: Path, scratch: Path, models: Path, thresholds: tuple[float, ...]
) -> str:
    """``router-mesh check-table`` on the set's table and rows: the four figures per
    threshold, one line."""
    check = check_table(
        CheckOptions(
            files=stack_files(name),
            models_dir=models,
            eval=eval_file(name, datasets, scratch),
            offline=True,
            thresholds=thresholds,
        )
    )
    if check.evaluation is None:
        raise ValueError(f"{name}: no evaluation")
    return figures_line(check.evaluation)


def refit_prior(datasets: Path, models: Path) -> dict[str, object]:
    """``router-mesh bench prior`` with its defaults (CLINC150 and HWU64 train, 10 tables
    each, k 10, seed 100), installed in this process as the calibration prior: for an
    experiment that changes what the prior reads."""
    sources = [
        prior.PriorSource(
            datasets / f"{name}/train.jsonl",
            read_descriptions(Path(f"bench/data/descriptions/{name}.json")),
        )
        for name in ("clinc150", "hwu64")
    ]
    model = Encoder(models / "packaged/all-MiniLM-L6-v2-int8")
    fitted = prior.fit_prior(sources, model, tables=10, k=10, seed=100)
    install_prior(fitted)
    return fitted


def install_prior(fitted: dict[str, Any]) -> None:
    """A fitted prior (``in_scope``, ``correct`` weights) as this process's calibration
    prior."""
    w_in, w_right = fitted["in_scope"], fitted["correct"]
    in_scope = (w_in[0], w_in[1], w_in[2])
    correct = (w_right[0], w_right[1], w_right[2], w_right[3])
    calibration.PRIOR_IN_SCOPE, calibration.PRIOR_CORRECT = in_scope, correct
    calibration.Calibration.__init__.__defaults__ = (in_scope, correct)


def replay(
    prefix: str,
    datasets: Path,
    scratch: Path,
    models: Path,
    thresholds: tuple[float, ...],
    *,
    sets: Iterable[str] = SETS,
) -> None:
    """:func:`check_set` on each set, one line each: ``prefix``, the set, its figures."""
    for name in sets:
        figures = check_set(name, datasets, scratch, models, thresholds)
        sys.stdout.write(f"{prefix}{name:9s} {figures}\n")
        sys.stdout.flush()


def figures_line(evaluation: EvalReport) -> str:
    """The four figures at each threshold, one line."""
    return " | ".join(
        f"{f.threshold}: {f.routed_accuracy} / {f.coverage} / "
        f"{f.out_of_scope_escalated} / {f.multi_step_escalated}"
        for f in evaluation.figures
    )


def layer_verdicts(layer: EmbeddingLayer, rows: Sequence[LabelledRequest]) -> list[Verdict]:
    """L0's verdict on every row, in-process."""

    async def run() -> list[Verdict]:
        await layer.prepare()
        return [await layer.classify(row.text) for row in rows]

    return asyncio.run(run())


def oracle_ceiling(layer: EmbeddingLayer, rows: Sequence[LabelledRequest], target: float) -> str:
    """:func:`ceiling_of` this layer's verdicts on ``rows``."""
    return ceiling_of(layer_verdicts(layer, rows), rows, target)


def ceiling_of(verdicts: Sequence[Verdict], rows: Sequence[LabelledRequest], target: float) -> str:
    """coverage_ceiling.py's figure: the in-scope rows an oracle cut of the out-of-scope
    score keeps with the verdict's route right when ``target`` of the out-of-scope rows
    escalate (a row split as multi-step is not kept, as in the runs' records)."""
    pairs = list(zip(verdicts, rows, strict=True))
    outside = sorted(v.out_of_scope or 0.0 for v, r in pairs if r.kind == "out_of_scope")
    if not outside:
        return "no out-of-scope rows"
    cut = outside[math.floor(len(outside) * (1 - target) + 1e-9)]
    inside = [(v, r) for v, r in pairs if r.kind == "in_scope"]
    right = sum(1 for v, r in inside if (v.out_of_scope or 0.0) < cut and v.route == r.route_name)
    return f"ceiling at {target:.0%} out of scope escalated: {100 * right / len(inside):.1f} %"
