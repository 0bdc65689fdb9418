"""The fine-tuning recipe of L0's encoder, shared by the trained head
(``runtime/finetune.py``) and the encoder tuned on a small table
(``runtime/encoder_tuning.py``): plain cross-entropy through a linear head over the routes,
mean pooling, unit length, batch 32, lr 5e-5 encoder / 1e-3 head, a few epochs, and the
export of the result as the ONNX graph the serving path reads. Training only: the
serving path never imports torch.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from routermesh.runtime.cpus import available_cpus
from routermesh.runtime.encoder import TOKENIZER_FILE

log = logging.getLogger("routermesh.training")

SCALE = 20.0
"""Logit scale of the head over unit-length embeddings (a cosine classifier)."""
BATCH = 32
PROGRESS_SECONDS = 10.0


class TrainingError(Exception):
    pass


@dataclass(frozen=True)
class TrainingSet:
    texts: list[str]
    labels: list[int]
    routes: tuple[str, ...]
    train_rows: list[int]
    held_rows: list[int]


def training_tokenizer(base: Path, *, max_tokens: int, seed: int, threads: int | None) -> Any:
    """``base``'s tokenizer set up for training, and torch made deterministic: the same
    rows, settings and seed give the same weights."""
    import torch  # noqa: PLC0415 - training only; the serving path has no torch
    from tokenizers import Tokenizer  # noqa: PLC0415

    torch.set_num_threads(threads or available_cpus())
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    tokenizer_file = base / TOKENIZER_FILE
    if not tokenizer_file.is_file():
        raise TrainingError(f"{base} has no {TOKENIZER_FILE}")
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.enable_truncation(max_length=max_tokens)
    tokenizer.enable_padding()
    return tokenizer


def optimizer_and_schedule(encoder: Any, linear: Any | None, steps: int) -> tuple[Any, Any]:
    """The recipe's AdamW (lr 5e-5 encoder, 1e-3 linear head, weight decay 0.01) and its
    schedule: linear warm-up over a sixteenth of ``steps``, then linear decay to zero."""
    import torch  # noqa: PLC0415

    groups = [{"params": encoder.parameters(), "lr": 5e-5}]
    if linear is not None:
        groups.append({"params": linear.parameters(), "lr": 1e-3})
    optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
    warmup = max(1, steps // 16)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min((step + 1) / warmup, max(0.0, (steps - step) / max(1, steps - warmup))),
    )
    return optimizer, schedule


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
    optimizer, schedule = optimizer_and_schedule(encoder, linear, steps)

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
                    "fine-tuning the encoder",
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
