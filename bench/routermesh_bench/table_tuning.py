"""L0's encoder tuned on a small table's own evidence (examples and description phrases),
for ``bench/experiments/tuned_encoder.py`` (measured, not shipped: docs/benchmarks.md).

The trained head (``runtime/finetune.py``) needs hundreds of examples: it holds a tenth
out to calibrate. A hand-written table of ten examples per route has none to spare, but
its encoder can still be fine-tuned on them (the same cross-entropy recipe, every row
trained on) and serve L0's nearest-example vote. Its confidence is then calibrated by a
prior measured on tables tuned the same way (``prior.fit_prior(..., tune=...)``), as the
table's own leave-one-out rows were trained on and would flatter it.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from routermesh.runtime.cpus import available_cpus
from routermesh.runtime.encoder import TOKENIZER_FILE, FloatArray
from routermesh.runtime.finetune import (
    TrainingError,
    TrainingSet,
    export_encoder,
    fit_encoder,
    pooled_embeddings,
)

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


def tune_encoder(
    texts: Sequence[str],
    labels: Sequence[int],
    routes: int,
    *,
    base: Path,
    epochs: int,
    seed: int = 0,
    max_tokens: int = 48,
    threads: int | None = None,
) -> TunedEncoder:
    """Fine-tune ``base`` on every row (route ``labels[i]`` of ``routes``); deterministic
    for the same rows, settings and seed."""
    import torch  # noqa: PLC0415
    from tokenizers import Tokenizer  # noqa: PLC0415

    if len(set(labels)) < 2:
        raise TrainingError("tuning needs evidence of at least two routes")
    torch.set_num_threads(threads or available_cpus())
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    tokenizer_file = base / TOKENIZER_FILE
    if not tokenizer_file.is_file():
        raise TrainingError(f"{base} has no {TOKENIZER_FILE}")
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.enable_truncation(max_length=max_tokens)
    tokenizer.enable_padding()
    data = TrainingSet(
        list(texts),
        list(labels),
        tuple(str(r) for r in range(routes)),
        list(range(len(texts))),
        [],
    )
    encoder, _ = fit_encoder(
        data, epochs=epochs, seed=seed, tokenizer=tokenizer, base=base, started=time.monotonic()
    )
    return TunedEncoder(encoder, tokenizer, tokenizer_file)
