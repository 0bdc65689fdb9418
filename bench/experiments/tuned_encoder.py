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
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from routermesh.labelled import LabelledRequest, read_labelled
from routermesh.runtime import calibration, embedding
from routermesh.runtime.contract.config import LayerConfig, RouterConfig
from routermesh.runtime.decision import Verdict
from routermesh.runtime.embedding import EmbeddingLayer
from routermesh.runtime.encoder import Encoder
from routermesh.runtime.evidence import description_evidence, route_examples
from routermesh.table_check import CheckOptions, _check, figures_at, l0_config
from routermesh_bench import prior
from routermesh_bench.fewshot_sets import SETS, eval_file, stack_files
from routermesh_bench.table_tuning import TunedEncoder, tune_encoder
from routermesh_bench.tables import read_descriptions

BASE = "packaged/all-MiniLM-L6-v2"
HELD_OUT = {
    "tools-test": ("tools-test", "bench/data/tools/test.jsonl", 100),
    "homelab-test": ("homelab-test", "bench/data/homelab-test.jsonl", 0),
}
"""The held-out runs (named only with ``--sets``; never tuned on)."""
PRIOR_FILE = Path("bench/results/experiments/tuned-prior.json")
HEADER = "set  threshold  rule: routed accuracy / coverage / out-of-scope / multi-step escalated"


def _tuner(models: Path, epochs: int) -> prior.Tuner:
    def tune(texts: Sequence[str], labels: Sequence[int], routes: int) -> TunedEncoder:
        return tune_encoder(texts, labels, routes, base=models / BASE, epochs=epochs)

    return tune


def fit(args: argparse.Namespace) -> None:
    sources = [
        prior.PriorSource(
            args.datasets / f"{name}/train.jsonl",
            read_descriptions(Path(f"bench/data/descriptions/{name}.json")),
        )
        for name in ("clinc150", "hwu64")
    ]
    started = time.monotonic()
    fitted = prior.fit_prior(
        sources,
        Encoder(args.models_dir / "packaged/all-MiniLM-L6-v2-int8"),
        tables=args.tables,
        k=10,
        seed=100,
        tune=_tuner(args.models_dir, args.epochs),
        max_routes=args.max_routes,
    )
    fitted |= {"epochs": args.epochs, "max_routes": args.max_routes}
    fitted["seconds"] = round(time.monotonic() - started)
    args.prior_file.parent.mkdir(parents=True, exist_ok=True)
    args.prior_file.write_text(json.dumps(fitted, indent=1) + "\n")
    _say(f"tuned prior: {json.dumps(fitted)}")


def _install_tuned_prior(args: argparse.Namespace) -> None:
    fitted = json.loads(args.prior_file.read_text())
    in_scope = tuple(fitted["in_scope"])
    correct = tuple(fitted["correct"])
    calibration.PRIOR_IN_SCOPE, calibration.PRIOR_CORRECT = in_scope, correct  # type: ignore[assignment]
    calibration.Calibration.__init__.__defaults__ = (in_scope, correct)
    calibration.PRIOR_STRENGTH = args.strength


def _options(args: argparse.Namespace, name: str, scratch: Path) -> CheckOptions:
    return CheckOptions(
        files=stack_files(name),
        models_dir=args.models_dir,
        eval=eval_file(name, args.datasets, scratch),
        offline=True,
        thresholds=tuple(float(x) for x in args.thresholds.split(",")),
    )


def _tuned_layer(
    args: argparse.Namespace, name: str, options: CheckOptions
) -> tuple[RouterConfig, LayerConfig, EmbeddingLayer, int, float]:
    """L0 serving an encoder tuned on the set's table: (config, its layer config, the
    layer, evidence rows, seconds to tune and export)."""
    config, layer_config = l0_config(options)
    pairs, routes = route_examples(config, args.models_dir)
    evidence = pairs + [(e.text, e.route) for e in description_evidence(config)]
    order = {route: i for i, route in enumerate(routes)}
    started = time.monotonic()
    tuned = tune_encoder(
        [t for t, _ in evidence],
        [order[r] for _, r in evidence],
        len(routes),
        base=args.models_dir / BASE,
        epochs=args.epochs,
        objective=args.objective,
    )
    folder = f"experiments/tuned-{name}"
    tuned.export(args.models_dir / folder)
    if args.int8:
        _quantize(args.models_dir / folder / "model.onnx")
    seconds = time.monotonic() - started
    model = layer_config.model.model_copy(update={"path": folder, "sha256": None})
    served = layer_config.model_copy(update={"model": model})
    layer = EmbeddingLayer(served, config, args.models_dir)
    return config, served, layer, len(evidence), seconds


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
        figures = " | ".join(
            f"{f.threshold}: {f.routed_accuracy} / {f.coverage} / "
            f"{f.out_of_scope_escalated} / {f.multi_step_escalated}"
            for f in check.evaluation.figures
        )
        _say(f"{name:9s} tuned {rows} rows in {seconds:.0f} s: {figures}")


def _verdicts(layer: EmbeddingLayer, rows: Sequence[LabelledRequest]) -> list[Verdict]:
    async def run() -> list[Verdict]:
        await layer.prepare()
        return [await layer.classify(row.text) for row in rows]

    return asyncio.run(run())


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
        base[name] = _verdicts(EmbeddingLayer(layer_config, config, args.models_dir), rows)
    _install_tuned_prior(args)
    _say(HEADER)
    for name in names:
        options = _options(args, name, scratch)
        config, _, layer, _, _ = _tuned_layer(args, name, options)
        rows = read_labelled(options.eval) if options.eval else []
        tuned = _verdicts(layer, rows)
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
    parser.add_argument("mode", choices=("prior", "replay", "combine"))
    parser.add_argument("--tables", type=int, default=6, help="prior tables per source")
    parser.add_argument("--max-routes", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=4)
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
    parser.add_argument("--sets", default=",".join(SETS), help="default: %(default)s")
    parser.add_argument("--thresholds", default="0.4,0.5,0.6")
    parser.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--models-dir", type=Path, default=Path(".cache/models"))
    args = parser.parse_args()
    embedding.SINGLE_ROUTE_CONFIDENCE = args.single_route_confidence
    SETS.update(HELD_OUT)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("routermesh.training").setLevel(logging.WARNING)
    {"prior": fit, "replay": replay, "combine": combine}[args.mode](args)


if __name__ == "__main__":
    main()
