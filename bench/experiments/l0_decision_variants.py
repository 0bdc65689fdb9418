"""Can L0 route more of a small table's in-scope requests at the same accuracy by deciding
differently? Four variants of its decision, measured and not shipped (docs/benchmarks.md,
"What was tried and not shipped").

- ``prior-strength``: trust the calibration prior more (or less) against the table's own
  leave-one-out / leave-route-out rows (``calibration.PRIOR_STRENGTH``, 20 shipped).
- ``confident-clause``: when the whole message escalates, route it by its one clause
  that goes to a route with at least this confidence (verbose requests put context
  around the task), unless clauses go to different routes.
- ``background``: score "in scope" by the best similarity to the table minus ``beta``
  times the best similarity to a corpus of generic requests (``--background``, e.g.
  HWU64's train split), leaving out corpus rows near the table's evidence; reports the
  AUC of in-scope against out-of-scope rows and the share of in-scope rows kept at 90 / 95
  % of out-of-scope rows escalated.
- ``in-scope-features``: the in-scope model on best similarity, vote share and margin
  (not the best similarity alone), fitted like the prior on tables drawn from the CLINC150
  and HWU64 train splits; reports routed accuracy / coverage / out-of-scope escalated over
  the in-scope and out-of-scope rows at several thresholds, against today's models on
  the same footing ("whole message": L0's confidence on the whole message, thresholded,
  without multi-step detection, so its figures are not the runs').

Every set is the few-shot run's table and eval rows (bench/results/fewshot/), L0
in-process as ``router-mesh check-table`` builds it, so the shipped settings reproduce the
runs' figures.

    .venv/bin/python bench/experiments/l0_decision_variants.py prior-strength
    .venv/bin/python bench/experiments/l0_decision_variants.py confident-clause
    .venv/bin/python bench/experiments/l0_decision_variants.py background \\
        --background ../shared/datasets/hwu64/train.jsonl --sets homelab,tools
    .venv/bin/python bench/experiments/l0_decision_variants.py in-scope-features
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from routermesh.labelled import LabelledRequest, read_labelled
from routermesh.runtime import calibration
from routermesh.runtime.calibration import (
    Calibration,
    fit_logistic,
    in_scope_best,
    logistic,
    logit,
)
from routermesh.runtime.embedding import EmbeddingLayer
from routermesh.runtime.encoder import Encoder
from routermesh.runtime.example_index import ExampleIndex, Features, neighbour_features
from routermesh.runtime.lexical import content_words
from routermesh.runtime.multistep import clauses
from routermesh.table_check import CheckOptions, figures_at, l0_config
from routermesh_bench import prior
from routermesh_bench.fewshot_sets import SETS, check_set, eval_file, stack_files
from routermesh_bench.tables import read_descriptions

Floats = npt.NDArray[np.float64]


def _parts(layer: EmbeddingLayer) -> tuple[ExampleIndex, Encoder]:
    """The layer's index and its encoder (read here to embed clauses and corpora)."""
    index, encoder = layer.index, layer._encoder
    if index is None or encoder is None:
        raise SystemExit(f"L0 is not built: {layer.error}")
    return index, encoder


def _layer(name: str, models: Path) -> tuple[EmbeddingLayer, str]:
    config, layer_config = l0_config(
        CheckOptions(files=stack_files(name), models_dir=models, offline=True)
    )
    layer = EmbeddingLayer(layer_config, config, models)
    asyncio.run(layer.prepare())
    if layer.index is None:
        raise SystemExit(f"{name}: L0 could not be built: {layer.error}")
    return layer, config.escalation.route


def _figures(rows: Sequence[LabelledRequest], routes: Sequence[str], escalation: str) -> str:
    """check-table's four figures for these decisions (one threshold, already applied)."""
    expected = [row.route_name if row.kind == "in_scope" else escalation for row in rows]
    f = figures_at(0.0, rows, expected, routes, escalation)
    return " / ".join(
        "-" if v is None else f"{v:.1f}"
        for v in (f.routed_accuracy, f.coverage, f.out_of_scope_escalated, f.multi_step_escalated)
    )


