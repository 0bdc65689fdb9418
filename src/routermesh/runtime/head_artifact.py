"""The trained head's artifact as the serving path reads it (no training imports).

A folder with the fine-tuned encoder (``model.onnx``, ``tokenizer.json``) and
``head.json``; ``runtime/finetune.py`` (a head) or ``runtime/encoder_tuning.py`` (an
encoder tuned on a small table) writes it, L0 loads it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from routermesh.runtime import generic_requests
from routermesh.runtime.contract.config import GenericSource, HeadMode

HEAD_FILE = "head.json"
FORMAT = 1


class HeadManifest(BaseModel):
    """``head.json``: everything the serving path needs besides the encoder, and the record
    of how the head was made."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: int = FORMAT
    mode: HeadMode = Field(
        default="head",
        description="head: weights, bias and calibration serve; encoder: the tuned encoder "
        "alone serves L0's nearest-example vote (the three are empty).",
    )
    routes: tuple[str, ...]
    examples_digest: str = Field(description="examples_digest() of what it was trained on.")
    weights: list[list[float]] = Field(description="routes x dimensions, logit scale included.")
    bias: list[float]
    calibration: list[float] = Field(description="Platt weights over Features.vector() + bias.")
    examples: int
    holdout: int
    holdout_accuracy: float | None = Field(description="None: nothing held out (encoder).")
    epochs: int
    seed: int
    max_tokens: int
    base: str
    seconds: float
    created: float
    generic_requests: tuple[GenericSource, ...] = Field(
        default=(), description="The corpora of generic requests learned as one more class."
    )
    generic_rows: int = Field(default=0, ge=0, description="How many of them were learned.")
    generic_version: str = Field(
        default="", description="generic_requests.version() of the corpus and draw."
    )

    def to_json(self, indent: int | None = None) -> str:
        """``head.json``'s text. A head's has no ``mode`` (as before the field existed, so
        a pod of the previous release still reads it); a tuned encoder's names its mode,
        which such a pod refuses rather than serve it as a head."""
        exclude = {"mode"} if self.mode == "head" else set()
        if not self.generic_requests:
            # Without them, the file an earlier release wrote and reads (same digest).
            exclude |= {"generic_requests", "generic_rows", "generic_version"}
        return self.model_dump_json(indent=indent, exclude=exclude or None)

    def learned_generic(self, sources: Sequence[GenericSource]) -> bool:
        """It learned exactly ``sources``' generic requests, from this release's corpus."""
        return self.generic_requests == tuple(sources) and self.generic_version == (
            generic_requests.version_for(sources)
        )

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]


def examples_digest(pairs: Sequence[tuple[str, str]], routes: Sequence[str]) -> str:
    """Digest of a training set: the routes and the (text, route) pairs, order-free."""
    body = json.dumps({"routes": list(routes), "examples": sorted(pairs)}, ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


def read_manifest(folder: Path) -> HeadManifest | None:
    """The manifest of a finished artifact in ``folder``; None when there is none yet."""
    path = folder / HEAD_FILE
    if not path.is_file():
        return None
    return HeadManifest.model_validate_json(path.read_text(encoding="utf-8"))
