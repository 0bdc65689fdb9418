"""Does L0 route more of a small table's requests, at the same accuracy and out-of-scope
escalation, when its encoder is fine-tuned on the table's own evidence?

Tuning (``routermesh_bench/table_tuning.py``) trains on every example and description
phrase, so the table's leave-one-out rows might flatter the tuned encoder; its
calibration prior is measured on tables drawn from the CLINC150 and HWU64 *train*
splits, each tuned the same way before its other rows are judged (``prior``). ``replay``
tunes the encoder on each few-shot set's table (the runs in bench/results/fewshot/),
serves it as L0's model in-process as ``router-mesh check-table`` does, and prints
routed accuracy / coverage / out-of-scope escalated / multi-step escalated at each
threshold. ``--strength``: how much the table's own leave-one-out and leave-route-out
rows weigh against that prior (the shipped L0's is 20; by default they weigh nothing).
``combine`` mixes the shipped L0's and the tuned one's verdicts. The held-out runs
(``tools-test``, ``homelab-test``) are measured only when named in ``--sets``.

    .venv/bin/python bench/experiments/tuned_encoder.py prior --tables 8
    .venv/bin/python bench/experiments/tuned_encoder.py replay --thresholds 0.4,0.5,0.6,0.7,0.8,0.9
    .venv/bin/python bench/experiments/tuned_encoder.py replay --strength 20 \
        --sets homelab,tools,clinc150,hwu64,homelab-test,tools-test
    .venv/bin/python bench/experiments/tuned_encoder.py combine --thresholds 0.4,0.5,0.6,0.7,0.8
    .venv/bin/python bench/experiments/tuned_encoder.py replay --strength 20 --int8 \
        --sets tools,tools-test

What ``head.mode: encoder`` ships is ``replay --strength 20`` (the same figures through
``router-mesh bench quality --set l0.head.mode=encoder --head 4``). Its settings were
probed the same way, on the four dev sets (thresholds 0.3 to 0.5):

    .venv/bin/python bench/experiments/tuned_encoder.py replay --strength 20 \
        --thresholds 0.3,0.35,0.4,0.45,0.5 --epochs 8 --sets homelab,tools,hwu64,clinc150
    .venv/bin/python bench/experiments/tuned_encoder.py replay --strength 20 \
        --thresholds 0.3,0.35,0.4,0.45,0.5 --objective supcon --sets homelab,tools,hwu64,clinc150
    .venv/bin/python bench/experiments/tuned_encoder.py replay --strength 20 \
        --thresholds 0.5 --single-route-confidence 1.01 --sets homelab,tools,hwu64,clinc150

A tuned prior drawn from tables as large as the tool table (the train files' intents as
routes, 20 to 40 of them), alone and together with the shipped prior's tables (their
judged rows kept with ``--judged`` and refitted with ``refit``, no tuning again); not
shipped (bench/results/experiments/tuned-prior-intents.txt):

    .venv/bin/python bench/experiments/tuned_encoder.py prior --tables 8 \
        --judged /tmp/route.pkl --prior-file /tmp/tuned-prior.json
    .venv/bin/python bench/experiments/tuned_encoder.py prior --tables 6 --by-intent \
        --min-routes 20 --max-routes 40 --judged /tmp/intents.pkl \
        --prior-file bench/results/experiments/tuned-prior-intents.json
    .venv/bin/python bench/experiments/tuned_encoder.py refit \
        --judged-runs /tmp/route.pkl,/tmp/intents.pkl \
        --prior-file bench/results/experiments/tuned-prior-both.json
    .venv/bin/python bench/experiments/tuned_encoder.py replay --strength 20 \
        --thresholds 0.4,0.5 --sets tools,homelab \
        --prior-file bench/results/experiments/tuned-prior-intents.json

Generic requests tuned as one more class (``--background``: the encoder learns to tell
the routes from them; they are never examples), with the oracle ceiling of
``coverage_ceiling.py`` on the verdicts (``--ceiling``; the first runs below counted a
message by its best route before multi-step detection, which the results file says);
shipped opt-in with the clause test below as ``l0.head.genericRequests``
(``runtime/generic_requests.py``; bench/results/experiments/tuned-encoder-background.txt):

    BG=../shared/datasets/hwu64/train.jsonl,../shared/datasets/clinc150/train.jsonl
    .venv/bin/python bench/experiments/tuned_encoder.py replay --strength 20 \
        --thresholds 0.4,0.5 --ceiling --sets homelab,tools,homelab-test,tools-test \
        --background $BG
    .venv/bin/python bench/experiments/tuned_encoder.py prior --tables 8 --background $BG \
        --prior-file bench/results/experiments/tuned-prior-background.json
    .venv/bin/python bench/experiments/tuned_encoder.py replay --strength 20 \
        --thresholds 0.4,0.45,0.5,0.55,0.6 --ceiling --sets homelab,tools --background $BG \
        --prior-file bench/results/experiments/tuned-prior-background.json
    .venv/bin/python bench/experiments/tuned_encoder.py replay --strength 20 \
        --thresholds 0.45,0.5 --ceiling --sets homelab-test,tools-test --background $BG \
        --prior-file bench/results/experiments/tuned-prior-background.json
    .venv/bin/python bench/experiments/tuned_encoder.py combine --strength 20 \
        --thresholds 0.45,0.5 --sets homelab,tools,homelab-test,tools-test --background $BG \
        --prior-file bench/results/experiments/tuned-prior-background.json

and with multi-step detection judging a clause by its route's probability alone
(``--clause-route-only``; without ``--multi-step`` each table's own thresholds, then
0.7:0.4 and 0.85:0.6 on the dev sets, the last once held out;
bench/results/experiments/tuned-encoder-background-clauses.txt):

    .venv/bin/python bench/experiments/tuned_encoder.py replay --strength 20 \
        --thresholds 0.45,0.5 --clause-route-only --multi-step 0.85:0.6 --background $BG \
        --prior-file bench/results/experiments/tuned-prior-background.json --sets homelab,tools
    .venv/bin/python bench/experiments/tuned_encoder.py replay --strength 20 \
        --thresholds 0.45,0.5 --ceiling --clause-route-only --multi-step 0.85:0.6 \
        --background $BG --prior-file bench/results/experiments/tuned-prior-background.json \
        --sets homelab,tools,homelab-test,tools-test

and the "no split when this sure" guard for it (0.95 shipped,
``generic_requests.SINGLE_ROUTE_CONFIDENCE``; tuned-encoder-background-gate.txt):

    for g in 0.95 1.01; do .venv/bin/python bench/experiments/tuned_encoder.py replay \
        --strength 20 --thresholds 0.5 --clause-route-only --multi-step 0.85:0.6 \
        --background $BG --prior-file bench/results/experiments/tuned-prior-background.json \
        --sets homelab,tools --single-route-confidence $g; done
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import logging
import operator
import pickle
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from routermesh.bootstrap import read_rows
from routermesh.labelled import read_labelled
from routermesh.runtime import calibration, embedding
from routermesh.runtime.contract.config import LayerConfig, RouterConfig
from routermesh.runtime.decision import Verdict
from routermesh.runtime.embedding import EmbeddingLayer
from routermesh.runtime.encoder import Encoder, FloatArray
from routermesh.runtime.evidence import description_evidence, route_examples
from routermesh.runtime.example_index import CANDIDATES, ExampleIndex, Judgement
from routermesh.table_check import CheckOptions, _check, figures_at, l0_config
from routermesh_bench import prior
from routermesh_bench.fewshot_sets import (
    HELD_OUT,
    SETS,
    eval_file,
    figures_line,
    install_prior,
    layer_verdicts,
    oracle_ceiling,
    stack_files,
)
from routermesh_bench.table_tuning import TunedEncoder, tune_encoder
from routermesh_bench.tables import read_descriptions

BASE = "packaged/all-MiniLM-L6-v2"
PRIOR_FILE = Path("bench/results/experiments/tuned-prior.json")
HEADER = "set  threshold  rule: routed accuracy / coverage / out-of-scope / multi-step escalated"


def _tuner(
    models: Path, epochs: int, background: Background | None = None, base: str = BASE
) -> prior.Tuner:
    def tune(texts: Sequence[str], labels: Sequence[int], routes: int) -> TunedEncoder:
        texts, labels = list(texts), list(labels)
        if background is not None:
            extra = background.rows(texts)
            texts += extra
            labels += [routes] * len(extra)
        classes = routes + (1 if background is not None else 0)
        return tune_encoder(texts, labels, classes, base=models / base, epochs=epochs)

    return tune


class Background:
    """Generic requests (seeded draw from JSONL files), encoded once: each table is tuned
    with the ``size`` of them that are no nearer its evidence than ``near`` (base
    encoder) as one more class, never an example L0 serves."""

    def __init__(self, paths: Sequence[Path], models: Path, size: int, near: float) -> None:
        pool = [row.text for path in paths for row in read_rows(path)]
        random.Random(0).shuffle(pool)  # noqa: S311 - sampling, not secrets
        self.texts = pool[: size * 4]
        self.size, self.near = size, near
        self.encoder = Encoder(models / "packaged/all-MiniLM-L6-v2-int8")
        self.vectors = self.encoder.encode(self.texts)

    def rows(self, evidence: Sequence[str]) -> list[str]:
        nearest = (self.vectors @ self.encoder.encode(list(evidence)).T).max(axis=1)
        kept = [t for t, near in zip(self.texts, nearest, strict=True) if near < self.near]
        return kept[: self.size]


def _background_of(args: argparse.Namespace, leave_out: Path | None = None) -> Background | None:
    """``--background``'s files less ``leave_out`` (a prior table's own train file: its
    absent routes' rows are the table's out-of-scope requests)."""
    if not args.background:
        return None
    paths = [Path(p) for p in args.background.split(",")]
    kept = [p for p in paths if leave_out is None or p.resolve() != leave_out.resolve()]
    return Background(kept, args.models_dir, args.background_rows, args.near)


def fit(args: argparse.Namespace) -> None:
    sources = [
        prior.PriorSource(
            args.datasets / f"{name}/train.jsonl",
            read_descriptions(Path(f"bench/data/descriptions/{name}.json")),
            by_intent=args.by_intent,
        )
        for name in ("clinc150", "hwu64")
    ]
    started = time.monotonic()
    encoder = Encoder(args.models_dir / "packaged/all-MiniLM-L6-v2-int8")
    if args.background:
        # Each source's tables with a background that leaves that source out.
        parts = [
            prior.judge_tables(
                [source],
                encoder,
                tables=args.tables,
                k=10,
                seed=args.seed + number,
                tune=_tuner(
                    args.models_dir,
                    args.epochs,
                    _background_of(args, source.train),
                    args.base,
                ),
                max_routes=args.max_routes,
                min_routes=args.min_routes,
            )
            for number, source in enumerate(sources)
        ]
        judged = functools.reduce(operator.add, parts)
    else:
        judged = prior.judge_tables(
            sources,
            encoder,
            tables=args.tables,
            k=10,
            seed=args.seed,
            tune=_tuner(args.models_dir, args.epochs, base=args.base),
            max_routes=args.max_routes,
            min_routes=args.min_routes,
        )
    if args.judged is not None:
        args.judged.parent.mkdir(parents=True, exist_ok=True)
        args.judged.write_bytes(pickle.dumps(judged))
    fitted = prior.fit_judged(judged) | {
        "tables": args.tables * len(sources),
        "k": 10,
        "seed": args.seed,
        # With a background each source draws on its own: seed, seed + 1, ...
        "seeds": [args.seed + n for n in range(len(sources))] if args.background else None,
        "sources": [str(s.train) for s in sources],
        "by_intent": args.by_intent,
        "background": args.background,
        "epochs": args.epochs,
        "min_routes": args.min_routes,
        "max_routes": args.max_routes,
        "seconds": round(time.monotonic() - started),
    }
    _write_prior(args.prior_file, fitted)


def refit(args: argparse.Namespace) -> None:
    """One prior from the rows of several ``prior --judged`` runs, without retuning."""
    judged = [pickle.loads(Path(path).read_bytes()) for path in args.judged_runs.split(",")]  # noqa: S301 - our own files
    total = judged[0]
    for more in judged[1:]:
        total = total + more
    _write_prior(args.prior_file, prior.fit_judged(total) | {"runs": args.judged_runs})


def _write_prior(path: Path, fitted: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fitted, indent=1) + "\n")
    _say(f"tuned prior: {json.dumps(fitted)}")


def _install_tuned_prior(args: argparse.Namespace) -> None:
    install_prior(json.loads(args.prior_file.read_text()))
    calibration.PRIOR_STRENGTH = args.strength


def _options(args: argparse.Namespace, name: str, scratch: Path) -> CheckOptions:
    return CheckOptions(
        files=stack_files(name),
        models_dir=args.models_dir,
        eval=eval_file(name, args.datasets, scratch),
        offline=True,
        thresholds=tuple(float(x) for x in args.thresholds.split(",")),
    )


def _own_train(args: argparse.Namespace, name: str) -> Path | None:
    """The train file a public set's table is drawn from (left out of its background)."""
    return args.datasets / f"{name}/train.jsonl" if name in ("clinc150", "hwu64") else None


