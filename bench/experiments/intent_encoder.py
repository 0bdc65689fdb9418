"""Does L0 decide small tables better with an encoder fine-tuned once, before any table,
on public intent data?

``head.mode: encoder`` tunes MiniLM on one table's few dozen rows. Here MiniLM is tuned
once on many requests of many kinds: up to ``--per-intent`` rows of each intent of the
CLINC150 and HWU64 *train* splits (214 intents; ``--oos``: CLINC150's out-of-scope rows
as one more), by the same recipe (``runtime/encoder_training.py``: cross-entropy through
a linear head over the intents, mean pooling, batch 32, lr 5e-5). It learns what
separates one kind of request from another, not any table. ``train`` writes it as an L0
encoder folder (``model.onnx``, ``tokenizer.json``) that is also a base to fine-tune
further (``model.safetensors``, ``config.json``); ``replay`` serves it as L0's model
in-process on each few-shot set's table (the runs in bench/results/fewshot/) as
``router-mesh check-table`` does, and prints routed accuracy / coverage / out-of-scope
escalated / multi-step escalated per threshold, and (``--ceiling``) the in-scope rows an
oracle out-of-scope cut keeps with the route right (coverage_ceiling.py's figure);
``probe`` measures the encoder's best similarity alone, without L0's words, votes and
calibration.

Its calibration prior must be its own (the shipped one is the base encoder's): fitted by
``router-mesh bench prior`` on tables drawn from the *val* splits, since the encoder has
seen the train rows the shipped prior is drawn from; the shipped encoder's prior is
refitted the same way for a like-for-like comparison. For the same reason the CLINC150
and HWU64 K=10 sets (tables from train) flatter it; homelab and the tool table are the
measure. The held-out sets are measured only when named. The priors are kept beside the
results (bench/results/experiments/intent-encoder-priors/). What
bench/results/experiments/intent-encoder.txt holds, in order:

    M=.cache/models; P=bench/results/experiments/intent-encoder-priors
    VAL="--train ../shared/datasets/clinc150/val.jsonl --train ../shared/datasets/hwu64/val.jsonl
         --descriptions bench/data/descriptions/clinc150.json
         --descriptions bench/data/descriptions/hwu64.json"
    .venv/bin/python bench/experiments/intent_encoder.py train --per-intent 20 \
        --out $M/experiments/intent-encoder-20
    .venv/bin/python bench/experiments/intent_encoder.py train --per-intent 60 --oos \
        --out $M/experiments/intent-encoder-60-oos
    .venv/bin/router-mesh bench prior $VAL --out /tmp/p0        # -> $P/shipped-val.json
    .venv/bin/router-mesh bench prior $VAL --encoder $M/experiments/intent-encoder-20 \
        --out /tmp/p20                                        # -> $P/intent-20.json
    .venv/bin/router-mesh bench prior $VAL --encoder $M/experiments/intent-encoder-60-oos \
        --out /tmp/p60                                        # -> $P/intent-60-oos.json
    for e in "" experiments/intent-encoder-20 experiments/intent-encoder-60-oos; do
        .venv/bin/python bench/experiments/intent_encoder.py probe ${e:+--encoder $e}; done
    .venv/bin/python bench/experiments/intent_encoder.py replay --ceiling
    .venv/bin/python bench/experiments/intent_encoder.py replay --ceiling \
        --prior-file $P/shipped-val.json
    .venv/bin/python bench/experiments/intent_encoder.py replay --ceiling \
        --encoder experiments/intent-encoder-20 --prior-file $P/intent-20.json
    .venv/bin/python bench/experiments/intent_encoder.py replay --ceiling \
        --encoder experiments/intent-encoder-60-oos --prior-file $P/intent-60-oos.json
    .venv/bin/python bench/experiments/intent_encoder.py replay --sets clinc150,hwu64 \
        --thresholds 0.5 [--prior-file $P/shipped-val.json |
        --encoder experiments/intent-encoder-20 --prior-file $P/intent-20.json]

and the 20-row encoder as the base that ``head: {mode: encoder, genericRequests}`` tunes
on the table, against the same command from MiniLM (tuned-encoder-background-clauses.txt):

    .venv/bin/python bench/experiments/tuned_encoder.py replay --strength 20 \
        --thresholds 0.45,0.5 --ceiling --clause-route-only --multi-step 0.85:0.6 \
        --background ../shared/datasets/hwu64/train.jsonl,../shared/datasets/clinc150/train.jsonl \
        --prior-file bench/results/experiments/tuned-prior-background.json \
        --sets homelab,tools --base experiments/intent-encoder-20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from routermesh.labelled import read_labelled
from routermesh.runtime.embedding import EmbeddingLayer
from routermesh.runtime.encoder import Encoder
from routermesh.runtime.evidence import description_evidence, route_examples
from routermesh.table_check import CheckOptions, _check, l0_config
from routermesh_bench.fewshot_sets import (
    HELD_OUT,
    SETS,
    eval_file,
    figures_line,
    install_prior,
    oracle_ceiling,
    stack_files,
)
from routermesh_bench.table_tuning import tune_encoder

BASE = "packaged/all-MiniLM-L6-v2"
"""What training starts from (PyTorch weights)."""
SHIPPED = "packaged/all-MiniLM-L6-v2-int8"
"""L0's encoder as shipped: what ``probe`` measures without ``--encoder``."""
CORPORA = ("clinc150", "hwu64")
OUT_OF_SCOPE = "oos"
"""CLINC150's intent (and route) of its out-of-scope rows."""


