"""L0's encoder tuned on a small table's own evidence (``head.mode: encoder``).

A trained head (``runtime/finetune.py``) holds a tenth of the examples out to calibrate
its confidence, so it needs a few hundred. A hand-written table of ten examples per route
has none to spare, but its encoder can still be fine-tuned by the same recipe
(``runtime/encoder_training.py``) on every example and description phrase, and then serve
L0's nearest-example vote in place of the base encoder. L0's confidence stays its own
table fit, pulled towards a prior measured on tables tuned the same way
(:data:`routermesh.runtime.calibration.TUNED_PRIOR`): the table's leave-one-out rows were
trained on, so on their own they would flatter the tuned encoder.

With ``generic_requests`` the encoder also learns a few hundred generic requests as one
more class (``runtime/generic_requests.py``), so that requests outside every route sit
apart from the routes' own; L0 then uses the prior measured on tables tuned that way.

The artifact is the trained head's folder (``model.onnx``, ``tokenizer.json``,
``head.json`` with ``mode: encoder`` and no head weights), made by the same Job and
swapped in the same way.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from routermesh.runtime import generic_requests
from routermesh.runtime.contract.config import GenericSource, HeadConfig
from routermesh.runtime.encoder import TOKENIZER_FILE
from routermesh.runtime.encoder_training import (
    TrainingError,
    TrainingSet,
    export_encoder,
    fit_encoder,
    pooled_embeddings,
    training_tokenizer,
)
from routermesh.runtime.head_artifact import HEAD_FILE, HeadManifest

ENCODE_BATCH = 64

log = logging.getLogger("routermesh.training")


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
    texts = [text for text, _ in pairs]
    labels = [order[route] for _, route in pairs]
    generic: list[str] = []
    if head.generic_requests:
        generic = generic_rows(
            texts, head.generic_requests, base=base, max_tokens=head.max_tokens, threads=threads
        )
        if len(generic) < generic_requests.ROWS // 2:
            # The serving prior was measured with ROWS of them: fewer is a weaker recipe.
            log.warning(
                "few generic requests left beside the table",
                extra={
                    "event": "generic_requests_few",
                    "rows": len(generic),
                    "measured_with": generic_requests.ROWS,
                    "sources": list(head.generic_requests),
                },
            )
    encoder, tokenizer = tune_rows(
        texts + generic,
        labels + [len(routes)] * len(generic),
        len(routes) + (1 if generic else 0),
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
        generic_requests=head.generic_requests,
        generic_rows=len(generic),
        generic_version=generic_requests.version_for(head.generic_requests),
    )
    (staging / HEAD_FILE).write_text(manifest.to_json(indent=1), encoding="utf-8")
    return manifest


def generic_rows(
    evidence: Sequence[str],
    sources: Sequence[GenericSource],
    *,
    base: Path,
    max_tokens: int,
    threads: int | None,
) -> list[str]:
    """The packaged generic requests of ``sources`` that ``base`` puts no nearer the
    table's ``evidence`` than ``generic_requests.NEAR``, ``generic_requests.ROWS`` of them."""
    import torch  # noqa: PLC0415 - training only

    from routermesh.runtime.minilm import load_encoder  # noqa: PLC0415

    try:
        pool = generic_requests.load(sources)
        found = generic_requests.version()
    except generic_requests.CorpusError as error:
        raise TrainingError(str(error)) from error
    if found != generic_requests.version_for(sources):
        # An artifact records the version it names: a different corpus would be served as it.
        raise TrainingError(
            f"the packaged generic request corpus is version {found}, not the "
            f"{generic_requests.version_for(sources)} this release names"
        )
    tokenizer = training_tokenizer(base, max_tokens=max_tokens, seed=0, threads=threads)
    encoder = load_encoder(base)
    encoder.eval()

    def encode(texts: Sequence[str]) -> Any:
        with torch.no_grad():
            parts = [
                pooled_embeddings(encoder, tokenizer, texts[i : i + ENCODE_BATCH]).numpy()
                for i in range(0, len(texts), ENCODE_BATCH)
            ]
        return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)

    return generic_requests.unlike(pool, encode(pool), encode(list(evidence)))