def _tuned_layer(
    args: argparse.Namespace, name: str, options: CheckOptions
) -> tuple[RouterConfig, LayerConfig, EmbeddingLayer, int, float]:
    """L0 serving an encoder tuned on the set's table: (config, its layer config, the
    layer, evidence rows (background rows not counted), seconds to tune and export)."""
    config, layer_config = l0_config(options)
    pairs, routes = route_examples(config, args.models_dir)
    evidence = pairs + [(e.text, e.route) for e in description_evidence(config)]
    order = {route: i for i, route in enumerate(routes)}
    texts = [t for t, _ in evidence]
    labels = [order[r] for _, r in evidence]
    background = _background_of(args, _own_train(args, name))
    if background is not None:
        extra = background.rows(texts)
        texts += extra
        labels += [len(routes)] * len(extra)
    started = time.monotonic()
    tuned = tune_encoder(
        texts,
        labels,
        len(routes) + (1 if background is not None else 0),
        base=args.models_dir / args.base,
        epochs=args.epochs,
        objective=args.objective,
    )
    folder = f"experiments/tuned-{name}"
    tuned.export(args.models_dir / folder)
    if args.int8:
        _quantize(args.models_dir / folder / "model.onnx")
    seconds = time.monotonic() - started
    model = layer_config.model.model_copy(update={"path": folder, "sha256": None})
    update: dict[str, object] = {"model": model}
    if args.multi_step:
        clause, joined = (float(x) for x in args.multi_step.split(":"))
        if not 0 <= joined <= clause <= 1:
            raise SystemExit(f"--multi-step {args.multi_step}: 0 <= JOINED <= CLAUSE <= 1")
        update |= {"multi_step_threshold": clause, "multi_step_joined_threshold": joined}
    served = layer_config.model_copy(update=update)
    layer = EmbeddingLayer(served, config, args.models_dir)
    return config, served, layer, len(evidence), seconds