def corpus(datasets: Path, per_intent: int, *, oos: bool, seed: int) -> tuple[list[str], list[int]]:
    """Up to ``per_intent`` seeded rows of every intent of the train splits, labelled by
    (corpus, intent) (``oos``: CLINC150's out-of-scope rows as one more intent)."""
    rng = random.Random(seed)  # noqa: S311 - a seeded sample, not a secret
    texts: list[str] = []
    labels: list[int] = []
    intents = 0
    for name in CORPORA:
        by_intent: dict[str, list[str]] = {}
        for line in (datasets / name / "train.jsonl").read_text().splitlines():
            row = json.loads(line)
            intent = row.get("intent") or row["route"]
            if intent == OUT_OF_SCOPE and not oos:
                continue
            by_intent.setdefault(intent, []).append(row["text"])
        for intent in sorted(by_intent):
            rows = by_intent[intent]
            rng.shuffle(rows)
            texts += rows[:per_intent]
            labels += [intents] * len(rows[:per_intent])
            intents += 1
    return texts, labels


def train(args: argparse.Namespace) -> None:
    texts, labels = corpus(args.datasets, args.per_intent, oos=args.oos, seed=args.seed)
    started = time.monotonic()
    tuned = tune_encoder(
        texts,
        labels,
        len(set(labels)),
        base=args.models_dir / BASE,
        epochs=args.epochs,
        seed=args.seed,
    )
    tuned.export(args.out)
    tuned.save_weights(args.out, args.models_dir / BASE)
    _say(
        f"trained on {len(texts)} rows of {len(set(labels))} intents, {args.epochs} epoch(s), "
        f"in {time.monotonic() - started:.0f} s -> {args.out}"
    )


def replay(args: argparse.Namespace) -> None:
    if args.prior_file:
        install_prior(json.loads(args.prior_file.read_text()))
    scratch = Path(tempfile.mkdtemp(prefix="intent-encoder-"))
    thresholds = tuple(float(x) for x in args.thresholds.split(","))
    for name in args.sets.split(","):
        options = CheckOptions(
            files=stack_files(name),
            models_dir=args.models_dir,
            eval=eval_file(name, args.datasets, scratch),
            offline=True,
            thresholds=thresholds,
        )
        labelled = read_labelled(options.eval) if options.eval else []
        config, layer_config = l0_config(options)
        if args.encoder:
            model = layer_config.model.model_copy(update={"path": args.encoder, "sha256": None})
            layer_config = layer_config.model_copy(update={"model": model})
        layer = EmbeddingLayer(layer_config, config, args.models_dir)
        check = asyncio.run(_check(options, config, layer_config, layer, labelled))
        if check.evaluation is None:
            raise SystemExit(f"{name}: no evaluation")
        _say(f"{name:12s} {figures_line(check.evaluation)}")
        if args.ceiling:
            target = 0.9 if name.startswith("homelab") else 0.8
            _say(f"{name:12s} {oracle_ceiling(layer, labelled, target)}")