def prior_strength(args: argparse.Namespace, scratch: Path) -> None:
    for value in (float(v) for v in args.values.split(",")):
        calibration.PRIOR_STRENGTH = value
        for name in args.sets.split(","):
            figures = check_set(name, args.datasets, scratch, args.models_dir, (0.4, 0.5, 0.6))
            _say(f"strength {value:g} {name:9s} {figures}")


def confident_clause(args: argparse.Namespace, scratch: Path) -> None:
    for name in args.sets.split(","):
        layer, escalation = _layer(name, args.models_dir)
        index, encoder = _parts(layer)
        rows = read_labelled(eval_file(name, args.datasets, scratch))
        seen: list[tuple[str, str | None, list[tuple[str, float]]]] = []
        for row in rows:
            verdict = asyncio.run(layer.classify(row.text))
            route = verdict.route or escalation
            if verdict.confidence < layer_threshold(layer):
                route = escalation
            parts = clauses(row.text[:2000])
            steps: list[tuple[str, float]] = []
            if len(parts) >= 2:
                vectors = encoder.encode([p.text for p in parts])
                judged = (
                    index.classify(v, 0, content_words(p.text))
                    for p, v in zip(parts, vectors, strict=True)
                )
                steps = [(j.route, j.confidence) for j in judged]
            cause = verdict.cause.value if verdict.cause else None
            seen.append((route, cause, steps))
        _say(f"{name:9s} shipped: {_figures(rows, [s[0] for s in seen], escalation)}")
        for tau in (float(v) for v in args.values.split(",")):
            decided = []
            for route, cause, steps in seen:
                sure = {r for r, c in steps if c >= tau and r != escalation}
                escalated = route == escalation and cause != "multi_step"
                decided.append(sure.pop() if escalated and len(sure) == 1 else route)
            _say(f"{name:9s} clause at {tau}: {_figures(rows, decided, escalation)}")


def layer_threshold(layer: EmbeddingLayer) -> float:
    config = layer._config
    return config.threshold_for(layer.name, config.escalation.route)


def _auc(positives: Floats, negatives: Floats) -> float:
    greater = (positives[:, None] > negatives[None, :]).mean()
    ties = (positives[:, None] == negatives[None, :]).mean()
    return float(greater + 0.5 * ties)


def background(args: argparse.Namespace, scratch: Path) -> None:
    if args.background is None:
        raise SystemExit("background: --background FILE (labelled JSONL of generic requests)")
    texts = [row.text for row in read_labelled(args.background) if row.kind == "in_scope"]
    random.Random(0).shuffle(texts)  # noqa: S311 - sampling, not secrets
    texts = texts[: args.size]
    for name in args.sets.split(","):
        layer, _ = _layer(name, args.models_dir)
        index, encoder = _parts(layer)
        corpus = encoder.encode(texts)
        corpus = corpus[(corpus @ index.vectors.T).max(axis=1) < args.near]
        rows = [
            r
            for r in read_labelled(eval_file(name, args.datasets, scratch))
            if r.kind != "multi_step"
        ]
        queries = encoder.encode([r.text for r in rows])
        best = (queries @ index.vectors.T).max(axis=1)
        generic = (queries @ corpus.T).max(axis=1)
        inside = np.array([r.kind == "in_scope" for r in rows])
        _say(f"{name}: {len(corpus)} of {len(texts)} background requests kept")
        for beta in (float(v) for v in args.values.split(",")):
            score = best - beta * generic
            kept = [
                float(np.mean(score[inside] > np.quantile(score[~inside], q))) for q in (0.9, 0.95)
            ]
            _say(
                f"  beta {beta}: AUC {_auc(score[inside], score[~inside]):.3f}, in-scope kept "
                f"at 90 / 95 % out-of-scope escalated: {100 * kept[0]:.1f} / {100 * kept[1]:.1f} %"
            )


