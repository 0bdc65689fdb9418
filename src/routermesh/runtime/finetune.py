"""A routing head trained from the RouteTable's examples: L0's encoder fine-tuned.

``router-mesh train-head`` (the operator's training Job, local mode, the benchmark)
fine-tunes the fp32 sentence encoder with a linear head over the routes (the
escalation route is a class too: ``__escalate__`` rows are its examples) by plain
cross-entropy, the recipe measured in docs/benchmarks.md: mean pooling, unit length, batch
32, lr 5e-5 encoder / 1e-3 head, 48 tokens, a few epochs. A seeded tenth of each
route's examples is held out to fit the confidence calibration (Platt scaling over
the head's probability and the similarity to the nearest training examples), which
the examples a model was trained on cannot give honestly.

The artifact is a folder the serving path reads like any L0 encoder folder:
``model.onnx`` (the fine-tuned encoder, exported by this module's own BERT so its
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from routermesh.runtime.calibration import fit_platt
from routermesh.runtime.contract.config import HeadConfig, LayerConfig, RouterConfig
from routermesh.runtime.cpus import available_cpus
from routermesh.runtime.encoder import TOKENIZER_FILE, Encoder, FloatArray
from routermesh.runtime.evidence import route_examples
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
SCALE = 20.0
"""Logit scale of the head over unit-length embeddings (a cosine classifier)."""
BATCH = 32
PROGRESS_SECONDS = 10.0


class TrainingError(Exception):
    pass


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
    pairs, routes = route_examples(config, models_dir)
    if len(pairs) < 2 or len({route for _, route in pairs}) < 2:
        raise TrainingError("a head needs examples of at least two routes")
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
        manifest = _train(
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
            "examples": manifest.examples,
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
        and manifest.examples_digest == digest
        and manifest.epochs == head.epochs
        and manifest.seed == head.seed
        and manifest.max_tokens == head.max_tokens
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


@dataclass(frozen=True)
class TrainingSet:
    texts: list[str]
    labels: list[int]
    routes: tuple[str, ...]
    train_rows: list[int]
    held_rows: list[int]


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
    import torch  # noqa: PLC0415 - training only; the serving path has no torch
    from tokenizers import Tokenizer  # noqa: PLC0415

    torch.set_num_threads(threads or available_cpus())
    torch.manual_seed(head.seed)
    torch.use_deterministic_algorithms(True)
    tokenizer_file = base / TOKENIZER_FILE
    if not tokenizer_file.is_file():
        raise TrainingError(f"{base} has no {TOKENIZER_FILE}")
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.enable_truncation(max_length=head.max_tokens)
    tokenizer.enable_padding()
    order = {route: i for i, route in enumerate(routes)}
    labels = [order[route] for _, route in pairs]
    train_rows, held_rows = holdout_split(labels, HOLDOUT, head.seed)
    if len(held_rows) < MIN_CALIBRATION:
        raise TrainingError(
            f"a trained head needs about {MIN_CALIBRATION * 10} examples or more: it holds out "
            f"a tenth (at least {MIN_CALIBRATION}) to calibrate its confidence, and these "
            f"{len(pairs)} examples give {len(held_rows)}; add examples (examplesFrom) or "
            "keep L0's nearest-examples vote (head disabled)"
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
    (staging / HEAD_FILE).write_text(manifest.model_dump_json(indent=1), encoding="utf-8")
    return manifest


def fit_encoder(
    data: TrainingSet, *, epochs: int, seed: int, tokenizer: Any, base: Path, started: float
) -> tuple[Any, Any]:
    """Fine-tune the encoder and the linear head on the training rows; both in eval mode."""
    import torch  # noqa: PLC0415

    from routermesh.runtime.minilm import load_encoder  # noqa: PLC0415

    encoder = load_encoder(base)
    linear = torch.nn.Linear(encoder.words.embedding_dim, len(data.routes))
    torch.nn.init.normal_(linear.weight, std=0.02)
    torch.nn.init.zeros_(linear.bias)
    steps = epochs * math.ceil(len(data.train_rows) / BATCH)
    optimizer = torch.optim.AdamW(
        [
            {"params": encoder.parameters(), "lr": 5e-5},
            {"params": linear.parameters(), "lr": 1e-3},
        ],
        weight_decay=0.01,
    )
    warmup = max(1, steps // 16)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min((step + 1) / warmup, max(0.0, (steps - step) / max(1, steps - warmup))),
    )

    def embed(rows: Sequence[int]) -> Any:
        return pooled_embeddings(encoder, tokenizer, [data.texts[i] for i in rows])

    rng = np.random.default_rng(seed)
    encoder.train()
    step = 0
    last_report = time.monotonic()
    for epoch in range(epochs):
        permutation = [data.train_rows[i] for i in rng.permutation(len(data.train_rows))]
        for start in range(0, len(permutation), BATCH):
            rows = permutation[start : start + BATCH]
            target = torch.tensor([data.labels[i] for i in rows], dtype=torch.long)
            loss = torch.nn.functional.cross_entropy(SCALE * linear(embed(rows)), target)
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            schedule.step()
            step += 1
            if time.monotonic() - last_report >= PROGRESS_SECONDS or step == steps:
                last_report = time.monotonic()
                elapsed = last_report - started
                log.info(
                    "training head",
                    extra={
                        "event": "head_progress",
                        "epoch": epoch + 1,
                        "step": step,
                        "steps": steps,
                        "loss": round(float(loss.detach()), 4),
                        "elapsed_seconds": round(elapsed),
                        "eta_seconds": round(elapsed / step * (steps - step)),
                    },
                )
    encoder.eval()
    return encoder, linear


def pooled_embeddings(encoder: Any, tokenizer: Any, texts: Sequence[str]) -> Any:
    """``texts`` through the PyTorch ``encoder``: mean pooling over the tokens, unit length
    (what the serving path computes from the exported graph)."""
    import torch  # noqa: PLC0415

    encodings = tokenizer.encode_batch(list(texts))
    ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
    mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)
    states = encoder(ids, mask, torch.zeros_like(ids))
    weights = mask.unsqueeze(-1).to(states.dtype)
    pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


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


def export_encoder(encoder: object, tokenizer: object, staging: Path) -> None:
    """Write ``encoder`` as ``model.onnx`` into ``staging`` (the serving path's graph)."""
    import torch  # noqa: PLC0415

    sample = tokenizer.encode_batch(["a short example", "and a second, longer example"])  # type: ignore[attr-defined]
    ids = torch.tensor([e.ids for e in sample], dtype=torch.long)
    mask = torch.tensor([e.attention_mask for e in sample], dtype=torch.long)
    axes = {0: "batch", 1: "sequence"}
    names = ["input_ids", "attention_mask", "token_type_ids"]
    with torch.no_grad():
        torch.onnx.export(
            encoder,  # type: ignore[arg-type]
            (ids, mask, torch.zeros_like(ids)),
            str(staging / "model.onnx"),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes={name: axes for name in [*names, "last_hidden_state"]},
            opset_version=17,
            dynamo=False,
        )
