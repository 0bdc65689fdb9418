"""Fixtures of the unit tests that need the real encoder over the homelab sample."""

from __future__ import annotations

from pathlib import Path

import pytest

from routermesh.runtime.contract.config import RouterConfig
from routermesh.runtime.embedding import EmbeddingLayer
from routermesh.runtime.encoder import EncoderStore
from routermesh.runtime.packaged import materialize
from tests.support import homelab_rendered, layer_of

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def homelab_l0() -> tuple[EmbeddingLayer, RouterConfig]:
    """L0 over samples/homelab with the packaged encoder, as the sample renders it (not yet
    prepared: each test awaits ``prepare``)."""
    models = REPO / ".cache/models"
    files = materialize(models / "packaged", ["minilm-l6-onnx-int8", "minilm-l6-tokenizer"])
    folder = files["minilm-l6-onnx-int8"].parent
    config = homelab_rendered()
    l0 = layer_of(config, "l0")
    assert (l0.threshold, l0.multi_step_threshold) == (0.5, 0.4)  # the sample's settings
    l0 = l0.model_copy(
        update={"model": l0.model.model_copy(update={"path": str(folder.relative_to(models))})}
    )
    return EmbeddingLayer(l0, config, models, store=EncoderStore()), config
