"""L0's encoder tuned on a table's rows as ``head.mode: encoder`` tunes it
(``runtime/encoder_tuning.py``), kept in PyTorch for the benchmark: ``prior.fit_prior(...,
tune=...)`` measures the tuned encoder's calibration prior on many drawn tables without
exporting each one.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from routermesh.runtime.encoder import TOKENIZER_FILE, FloatArray
from routermesh.runtime.encoder_training import (
    BATCH,
    SCALE,
    export_encoder,
    optimizer_and_schedule,
    pooled_embeddings,
    training_tokenizer,
)
from routermesh.runtime.encoder_tuning import require_two_routes, tune_rows

ENCODE_BATCH = 64


class TunedEncoder:
    """A fine-tuned encoder in PyTorch, encoding as the serving path does (mean pooling,
    unit length), for the benchmark; :meth:`export` writes what serving reads."""

    def __init__(self, encoder: Any, tokenizer: Any, tokenizer_file: Path) -> None:
        self._encoder = encoder
        self._tokenizer = tokenizer
        self._tokenizer_file = tokenizer_file

    def encode(self, texts: Sequence[str]) -> FloatArray:
        import torch  # noqa: PLC0415 - training only; the serving path has no torch

        blocks = []
        with torch.no_grad():
            for start in range(0, len(texts), ENCODE_BATCH):
                batch = texts[start : start + ENCODE_BATCH]
                blocks.append(pooled_embeddings(self._encoder, self._tokenizer, batch).numpy())
        if not blocks:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate(blocks).astype(np.float32)

    def export(self, folder: Path) -> None:
        """``model.onnx`` and ``tokenizer.json`` into ``folder`` (an L0 encoder folder)."""
        folder.mkdir(parents=True, exist_ok=True)
        export_encoder(self._encoder, self._tokenizer, folder)
        shutil.copyfile(self._tokenizer_file, folder / TOKENIZER_FILE)

    def save_weights(self, folder: Path, base: Path) -> None:
        """The PyTorch weights, ``base``'s ``config.json`` and the tokenizer into
        ``folder``: a base that :func:`tune_encoder` can tune further."""
        from routermesh.runtime.minilm import save_encoder  # noqa: PLC0415 - needs torch

        save_encoder(self._encoder, folder, base / "config.json")
        shutil.copyfile(self._tokenizer_file, folder / TOKENIZER_FILE)


Objective = Literal["ce", "supcon", "both"]
"""``ce``: what ``head.mode: encoder`` ships (cross-entropy through a linear head over the
routes); ``supcon``: supervised contrastive over batches of 8 routes x 4 rows (SetFit's
idea: pull a route's rows together, push other routes' away); ``both``: their sum."""

BATCH_ROUTES = 8
ROWS_PER_ROUTE = 4


def tune_encoder(
    texts: Sequence[str],
    labels: Sequence[int],
    route_count: int,
    *,
    base: Path,
    epochs: int,
    seed: int = 0,
    max_tokens: int = 48,
    threads: int | None = None,
    objective: Objective = "ce",
) -> TunedEncoder:
    """Fine-tune ``base`` on every row (route ``labels[i]`` of ``route_count``); ``ce`` as
    ``head.mode: encoder`` does. Deterministic for the same rows, settings and seed."""
    if objective != "ce":
        return _tune_contrastive(
            texts,
            labels,
            route_count,
            base=base,
            epochs=epochs,
            seed=seed,
            max_tokens=max_tokens,
            threads=threads,
            with_ce=objective == "both",
        )
    encoder, tokenizer = tune_rows(
        texts,
        labels,
        route_count,
        base=base,
        epochs=epochs,
        seed=seed,
        max_tokens=max_tokens,
        threads=threads,
    )
    return TunedEncoder(encoder, tokenizer, base / TOKENIZER_FILE)


def _tune_contrastive(
    texts: Sequence[str],
    labels: Sequence[int],
    route_count: int,
    *,
    base: Path,
    epochs: int,
    seed: int,
    max_tokens: int,
    threads: int | None,
    with_ce: bool,
) -> TunedEncoder:
    """The same schedule and learning rates as the shipped recipe, as many steps, but each
    batch 8 routes x 4 rows and the loss supervised contrastive (plus cross-entropy)."""
    import torch  # noqa: PLC0415

    from routermesh.runtime.minilm import load_encoder  # noqa: PLC0415

    require_two_routes(labels)
    tokenizer = training_tokenizer(base, max_tokens=max_tokens, seed=seed, threads=threads)
    encoder = load_encoder(base)
    # Drawn for every objective, as the shipped recipe draws it: the dropout that follows
    # then sees the same random stream whichever loss is measured.
    head = torch.nn.Linear(encoder.words.embedding_dim, route_count)
    torch.nn.init.normal_(head.weight, std=0.02)
    torch.nn.init.zeros_(head.bias)
    linear = head if with_ce else None
    steps = epochs * math.ceil(len(texts) / BATCH)
    optimizer, schedule = optimizer_and_schedule(encoder, linear, steps)
    rng = np.random.default_rng(seed)
    by_route: dict[int, list[int]] = {}
    for row, label in enumerate(labels):
        by_route.setdefault(label, []).append(row)
    keys = sorted(by_route)
    encoder.train()
    for _ in range(steps):
        rows: list[int] = []
        for route in rng.choice(keys, size=min(BATCH_ROUTES, len(keys)), replace=False):
            pool = by_route[int(route)]
            rows += [int(r) for r in rng.choice(pool, ROWS_PER_ROUTE, len(pool) < ROWS_PER_ROUTE)]
        embedded = pooled_embeddings(encoder, tokenizer, [texts[i] for i in rows])
        target = torch.tensor([labels[i] for i in rows])
        itself = torch.eye(len(rows), dtype=torch.bool)
        log_p = (SCALE * embedded @ embedded.T).masked_fill(itself, -1e9).log_softmax(1)
        positive = (target[:, None] == target[None, :]) & ~itself
        per_row = (log_p * positive).sum(1) / positive.sum(1).clamp(min=1)
        loss = -per_row[positive.any(1)].mean()
        if linear is not None:
            loss = loss + torch.nn.functional.cross_entropy(SCALE * linear(embedded), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    encoder.eval()
    return TunedEncoder(encoder, tokenizer, base / TOKENIZER_FILE)
