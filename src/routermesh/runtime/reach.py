"""Whether a layer's answer could decide at all, given its calibration and thresholds.

A generative layer decides only by comparing its calibrated confidence with the
threshold of the route it answered (the route's own, else the layer's, possibly moved by
feedback). Platt scaling is monotonic in the raw confidence, so the highest confidence
the cascade can ever see from the layer is the calibration of one of the two ends; when
even that is below the lowest threshold it must reach, asking the layer only costs its
model server's time. The cascade skips such a layer (``unreachable_threshold``) and the
router reports it at config load.

An embedding layer is always asked: besides its confidence it ranks the candidates
later layers judge, and it decides out-of-scope and multi-step messages by their own
thresholds.
"""

from __future__ import annotations

from collections.abc import Collection

from routermesh.runtime.contract.config import LayerConfig, RouterConfig


def highest_confidence(layer: LayerConfig) -> float:
    """The highest calibrated confidence ``layer`` can give (1.0 without calibration)."""
    return max(layer.calibrated(0.0), layer.calibrated(1.0))


def lowest_threshold(
    config: RouterConfig,
    layer: LayerConfig,
    routes: Collection[str] | None = None,
    adapted: float | None = None,
) -> float:
    """The lowest threshold ``layer`` must reach to decide among ``routes`` (every route
    when None) or to escalate, which a judge may always answer ("none", "several")."""
    base = layer.threshold if adapted is None else adapted
    overrides = [
        route.thresholds[layer.name]
        for route in config.routes
        if layer.name in route.thresholds and (routes is None or route.name in routes)
    ]
    return min([base, *overrides])


def unreachable(
    config: RouterConfig,
    layer: LayerConfig,
    routes: Collection[str] | None = None,
    adapted: float | None = None,
) -> bool:
    """True when no answer of ``layer`` among ``routes`` could decide (generative only)."""
    if layer.kind != "generative":
        return False
    return highest_confidence(layer) < lowest_threshold(config, layer, routes, adapted)


def unreachable_problems(config: RouterConfig) -> dict[str, str]:
    """The enabled layers that can never decide under ``config``, with why: what the
    router logs at load and /readyz shows in ``problems``. An adaptive threshold may fall
    to its floor, so only a layer that cannot reach even that is reported."""
    problems = {}
    for layer in config.layers:
        if not layer.enabled:
            continue
        floor = None if layer.adaptive is None else min(layer.threshold, layer.adaptive.floor)
        if not unreachable(config, layer, adapted=floor):
            continue
        highest = highest_confidence(layer)
        lowest = lowest_threshold(config, layer, adapted=floor)
        problems[layer.name] = (
            f"its calibration caps its confidence at {highest:.4f}, below its lowest "
            f"threshold {lowest:.4f}: it can never decide, so it is never asked "
            "(unreachable_threshold); fix its calibration or thresholds"
        )
    return problems
