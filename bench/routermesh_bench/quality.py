"""``router-mesh bench quality`` and ``router-mesh bench calibrate``.

Both build the bench router from ``--train`` (bench/stack.py), start it with
local mode's code (real model servers, the real orchestrator), send every
``--eval`` row to ``/v1/route`` with ``explain`` and ``all_layers`` (so each
layer's verdict is recorded, while the decision is the cascade's own), and write
``records.jsonl``. ``quality`` then writes ``quality.json`` and ``quality.png``;
``calibrate`` fits thresholds and writes ``calibration.json`` and
``routermesh-patch.yaml``. ``--records`` reuses an earlier run's records instead
of running the router again.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import platform
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from routermesh.runtime.contract.config import RouterConfig
from routermesh_bench import calibrate, metrics, plots
from routermesh_bench.client import route_rows
from routermesh_bench.records import Record, dumps, read_records, write_records
from routermesh_bench.stack import (
    ESCALATION_ROUTE,
    eval_rows,
    multi_step_rows,
    start,
    write_stack,
)
from routermesh_bench.tables import TableSource, read_descriptions

log = logging.getLogger("routermesh_bench")


@dataclass
class RunOptions:
    train: Path | None
    eval: Path
    out: Path
    limit: int | None = None
    seed: int = 0
    examples_per_route: int = 5
    concurrency: int = 1
    port: int = 18080
    models_dir: Path = Path(".cache/models")
    thresholds: Path | None = None
    """A calibration.json whose thresholds the bench mesh takes."""
    disable: tuple[str, ...] = ()
    """Layers the bench mesh runs disabled."""
    all_layers: bool = True
    """Ask every layer for every row (exact per-layer metrics and calibration); without it
    later layers see only what earlier ones left, as in production (much faster)."""
    head_epochs: int | None = None
    """Train L0's head (this many epochs) before routing, and route with it."""
    few_shot: int | None = None
    """Build the table from this many examples per route (the few-shot protocol)."""
    descriptions: Path | None = None
    """Route descriptions (JSON object) for a few-shot table."""
    routetable: Path | None = None
    """Route over this RouteTable YAML instead of one built from ``train``."""
    absent: int = 0
    """Routes left out of the table (seeded); their eval rows are out of scope."""
    multi: int = 0
    """Synthetic multi-step rows added to the eval rows (two in-scope rows joined)."""
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    """RouterMesh layer fields by layer (``--set l1.timeoutMs=5000``)."""

    def table(self) -> TableSource:
        return TableSource(
            train=self.train,
            examples_per_route=self.examples_per_route,
            few_shot=self.few_shot,
            descriptions=read_descriptions(self.descriptions) if self.descriptions else {},
            routetable=self.routetable,
            absent=self.absent,
            seed=self.seed,
        )


def machine() -> dict[str, Any]:
    import os  # noqa: PLC0415

    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }


def _calibrated(path: Path | None) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    if path is None:
        return {}, {}
    data = json.loads(path.read_text())
    return (
        {layer: fit["threshold"] for layer, fit in data["layers"].items()},
        data.get("route_thresholds", {}),
    )


def collect(options: RunOptions) -> tuple[list[Record], RouterConfig, float]:
    """Run the eval rows through the real router; records, the config it ran, seconds."""
    options.out.mkdir(parents=True, exist_ok=True)
    thresholds, per_route = _calibrated(options.thresholds)
    folder, absent = write_stack(
        options.table(),
        options.out,
        thresholds=thresholds,
        route_thresholds=per_route,
        layers=_layer_spec(options),
    )
    pod, config = start(
        folder,
        port=options.port,
        models_dir=options.models_dir,
        state_dir=options.out / "state",
    )
    try:
        rows = eval_rows(
            options.eval,
            [r.name for r in config.routes],
            config.escalation.route,
            options.limit,
            options.seed,
            absent=absent,
        )
        rows += multi_step_rows(rows, options.multi, config.escalation.route, options.seed)
        started = time.monotonic()
        records = asyncio.run(
            route_rows(
                pod.url,
                rows,
                concurrency=options.concurrency,
                all_layers=options.all_layers,
                what=options.eval.name,
            )
        )
        seconds = time.monotonic() - started
        indexes = _indexes(pod.url)
    finally:
        pod.stop()
    write_records(options.out / "records.jsonl", records)
    about = {**_about(options, config, seconds), "indexes": indexes, "absent_routes": absent}
    (options.out / "run.json").write_text(dumps(about))
    return records, config, seconds


