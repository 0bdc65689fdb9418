"""L0's encoder tuned on a small table's own evidence (``head.mode: encoder``).

A trained head (``runtime/finetune.py``) holds a tenth of the examples out to calibrate
its confidence, so it needs a few hundred. A hand-written table of ten examples per route
has none to spare, but its encoder can still be fine-tuned by the same recipe
(``runtime/encoder_training.py``) on every example and description phrase, and then serve
L0's nearest-example vote in place of the base encoder. L0's confidence stays its own
table fit, pulled towards a prior measured on tables tuned the same way
(:data:`routermesh.runtime.calibration.TUNED_PRIOR`): the table's leave-one-out rows were
trained on, so on their own they would flatter the tuned encoder.

The artifact is the trained head's folder (``model.onnx``, ``tokenizer.json``,
``head.json`` with ``mode: encoder`` and no head weights), made by the same Job and
swapped in the same way.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from routermesh.runtime.contract.config import HeadConfig
from routermesh.runtime.encoder import TOKENIZER_FILE
from routermesh.runtime.encoder_training import (
    TrainingError,
    TrainingSet,
    export_encoder,
    fit_encoder,
    training_tokenizer,
)
from routermesh.runtime.head_artifact import HEAD_FILE, HeadManifest


def require_two_routes(labels: Sequence[int]) -> None:
    """A classifier over one route learns nothing: refuse before any weights load."""
    if len(set(labels)) < 2:
        raise TrainingError("tuning the encoder needs evidence of at least two routes")


def tune_rows(
    texts: Sequence[str],
    labels: Sequence[int],
    route_count: int,
    *,
    base: Path,
    epochs: int,
    seed: int = 0,
    max_tokens: int = 48,
    threads: int | None = None,
    started: float | None = None,
) -> tuple[Any, Any]:
    """(encoder, tokenizer): ``base`` fine-tuned on every row (route ``labels[i]`` of
    ``route_count``), in eval mode; the same rows, settings and seed give the same weights."""
    require_two_routes(labels)
    tokenizer = training_tokenizer(base, max_tokens=max_tokens, seed=seed, threads=threads)
    data = TrainingSet(
        list(texts),
        list(labels),
        tuple(str(r) for r in range(route_count)),
        list(range(len(texts))),
        [],
    )
    encoder, _ = fit_encoder(
        data,
        epochs=epochs,
        seed=seed,
        tokenizer=tokenizer,
        base=base,
        started=time.monotonic() if started is None else started,
    )
    return encoder, tokenizer


def tune_artifact(
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
    """Tune the encoder on ``pairs`` (examples and description phrases) and write the
    artifact into ``staging``; its manifest."""
    order = {route: i for i, route in enumerate(routes)}
    encoder, tokenizer = tune_rows(
        [text for text, _ in pairs],
        [order[route] for _, route in pairs],
        len(routes),
        base=base,
        epochs=head.epochs,
        seed=head.seed,
        max_tokens=head.max_tokens,
        threads=threads,
        started=started,
    )
    export_encoder(encoder, tokenizer, staging)
    shutil.copyfile(base / TOKENIZER_FILE, staging / TOKENIZER_FILE)
    manifest = HeadManifest(
        mode="encoder",
        routes=tuple(routes),
        examples_digest=digest,
        weights=[],
        bias=[],
        calibration=[],
        examples=len(pairs),
        holdout=0,
        holdout_accuracy=None,
        epochs=head.epochs,
        seed=head.seed,
        max_tokens=head.max_tokens,
        base=head.base.uri,
        seconds=round(time.monotonic() - started, 1),
        created=time.time(),
    )
    (staging / HEAD_FILE).write_text(manifest.to_json(indent=1), encoding="utf-8")
    return manifest