def in_scope_features(args: argparse.Namespace, scratch: Path) -> None:
    # The prior's own tables (bench prior's defaults: seed 100, k 10), judged once.
    layer, _ = _layer("homelab", args.models_dir)
    _, encoder = _parts(layer)
    rng = random.Random(100)  # noqa: S311 - sampling, not secrets
    table_rows: list[tuple[float, float, float, bool, bool]] = []
    for dataset in ("clinc150", "hwu64"):
        descriptions = read_descriptions(Path(f"bench/data/descriptions/{dataset}.json"))
        grouped, escalate = prior._grouped(args.datasets / f"{dataset}/train.jsonl")
        names = sorted(grouped)
        for _ in range(10):
            table = prior._draw(grouped, escalate, names, descriptions, rng)
            for (_, gold, inside), f in zip(
                table.rows,
                prior._judge(encoder, table, 10),
                strict=True,
            ):
                right = inside and table.routes[f.route] == gold
                table_rows.append((f.best, f.share, f.margin, inside, right))
    data = np.array(table_rows, dtype=np.float64)
    positive: npt.NDArray[np.bool_] = data[:, 3] > 0
    weights: Floats = np.where(positive, 0.5 / positive.sum(), 0.5 / (~positive).sum())
    three = np.c_[data[:, 0], [logit(s) for s in data[:, 1]], data[:, 2]]
    in_scope = fit_logistic(three, positive, weights=weights, strength=1e-6)
    correct = fit_logistic(three[positive][:, 1:], data[positive, 4] > 0, strength=1e-6)
    _say(f"in scope on (best, logit share, margin): {[round(w, 2) for w in in_scope]}")
    for name in args.sets.split(","):
        layer, escalation = _layer(name, args.models_dir)
        index, encoder = _parts(layer)
        rows = [
            r
            for r in read_labelled(eval_file(name, args.datasets, scratch))
            if r.kind != "multi_step"
        ]
        sims = encoder.encode([r.text for r in rows]) @ index.vectors.T
        word_scores = (
            [index.vocabulary.scores(content_words(r.text)) for r in rows]
            if index.vocabulary is not None
            else None
        )
        features, _ = neighbour_features(
            sims,
            index.labels,
            index.groups,
            index.k,
            word_scores,
            typicality=index.typicality_by_route,
        )
        chosen = [index.routes[f.route] for f in features]
        fitted = index.calibration

        def today(
            i: int, features: list[Features] = features, fitted: Calibration = fitted
        ) -> float:
            f = features[i]
            return fitted.p_in_scope(in_scope_best(f), f.lexical) * fitted.p_correct(
                f.share, f.margin, f.lexical_margin
            )

        def variant(i: int, features: list[Features] = features) -> float:
            f = features[i]
            x = [f.best, logit(f.share), f.margin]
            return logistic(in_scope, x) * logistic(correct, x[1:])

        scores: tuple[tuple[str, Callable[[int], float]], ...] = (
            ("whole message", today),
            ("three features", variant),
        )
        for label, score in scores:
            cells = []
            for threshold in (0.3, 0.4, 0.5, 0.6):
                routes = [c if score(i) >= threshold else escalation for i, c in enumerate(chosen)]
                cells.append(f"{threshold}: {_figures(rows, routes, escalation)}")
            _say(f"{name:9s} {label:14s} " + " | ".join(cells))


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


VARIANTS = {
    "prior-strength": (prior_strength, "20,200,2000,1000000"),
    "confident-clause": (confident_clause, "0.5,0.6,0.7,0.8"),
    "background": (background, "0,0.25,0.5,0.75,1"),
    "in-scope-features": (in_scope_features, ""),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variant", choices=sorted(VARIANTS))
    parser.add_argument("--values", help="the variant's settings to try, comma-separated")
    parser.add_argument("--sets", default=",".join(SETS), help="default: %(default)s")
    parser.add_argument("--background", type=Path, help="background: generic requests (JSONL)")
    parser.add_argument("--size", type=int, default=3000, help="background: rows used")
    parser.add_argument(
        "--near", type=float, default=0.6, help="background: leave out rows this near the table"
    )
    parser.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--models-dir", type=Path, default=Path(".cache/models"))
    args = parser.parse_args()
    run, default = VARIANTS[args.variant]
    args.values = args.values or default
    run(args, Path(tempfile.mkdtemp(prefix="l0-variants-")))


if __name__ == "__main__":
    main()
