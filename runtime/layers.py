"""Builds the cascade's layers from the config: one constructor per layer ``kind``.

A new kind of layer (an embedding classifier over the RouteTable's examples, a
routing head) registers its constructor in :data:`BUILDERS`; the cascade only
sees :class:`~routermesh.runtime.decision.Classifier` objects.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from routermesh.runtime.config import LayerConfig, RouterConfig
from routermesh.runtime.decision import Classifier
from routermesh.runtime.generative import GenerativeLayer

LayerBuilder = Callable[[LayerConfig, RouterConfig, httpx.AsyncClient], Classifier]

BUILDERS: dict[str, LayerBuilder] = {
    "generative": GenerativeLayer,
}


def build_layers(config: RouterConfig, client: httpx.AsyncClient) -> list[Classifier]:
    """The enabled layers of ``config``, in cascade order."""
    return [BUILDERS[layer.kind](layer, config, client) for layer in config.layers if layer.enabled]
