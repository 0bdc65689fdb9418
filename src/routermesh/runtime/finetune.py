"""A routing head trained from the RouteTable's examples: L0's encoder fine-tuned.

``router-mesh train-head`` (the operator's training Job, local mode, the benchmark)
fine-tunes the fp32 sentence encoder with a linear head over the routes (the
escalation route is a class too: ``__escalate__`` rows are its examples) by plain
cross-entropy, the recipe measured in docs/benchmarks.md: mean pooling, unit length, batch
32, lr 5e-5 encoder / 1e-3 head, 48 tokens, a few epochs. A seeded tenth of each
route's examples is held out to fit the confidence calibration (Platt scaling over
the head's probability and the similarity to the nearest training examples), which
the examples a model was trained on cannot give honestly. With ``head.mode: encoder``
the encoder alone is tuned instead (``runtime/encoder_tuning.py``).

The artifact is a folder the serving path reads like any L0 encoder folder:
``model.onnx`` (the fine-tuned encoder, exported from ``runtime/minilm.py``'s BERT so its
inputs and output are what :class:`~routermesh.runtime.encoder.Encoder` uses),
``tokenizer.json`` and ``head.json`` (:class:`HeadManifest`: routes, head weights,
calibration, the digest of the examples it was trained on, measurements). It is
written into a temporary folder beside the target and renamed into place, so a
reader never sees half an artifact. Same examples, settings and seed: same weights
(deterministic algorithms, fixed thread count).
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from routermesh.runtime.calibration import fit_platt
from routermesh.runtime.contract.config import HeadConfig, LayerConfig, RouterConfig
from routermesh.runtime.encoder import TOKENIZER_FILE, Encoder, FloatArray
from routermesh.runtime.encoder_training import (
    SCALE,
    TrainingError,
    TrainingSet,
    export_encoder,
    fit_encoder,
    training_tokenizer,
)
from routermesh.runtime.encoder_tuning import tune_artifact
from routermesh.runtime.evidence import route_examples, training_pairs
from routermesh.runtime.example_index import TrainedHead, head_features
from routermesh.runtime.head_artifact import (
    FORMAT,
    HEAD_FILE,
    HeadManifest,
    examples_digest,
    read_manifest,
)
from routermesh.runtime.route_groups import IntArray, RouteGroups

log = logging.getLogger("routermesh.training")

HOLDOUT = 0.1
"""Share of each route's examples held out for the calibration fit."""
MIN_HOLDOUT_ROUTE = 5
"""A route with fewer examples keeps them all for training."""
MIN_CALIBRATION = 30
"""Fewest held-out examples a confidence calibration is fitted on: a head trained on a
smaller table would report confidences nobody measured, so it is refused instead."""


