"""Builds the cascade's layers from the config: one constructor per layer ``kind``.

A new kind of layer registers its constructor in :data:`BUILDERS`; the cascade only
sees :class:`~routermesh.runtime.decision.Classifier` objects. A layer with heavy
set-up work (loading an encoder, embedding examples) also implements
:class:`~routermesh.runtime.decision.Preparable`: the router awaits ``prepare()``
before it swaps the new config in, so the running config serves meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from routermesh.runtime.contract.config import MODELS_DIR, LayerConfig, RouterConfig
from routermesh.runtime.decision import Classifier, Preparable
from routermesh.runtime.embedding import EmbeddingLayer, FeedbackSource
from routermesh.runtime.generative import GenerativeLayer


@dataclass(frozen=True)
class LayerContext:
    """What layers may use besides their config: the model servers' HTTP client and the
    models folder."""

    client: httpx.AsyncClient
    models_dir: Path = Path(MODELS_DIR)
    feedback: FeedbackSource | None = None
    """Newest learnable reports (misroutes, escalation-route reports), for layers that learn."""


LayerBuilder = Callable[[LayerConfig, RouterConfig, LayerContext], Classifier]

BUILDERS: dict[str, LayerBuilder] = {
    "generative": lambda layer, config, context: GenerativeLayer(layer, config, context.client),
    "embedding": lambda layer, config, context: EmbeddingLayer(
        layer, config, context.models_dir, feedback=context.feedback
    ),
}


def build_layers(config: RouterConfig, context: LayerContext) -> list[Classifier]:
    """The enabled layers of ``config``, in cascade order."""
    return [
        BUILDERS[layer.kind](layer, config, context) for layer in config.layers if layer.enabled
    ]


async def prepare_layers(layers: list[Classifier]) -> None:
    for layer in layers:
        if isinstance(layer, Preparable):
            await layer.prepare()