def _layer_spec(options: RunOptions) -> dict[str, dict[str, Any]]:
    """The bench mesh's ``spec.layers``: disabled layers, the head, ``--set`` fields."""
    layers: dict[str, dict[str, Any]] = {}
    for name, fields in copy.deepcopy(options.settings).items():
        layers.setdefault(name, {}).update(fields)
    for name in options.disable:
        layers.setdefault(name, {})["enabled"] = False
    if options.head_epochs:
        # Merged: ``--set l0.head.mode=encoder`` picks what the Job trains.
        head = layers.setdefault("l0", {}).setdefault("head", {})
        head.update({"enabled": True, "epochs": options.head_epochs})
    return layers


def _indexes(url: str) -> dict[str, Any]:
    """What the in-process layers built (L0: examples, build seconds, leave-one-out accuracy)."""
    try:
        layers = httpx.get(f"{url}/v1/config", timeout=10, trust_env=False).json()["layers"]
    except (httpx.HTTPError, ValueError, KeyError) as error:
        return {"error": repr(error)}
    return {layer["name"]: layer["index"] for layer in layers if "index" in layer}


def _about(
    options: RunOptions, config: RouterConfig | None, seconds: float | None
) -> dict[str, Any]:
    return {
        "train": str(options.train) if options.train else None,
        "routetable": str(options.routetable) if options.routetable else None,
        "few_shot": options.few_shot,
        "descriptions": str(options.descriptions) if options.descriptions else None,
        "absent": options.absent,
        "synthetic_multi_step": options.multi,
        "eval": str(options.eval),
        "limit": options.limit,
        "seed": options.seed,
        "examples_per_route": options.examples_per_route,
        "concurrency": options.concurrency,
        "thresholds_from": str(options.thresholds) if options.thresholds else None,
        "disabled": list(options.disable),
        "settings": options.settings,
        "all_layers": options.all_layers,
        "head_epochs": options.head_epochs,
        "layers": [
            {
                "name": layer.name,
                "kind": layer.kind,
                "engine": layer.engine,
                "model": layer.model.path,
                "threshold": layer.threshold,
                "timeout_ms": layer.timeout_ms,
                "calibration": layer.calibration,
            }
            for layer in (config.layers if config else ())
            if layer.enabled
        ],
        "config_hash": config.config_hash if config else None,
        "seconds": round(seconds, 1) if seconds is not None else None,
        "machine": machine(),
    }


def _records(options: RunOptions, reuse: Path | None) -> tuple[list[Record], dict[str, Any]]:
    if reuse is not None:
        records = list(read_records(reuse))
        run = reuse.with_name("run.json")
        about = json.loads(run.read_text()) if run.is_file() else _about(options, None, None)
        return records, {**about, "records_from": str(reuse)}
    records, _, _ = collect(options)
    return records, json.loads((options.out / "run.json").read_text())


def run_quality(options: RunOptions, reuse: Path | None = None) -> dict[str, Any]:
    records, about = _records(options, reuse)
    summary = {**metrics.quality(records, ESCALATION_ROUTE), "run": about}
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "quality.json").write_text(dumps(summary))
    plots.quality_plots(summary, options.out, f"{options.out.name} (n={summary['n']})")
    return summary