def probe(args: argparse.Namespace) -> None:
    """The encoder alone: each eval row's nearest piece of evidence (example or
    description phrase), its top-1 route on in-scope rows, the AUC of the best similarity
    of in-scope against out-of-scope rows, and the in-scope rows an oracle cut on that
    similarity keeps with the nearest route right (L0's words, votes and calibration
    left out)."""
    scratch = Path(tempfile.mkdtemp(prefix="intent-encoder-"))
    encoder = Encoder(args.models_dir / (args.encoder or SHIPPED))
    for name in args.sets.split(","):
        config, _ = l0_config(
            CheckOptions(files=stack_files(name), models_dir=args.models_dir, offline=True)
        )
        pairs, _ = route_examples(config, args.models_dir)
        evidence = pairs + [(e.text, e.route) for e in description_evidence(config)]
        rows = read_labelled(eval_file(name, args.datasets, scratch))
        if not any(r.kind == "out_of_scope" for r in rows):
            _say(f"{name:12s} no out-of-scope rows")
            continue
        similarity = (
            encoder.encode([r.text for r in rows]) @ encoder.encode([t for t, _ in evidence]).T
        )
        best = similarity.max(axis=1)
        nearest = [evidence[i][1] for i in similarity.argmax(axis=1)]
        inside = [i for i, r in enumerate(rows) if r.kind == "in_scope"]
        outside = np.array([best[i] for i, r in enumerate(rows) if r.kind == "out_of_scope"])
        right = [nearest[i] == rows[i].route_name for i in inside]
        target = 0.9 if name.startswith("homelab") else 0.8
        cut = sorted(outside, reverse=True)[math.floor(len(outside) * (1 - target) + 1e-9)]
        kept = sum(1 for i, ok in zip(inside, right, strict=True) if ok and best[i] > cut)
        auc = float(
            np.mean([(p > outside).mean() + 0.5 * (p == outside).mean() for p in best[inside]])
        )
        _say(
            f"{name:12s} top-1 {100 * sum(right) / len(inside):.1f} %, AUC {auc:.3f}, ceiling "
            f"at {target:.0%} out of scope escalated: {100 * kept / len(inside):.1f} %"
        )


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("train", "replay", "probe"))
    parser.add_argument(
        "--per-intent", type=int, default=20, help="train: rows per intent (default: %(default)s)"
    )
    parser.add_argument("--epochs", type=int, default=1, help="train: default %(default)s")
    parser.add_argument("--oos", action="store_true", help="train: CLINC150's oos as an intent")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="train: the encoder folder to write")
    parser.add_argument(
        "--encoder",
        help="replay, probe: L0's encoder folder, relative to --models-dir (default: the "
        "shipped one)",
    )
    parser.add_argument("--prior-file", type=Path, help="replay: its calibration prior")
    parser.add_argument(
        "--ceiling",
        action="store_true",
        help="replay: also the oracle ceiling (homelab sets at 90 %%, the others at 80 %%)",
    )
    parser.add_argument("--sets", default="homelab,tools", help="default: %(default)s")
    parser.add_argument("--thresholds", default="0.4,0.5,0.6")
    parser.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--models-dir", type=Path, default=Path(".cache/models"))
    args = parser.parse_args()
    SETS.update(HELD_OUT)
    logging.basicConfig(level=logging.WARNING)
    if args.mode == "train" and args.out is None:
        parser.error("train needs --out")
    if args.per_intent < 1:
        parser.error("--per-intent must be at least 1")
    {"train": train, "replay": replay, "probe": probe}[args.mode](args)


if __name__ == "__main__":
    main()
