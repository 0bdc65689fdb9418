"""The benchmark's table tuning (``bench/experiments/tuned_encoder.py``): the packaged
fp32 encoder fine-tuned on a table's evidence, reproducibly, exported in the format L0's
encoder reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from routermesh.runtime.encoder import Encoder
from routermesh.runtime.encoder_training import TrainingError
from routermesh.runtime.packaged import materialize

torch = pytest.importorskip("torch", reason="the training extra (router-mesh[train])")

from routermesh_bench.table_tuning import tune_encoder  # noqa: E402 - needs torch

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / ".cache/models"
TEXTS = [
    "list the clients on the wifi",
    "block the kids tablet",
    "which ap is the printer on",
    "restart the switch port 4",
    "start vm 104",
    "snapshot the gitlab container",
    "migrate vm 101 to node 2",
    "how much ram does ct 301 use",
]
LABELS = [0, 0, 0, 0, 1, 1, 1, 1]


@pytest.fixture(scope="module")
def base() -> Path:
    files = materialize(
        MODELS / "packaged",
        ["minilm-l6-fp32", "minilm-l6-fp32-config", "minilm-l6-fp32-tokenizer"],
    )
    return files["minilm-l6-fp32"].parent


def test_tuning_is_reproducible_and_exports_what_l0_reads(base: Path, tmp_path: Path) -> None:
    first = tune_encoder(TEXTS, LABELS, 2, base=base, epochs=1, threads=1)
    second = tune_encoder(TEXTS, LABELS, 2, base=base, epochs=1, threads=1)
    vectors = first.encode(TEXTS)
    assert vectors.shape == (8, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(vectors, second.encode(TEXTS))
    first.export(tmp_path / "tuned")
    served = Encoder(tmp_path / "tuned", threads=1).encode(TEXTS)
    np.testing.assert_allclose(served, vectors, atol=1e-4)


def test_tuning_needs_two_routes(base: Path) -> None:
    with pytest.raises(TrainingError, match="two routes"):
        tune_encoder(TEXTS[:4], LABELS[:4], 1, base=base, epochs=1)


def test_saved_weights_load_as_the_tuned_encoder_and_tune_further(
    base: Path, tmp_path: Path
) -> None:
    from routermesh.runtime.encoder_training import (  # noqa: PLC0415
        pooled_embeddings,
        training_tokenizer,
    )
    from routermesh.runtime.minilm import load_encoder  # noqa: PLC0415

    def vectors(folder: Path) -> np.ndarray:
        tokenizer = training_tokenizer(folder, max_tokens=48, seed=0, threads=1)
        with torch.no_grad():
            return np.asarray(pooled_embeddings(load_encoder(folder).eval(), tokenizer, TEXTS))

    tuned = tune_encoder(TEXTS, LABELS, 2, base=base, epochs=1, threads=1)
    tuned.save_weights(tmp_path / "saved", base)
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]
    np.testing.assert_allclose(vectors(tmp_path / "saved"), tuned.encode(TEXTS), atol=1e-6)
    assert not np.allclose(vectors(base), tuned.encode(TEXTS), atol=1e-3)
    again = tune_encoder(TEXTS, LABELS, 2, base=tmp_path / "saved", epochs=1, threads=1)
    assert not np.allclose(again.encode(TEXTS), tuned.encode(TEXTS), atol=1e-3)