def _judge_clauses_by_route_alone() -> None:
    """Multi-step detection judges each clause by P(route | in scope) alone: the message
    around a clause is what is in scope or not, so the clause's own doubt is left out
    (the clauses are the index's only queries asked for no candidates)."""
    classify = ExampleIndex.classify

    def judged(
        self: ExampleIndex,
        query: FloatArray,
        candidates: int = CANDIDATES,
        words: frozenset[str] = frozenset(),
    ) -> Judgement:
        j = classify(self, query, candidates, words)
        if candidates == 0 and j.in_scope > 0:
            return dataclasses.replace(j, confidence=min(1.0, j.confidence / j.in_scope))
        return j

    ExampleIndex.classify = judged  # type: ignore[method-assign]


def _quantize(model: Path) -> None:
    """The exported graph, int8 (dynamic, per tensor) in place: the shipped L0's format."""
    from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: PLC0415

    fp32 = model.with_name("model.fp32.onnx")
    model.replace(fp32)
    quantize_dynamic(str(fp32), str(model), weight_type=QuantType.QInt8)
    fp32.unlink()


def replay(args: argparse.Namespace) -> None:
    _install_tuned_prior(args)
    scratch = Path(tempfile.mkdtemp(prefix="tuned-encoder-"))
    for name in args.sets.split(","):
        options = _options(args, name, scratch)
        config, served, layer, rows, seconds = _tuned_layer(args, name, options)
        labelled = read_labelled(options.eval) if options.eval else []
        check = asyncio.run(_check(options, config, served, layer, labelled))
        if check.evaluation is None:
            raise SystemExit(f"{name}: no evaluation")
        figures = figures_line(check.evaluation)
        _say(f"{name:9s} tuned {rows} rows in {seconds:.0f} s: {figures}")
        if args.ceiling:
            target = 0.9 if name.startswith("homelab") else 0.8
            _say(f"{name:9s} {oracle_ceiling(layer, labelled, target)}")


