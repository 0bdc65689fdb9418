"""The four few-shot dev sets as the runs in bench/results/fewshot/ sent them, for the
experiments that replay L0 in-process on those runs' tables (bench/experiments/)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from routermesh.runtime import calibration
from routermesh.runtime.encoder import Encoder
from routermesh.table_check import CheckOptions, check_table
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
    return " | ".join(
        f"{f.threshold}: {f.routed_accuracy} / {f.coverage} / "
        f"{f.out_of_scope_escalated} / {f.multi_step_escalated}"
        for f in check.evaluation.figures
    )


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