def holdout_split(labels: Sequence[int], share: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, holdout) row indices: a seeded ``share`` of each route with enough rows."""
    rng = np.random.default_rng(seed)
    by_route: dict[int, list[int]] = {}
    for row, label in enumerate(labels):
        by_route.setdefault(label, []).append(row)
    train: list[int] = []
    held: list[int] = []
    for label in sorted(by_route):
        rows = by_route[label]
        order = [rows[i] for i in rng.permutation(len(rows))]
        take = round(len(rows) * share) if len(rows) >= MIN_HOLDOUT_ROUTE else 0
        held.extend(order[:take])
        train.extend(order[take:])
    return sorted(train), sorted(held)


def _layer(config: RouterConfig, name: str) -> tuple[LayerConfig, HeadConfig]:
    layer = next((item for item in config.layers if item.name == name), None)
    if layer is None or layer.kind != "embedding":
        raise TrainingError(f"no embedding layer {name!r} in the config")
    if layer.head is None:
        raise TrainingError(f"layer {name} has no head configured (layers.{name}.head)")
    return layer, layer.head


def train_head(
    config: RouterConfig,
    models_dir: Path,
    layer_name: str = "l0",
    *,
    out: Path | None = None,
    threads: int | None = None,
) -> HeadManifest:
    """Train the head of ``layer_name`` and write its artifact (``head.path`` unless ``out``).

    An artifact already there for the same examples and settings is kept (idempotent)."""
    _, head = _layer(config, layer_name)
    target = out or models_dir / head.path
    examples, routes = route_examples(config, models_dir)
    pairs = training_pairs(examples, config, head.mode)
    if len(pairs) < 2 or len({route for _, route in pairs}) < 2:
        what = "a head" if head.mode == "head" else "tuning the encoder"
        raise TrainingError(f"{what} needs examples of at least two routes")
    digest = examples_digest(pairs, routes)
    existing = _existing(target)
    if existing is not None and _same(existing, digest, head):
        log.info(
            "head already trained",
            extra={"event": "head_present", "path": str(target), "digest": existing.digest},
        )
        return existing
    base = models_dir / head.base.path
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=".head-", dir=_parent(target)) as scratch:
        staging = Path(scratch) / "artifact"
        staging.mkdir()
        train = _train if head.mode == "head" else tune_artifact
        manifest = train(
            pairs,
            routes,
            digest,
            head,
            base=base,
            staging=staging,
            threads=threads,
            started=started,
        )
        _install(staging, target)
    log.info(
        "head trained",
        extra={
            "event": "head_trained",
            "path": str(target),
            "digest": manifest.digest,
            "mode": manifest.mode,
            "examples": manifest.examples,
            "generic_rows": manifest.generic_rows,
            "holdout_accuracy": manifest.holdout_accuracy,
            "seconds": manifest.seconds,
        },
    )
    return manifest


def _existing(target: Path) -> HeadManifest | None:
    try:
        return read_manifest(target)
    except ValueError:
        return None  # unreadable: trained anew


def _same(manifest: HeadManifest, digest: str, head: HeadConfig) -> bool:
    return (
        manifest.format == FORMAT
        and manifest.mode == head.mode
        and manifest.examples_digest == digest
        and manifest.epochs == head.epochs
        and manifest.seed == head.seed
        and manifest.max_tokens == head.max_tokens
        and manifest.learned_generic(head.generic_requests)
    )


def _parent(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    return target.parent


def _install(staging: Path, target: Path) -> None:
    """Rename the finished artifact into place; a previous one is moved aside first."""
    old = target.with_name(target.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    if old.exists():
        shutil.rmtree(old)


def _train(
    pairs: Sequence[tuple[str, str]],
    routes: Sequence[str],
    digest: str,
    head: HeadConfig,
    *,
    base: Path,
    staging: Path,
    threads: int | None,
    started: float,
) -> HeadManifest:
    tokenizer = training_tokenizer(
        base, max_tokens=head.max_tokens, seed=head.seed, threads=threads
    )
    tokenizer_file = base / TOKENIZER_FILE
    order = {route: i for i, route in enumerate(routes)}
    labels = [order[route] for _, route in pairs]
    train_rows, held_rows = holdout_split(labels, HOLDOUT, head.seed)
    if len(held_rows) < MIN_CALIBRATION:
        raise TrainingError(
            f"a trained head needs about {MIN_CALIBRATION * 10} examples or more: it holds out "
            f"a tenth (at least {MIN_CALIBRATION}) to calibrate its confidence, and these "
            f"{len(pairs)} examples give {len(held_rows)}; add examples (examplesFrom), tune "
            "the encoder alone (head.mode: encoder, made for small tables) or keep L0's "
            "nearest-examples vote (head disabled)"
        )
    data = TrainingSet([t for t, _ in pairs], labels, tuple(routes), train_rows, held_rows)

    encoder, linear = fit_encoder(
        data, epochs=head.epochs, seed=head.seed, tokenizer=tokenizer, base=base, started=started
    )
    export_encoder(encoder, tokenizer, staging)
    shutil.copyfile(tokenizer_file, staging / TOKENIZER_FILE)

    # Calibrate with the serving path itself: the exported graph, run by onnxruntime.
    vectors = Encoder(staging, threads=threads).encode(data.texts)
    trained = TrainedHead(
        weights=linear.weight.detach().numpy().astype(np.float64) * SCALE,
        bias=linear.bias.detach().numpy().astype(np.float64) * SCALE,
        calibration=[],
        digest="",
    )
    calibration, accuracy = _calibrate(vectors, data, trained)
    manifest = HeadManifest(
        routes=tuple(routes),
        examples_digest=digest,
        weights=[[float(w) for w in row] for row in trained.weights],
        bias=[float(b) for b in trained.bias],
        calibration=calibration,
        examples=len(pairs),
        holdout=len(held_rows),
        holdout_accuracy=round(accuracy, 4),
        epochs=head.epochs,
        seed=head.seed,
        max_tokens=head.max_tokens,
        base=head.base.uri,
        seconds=round(time.monotonic() - started, 1),
        created=time.time(),
    )
    (staging / HEAD_FILE).write_text(manifest.to_json(indent=1), encoding="utf-8")
    return manifest


def _calibrate(
    vectors: FloatArray, data: TrainingSet, head: TrainedHead
) -> tuple[list[float], float]:
    """Platt weights from the held-out examples (against the training examples only)."""
    if not data.held_rows:
        return [0.0, 0.0, 0.0, 0.0], float("nan")  # 0.5 everywhere: nothing measured
    labels: IntArray = np.array(data.labels, dtype=np.int64)
    index_vectors = vectors[data.train_rows]
    groups = RouteGroups(labels[data.train_rows], len(data.routes))
    features = [
        head_features(vectors[row], head, index_vectors @ vectors[row], groups)
        for row in data.held_rows
    ]
    correct = [f.route == labels[row] for f, row in zip(features, data.held_rows, strict=True)]
    accuracy = sum(correct) / len(correct)
    if all(correct) or not any(correct):
        bias_only = math.log(max(accuracy, 1e-3) / max(1 - accuracy, 1e-3))
        return [0.0, 0.0, 0.0, bias_only], accuracy
    return fit_platt([f.vector() for f in features], correct), accuracy