def combine(args: argparse.Namespace) -> None:
    """The shipped L0 says whether a message is in scope or multi-step; the tuned one
    which route and how sure it is of the route."""
    scratch = Path(tempfile.mkdtemp(prefix="tuned-encoder-"))
    names = args.sets.split(",")
    base: dict[str, list[Verdict]] = {}
    for name in names:
        options = _options(args, name, scratch)
        config, layer_config = l0_config(options)
        rows = read_labelled(options.eval) if options.eval else []
        base[name] = layer_verdicts(EmbeddingLayer(layer_config, config, args.models_dir), rows)
    _install_tuned_prior(args)
    _say(HEADER)
    for name in names:
        options = _options(args, name, scratch)
        config, _, layer, _, _ = _tuned_layer(args, name, options)
        rows = read_labelled(options.eval) if options.eval else []
        tuned = layer_verdicts(layer, rows)
        escalation = config.escalation.route
        expected = [r.route_name if r.kind == "in_scope" else escalation for r in rows]
        for threshold in (float(x) for x in args.thresholds.split(",")):
            for rule in ("shipped", "tuned", "tuned-route"):
                decided = [
                    _decide(rule, b, t, threshold, escalation)
                    for b, t in zip(base[name], tuned, strict=True)
                ]
                f = figures_at(threshold, rows, expected, decided, escalation)
                _say(
                    f"{name:9s} {threshold} {rule:11s} {f.routed_accuracy} / {f.coverage} / "
                    f"{f.out_of_scope_escalated} / {f.multi_step_escalated}"
                )


