"""Adaptive thresholds replayed on a quality run's records (``router-mesh bench adapt``).

The router's own update rule (:func:`routermesh.runtime.adaptive.adapt`) is fed the
outcomes of a seeded half of the rows, as feedback would bring them: a seeded share of
the requests gets a report (a misroute or a confirmation), one learning interval per
batch. The threshold it ends at is then measured on the other half against the threshold
it started from, with the rest of the cascade as the run had it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from routermesh.runtime.adaptive import AdaptiveState, Outcome, adapt
from routermesh.runtime.contract.config import AdaptiveConfig
from routermesh_bench.calibrate import LayerFit, expected
from routermesh_bench.records import Record


@dataclass(frozen=True)
class ReplayOptions:
    layer: str = "l0"
    start: float = 0.95
    settings: AdaptiveConfig = field(default_factory=AdaptiveConfig)
    share: float = 0.25
    """Requests that get feedback."""
    batch: int = 200
    """Requests per learning interval."""
    seed: int = 0


def _fits(thresholds: dict[str, float]) -> list[LayerFit]:
    return [
        LayerFit(
            layer=name, target=0.0, threshold=value, reached=True, rows=0, decided=0, correct=0
        )
        for name, value in thresholds.items()
    ]


def replay(
    records: Sequence[Record],
    thresholds: dict[str, float],
    escalation_route: str,
    options: ReplayOptions,
) -> dict[str, Any]:
    """Feed one half, measure on the other; ``thresholds`` are the run's, by layer."""
    rows = list(records)
    rng = random.Random(options.seed)  # noqa: S311 - a split, not a secret
    rng.shuffle(rows)
    feed, check = rows[: len(rows) // 2], rows[len(rows) // 2 :]
    state = AdaptiveState(configured=options.start, threshold=options.start)
    outcomes: list[Outcome] = []
    trajectory = []
    for interval, start in enumerate(range(0, len(feed), options.batch)):
        for record in feed[start : start + options.batch]:
            verdict = record.verdict(options.layer)
            if verdict is None or verdict.route in (None, escalation_route) or verdict.reason:
                continue  # the router measures routing decisions only (see Router.adapt)
            if rng.random() >= options.share:
                continue  # no report for this request
            outcomes.append(
                Outcome(verdict.confidence, verdict.route == record.gold, float(interval))
            )
        state = adapt(outcomes, state, options.settings, now=interval + 0.5)
        trajectory.append(
            {
                "requests": min(start + options.batch, len(feed)),
                "outcomes": len(outcomes),
                "threshold": state.threshold,
                "state": state.state,
            }
        )
    before = {**thresholds, options.layer: options.start}
    after = {**thresholds, options.layer: state.threshold}
    return {
        "layer": options.layer,
        "start": options.start,
        "end": state.threshold,
        "state": state.state,
        "reason": state.reason,
        "settings": options.settings.model_dump(),
        "share": options.share,
        "batch": options.batch,
        "outcomes": len(outcomes),
        "fed_rows": len(feed),
        "trajectory": trajectory,
        "other_half_before": expected(check, _fits(before), escalation_route),
        "other_half_after": expected(check, _fits(after), escalation_route),
    }