def run_calibrate(
    options: RunOptions,
    targets: dict[str, float],
    *,
    per_route: bool,
    min_samples: int,
    reuse: Path | None = None,
    max_step: float | None = None,
    confidence: bool = True,
    oos_target: float | None = None,
    oos_share: float | None = None,
) -> dict[str, Any]:
    raw, about = _records(options, reuse)
    platts = calibrate.fit_calibration(raw, min_samples) if confidence else []
    # Thresholds are fitted on the confidences the calibrated layers will report.
    records = calibrate.calibrated_records(raw, platts)
    current_calibration = {
        layer["name"]: tuple(layer["calibration"])
        for layer in about["layers"]
        if layer.get("calibration")
    }
    calibrations = {
        p.layer: calibrate.compose(current_calibration.get(p.layer), (p.slope, p.intercept))
        for p in platts
        if p.adopted
    }
    fitting = _Fitting(targets, per_route, min_samples, oos_target, oos_share)
    fits = fitting.fit(records)
    if max_step is not None:
        current = {layer["name"]: layer["threshold"] for layer in about["layers"]}
        fits = calibrate.bounded(fits, current, max_step)
    before = calibrate.expected(raw, _current_fits(raw, about), ESCALATION_ROUTE, oos_share)
    result: dict[str, Any] = {
        "layers": {
            f.layer: {
                "threshold": f.threshold,
                "target": f.target,
                "reached": f.reached,
                "rows": f.rows,
                "decided": f.decided,
                "accuracy": None if f.accuracy is None else round(f.accuracy, 6),
            }
            for f in fits
        },
        "route_thresholds": calibrate.route_thresholds(fits),
        "max_step": max_step,
        "oos_target": oos_target,
        "oos_share": oos_share,
        "confidence_calibration": {
            p.layer: {
                "adopted": p.adopted,
                "ece_held_out_before": p.ece_before,
                "ece_held_out_after": p.ece_after,
                "slope": round(calibrations[p.layer][0], 6) if p.layer in calibrations else None,
                "intercept": (
                    round(calibrations[p.layer][1], 6) if p.layer in calibrations else None
                ),
            }
            for p in platts
        },
        "expected": calibrate.expected(records, fits, ESCALATION_ROUTE, oos_share),
        "before": before,
        "held_out": _held_out(records, fitting),
        "run": about,
    }
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "calibration.json").write_text(dumps(result))
    header = (
        "# Fitted by `router-mesh bench calibrate` on "
        f"{options.eval.name} (n={len(records)}).\n"
        "# Apply: kubectl patch routermesh NAME --type merge --patch-file routermesh-patch.yaml\n"
    )
    routes = result["route_thresholds"]
    if routes:
        header += "# Per-route thresholds for the RouteTable (spec.routes[].thresholds):\n"
        header += "".join(f"#   {name}: {json.dumps(t)}\n" for name, t in routes.items())
    (options.out / "routermesh-patch.yaml").write_text(
        header
        + yaml.safe_dump(
            calibrate.mesh_patch(
                fits, calibrations, headed=("l0",) if about.get("head_epochs") else ()
            ),
            sort_keys=False,
        )
    )
    return result


def _held_out(records: list[Record], fitting: _Fitting) -> dict[str, Any]:
    """Thresholds fitted on a seeded half of the rows, measured on the other half: what
    fitting on one set promises for another (the fit on all rows is measured on itself)."""
    shuffled = list(records)
    random.Random(0).shuffle(shuffled)  # noqa: S311 - a split, not a secret
    half = len(shuffled) // 2
    fit_half, check_half = shuffled[:half], shuffled[half:]
    fits = fitting.fit(fit_half)
    oos_share = fitting.oos_share
    return {
        "thresholds": {f.layer: f.threshold for f in fits},
        "fit_half": calibrate.expected(fit_half, fits, ESCALATION_ROUTE, oos_share),
        "other_half": calibrate.expected(check_half, fits, ESCALATION_ROUTE, oos_share),
    }


@dataclass(frozen=True)
class _Fitting:
    """How thresholds are fitted: the same for all rows and for the held-out check."""

    targets: dict[str, float]
    per_route: bool
    min_samples: int
    oos_target: float | None
    oos_share: float | None

    def fit(self, records: list[Record]) -> list[calibrate.LayerFit]:
        """Accuracy targets per layer, then the out-of-scope requirements on the first."""
        fits = calibrate.fit(
            records, self.targets, per_route=self.per_route, min_samples=self.min_samples
        )
        if self.oos_target is not None:
            fits = calibrate.meet_oos(records, fits, ESCALATION_ROUTE, self.oos_target)
        if self.oos_share is not None and fits:
            fits = calibrate.meet_share(
                records, fits, ESCALATION_ROUTE, self.oos_share, fits[0].target
            )
        return fits


def _current_fits(records: list[Record], about: dict[str, Any]) -> list[calibrate.LayerFit]:
    """The thresholds the records were collected with, as fits (for the "before" numbers)."""
    configured = {layer["name"]: layer["threshold"] for layer in about["layers"]}
    return [
        calibrate.LayerFit(
            layer=name, target=0.0, threshold=threshold, reached=True, rows=0, decided=0, correct=0
        )
        for name, threshold in configured.items()
    ]