def _decide(rule: str, base: Verdict, tuned: Verdict, threshold: float, escalation: str) -> str:
    if base.decisive or base.route is None:
        return escalation
    if rule == "shipped":
        return base.route if base.confidence >= threshold else escalation
    if tuned.route is None or tuned.route == escalation or tuned.decisive:
        return escalation
    judge = tuned if rule == "tuned" else base  # which L0 says the message is in scope
    in_scope = 1.0 - (judge.out_of_scope or 0.0)
    right = min(1.0, tuned.confidence / max(1e-9, 1.0 - (tuned.out_of_scope or 0.0)))
    return tuned.route if in_scope * right >= threshold else escalation


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("prior", "refit", "replay", "combine"))
    parser.add_argument("--tables", type=int, default=6, help="prior tables per source")
    parser.add_argument("--max-routes", type=int, default=40)
    parser.add_argument("--min-routes", type=int, default=prior.MIN_ROUTES)
    parser.add_argument(
        "--by-intent", action="store_true", help="prior: the train files' intents are the routes"
    )
    parser.add_argument("--seed", type=int, default=100, help="prior: the tables' draw")
    parser.add_argument("--judged", type=Path, help="prior: keep the judged rows here")
    parser.add_argument("--judged-runs", help="refit: the --judged files, comma-separated")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument(
        "--base",
        default=BASE,
        help="the fp32 encoder folder tuning starts from, relative to --models-dir "
        "(default: %(default)s; intent_encoder.py train --weights writes another)",
    )
    parser.add_argument(
        "--strength",
        type=float,
        default=1e9,
        help="the table's own leave-one-out rows against the tuned prior (shipped L0: 20)",
    )
    parser.add_argument("--prior-file", type=Path, default=PRIOR_FILE)
    parser.add_argument(
        "--int8", action="store_true", help="serve the tuned encoder quantized to int8"
    )
    parser.add_argument(
        "--objective",
        choices=("ce", "supcon", "both"),
        default="ce",
        help="replay: the tuning loss (table_tuning.Objective; the prior stays ce's)",
    )
    parser.add_argument(
        "--single-route-confidence",
        type=float,
        default=embedding.SINGLE_ROUTE_CONFIDENCE,
        help="replay: how sure L0 must be of one route for a message not to be split "
        "(default: %(default)s, shipped; above 1: always split)",
    )
    parser.add_argument(
        "--background",
        help="prior, replay: generic request files (JSONL, comma-separated) tuned as one more "
        "class; a prior table's or a public set's own train file is left out",
    )
    parser.add_argument("--background-rows", type=int, default=300)
    parser.add_argument(
        "--near", type=float, default=0.6, help="replay: background rows this near are left out"
    )
    parser.add_argument(
        "--ceiling",
        action="store_true",
        help="replay: also the in-scope rows an oracle out-of-scope cut keeps (see "
        "coverage_ceiling.py; homelab sets at 90 %%, the others at 80 %%)",
    )
    parser.add_argument(
        "--clause-route-only",
        action="store_true",
        help="replay: multi-step detection judges a clause by its route's probability alone",
    )
    parser.add_argument(
        "--multi-step",
        help="replay: CLAUSE:JOINED multi-step thresholds instead of each table's own",
    )
    parser.add_argument("--sets", default=",".join(SETS), help="default: %(default)s")
    parser.add_argument("--thresholds", default="0.4,0.5,0.6")
    parser.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--models-dir", type=Path, default=Path(".cache/models"))
    args = parser.parse_args()
    embedding.SINGLE_ROUTE_CONFIDENCE = args.single_route_confidence
    if args.clause_route_only:
        _judge_clauses_by_route_alone()
    SETS.update(HELD_OUT)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("routermesh.training").setLevel(logging.WARNING)
    {"prior": fit, "refit": refit, "replay": replay, "combine": combine}[args.mode](args)


if __name__ == "__main__":
    main()
