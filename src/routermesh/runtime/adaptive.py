"""Adaptive thresholds: a layer's threshold moved by measured outcomes, with guards.

An outcome is a layer's verdict on a message (its route and calibrated confidence, as
recorded with the cached decision) paired with the route that feedback says was right:
``/v1/feedback`` with ``expected_route`` (a misroute, or a confirmation when it equals
the decided route). Every learning interval the router replays the outcomes of the
running route table and :func:`adapt` moves each adaptive layer's threshold toward the
lowest one whose decisions reach the layer's target accuracy, the way ``router-mesh
bench calibrate`` fits thresholds offline, guarded:

- nothing moves before ``min_samples`` outcomes, nor without any confirmation (reports of
  misroutes alone are no estimate of accuracy: they would only ever push it up);
- one update moves at most ``max_step``, always within ``[floor, ceiling]``;
- after a change, once enough new outcomes at or above the new threshold have arrived, an
  accuracy clearly below ``target - tolerance`` (even the upper end of its 95 % Wilson
  interval is below it: a few unlucky outcomes are not a drop) rolls the change back to
  the last good threshold, and the layer keeps it until the config changes (a human looks
  first). The last good threshold is the latest one whose own outcomes (enough of them,
  since it was set) met the target, else the configured one: the steps in between were
  never measured, so the one just before the bad step is no safer than the bad one.

Pure: no clock, no I/O; the router passes ``now`` and the outcomes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from routermesh.runtime.contract.config import AdaptiveConfig

MIN_CHANGE = 0.005
"""Smaller moves are not made (no jitter in the cache key and the metrics)."""

State = Literal["configured", "adapted", "rolled_back"]


@dataclass(frozen=True)
class Outcome:
    confidence: float
    correct: bool
    at: float
    """When the feedback arrived (seconds since the epoch)."""


@dataclass(frozen=True)
class AdaptiveState:
    """Where one layer's threshold stands."""

    configured: float
    threshold: float
    state: State = "configured"
    previous: float | None = None
    """The threshold before the last change."""
    last_good: float | None = None
    """The latest threshold whose measured accuracy met the target (what a rollback returns
    to); None: the configured one."""
    changed_at: float | None = None
    samples: int = 0
    accuracy: float | None = None
    """Measured over the outcomes at or above ``threshold``."""
    reason: str = "no outcomes yet"
    updates: int = 0

    def report(self) -> dict[str, object]:
        return {
            "configured": self.configured,
            "threshold": self.threshold,
            "state": self.state,
            "samples": self.samples,
            "accuracy": None if self.accuracy is None else round(self.accuracy, 4),
            "reason": self.reason,
            "updates": self.updates,
        }


def lowest_threshold(
    pairs: Sequence[tuple[float, bool]], target: float, min_samples: int
) -> float | None:
    """Lowest confidence t where the pairs with confidence >= t are >= target accurate
    (over at least ``min_samples`` of them); None when no t reaches it."""
    ordered = sorted(pairs, key=lambda p: -p[0])
    best: float | None = None
    correct = 0
    for count, (confidence, ok) in enumerate(ordered, start=1):
        correct += int(ok)
        at_boundary = count == len(ordered) or ordered[count][0] < confidence
        if at_boundary and count >= min_samples and correct / count >= target:
            best = confidence
    return best


def _accuracy(outcomes: Sequence[Outcome]) -> float | None:
    return sum(o.correct for o in outcomes) / len(outcomes) if outcomes else None


def wilson_upper(correct: int, total: int, z: float = 1.96) -> float:
    """Upper end of the Wilson score interval of a proportion (95 % by default)."""
    if total == 0:
        return 1.0
    p = correct / total
    centre = p + z * z / (2 * total)
    spread = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return min(1.0, (centre + spread) / (1 + z * z / total))


def adapt(
    outcomes: Sequence[Outcome], state: AdaptiveState, settings: AdaptiveConfig, now: float
) -> AdaptiveState:
    """The next state of one layer's threshold given all its outcomes so far."""
    above = [o for o in outcomes if o.confidence >= state.threshold]
    base = replace(state, samples=len(outcomes), accuracy=_accuracy(above))
    if state.state == "rolled_back":
        return base  # frozen until the config changes
    if state.previous is not None and state.changed_at is not None:
        since = [o for o in above if o.at > state.changed_at]
        right = sum(o.correct for o in since)
        if len(since) >= max(10, settings.min_samples // 2):
            measured = right / len(since)
            if wilson_upper(right, len(since)) < settings.target - settings.tolerance:
                good = state.configured if state.last_good is None else state.last_good
                return replace(
                    base,
                    threshold=good,
                    state="rolled_back",
                    previous=None,
                    changed_at=now,
                    updates=state.updates + 1,
                    reason=f"rolled back to the last good threshold {good:g}: accuracy "
                    f"{measured:.3f} over {len(since)} outcomes since the change to "
                    f"{state.threshold:g}, below {settings.target:g} - {settings.tolerance:g}",
                )
            if measured >= settings.target:
                base = replace(base, last_good=state.threshold)
    if len(outcomes) < settings.min_samples:
        return replace(base, reason=f"{len(outcomes)} of {settings.min_samples} outcomes")
    if not any(o.correct for o in outcomes):
        return replace(
            base, reason="only misroutes reported: confirmations are needed to measure accuracy"
        )
    fitted = lowest_threshold(
        [(o.confidence, o.correct) for o in outcomes], settings.target, settings.min_samples
    )
    goal = min(
        max(settings.ceiling if fitted is None else fitted, settings.floor), settings.ceiling
    )
    step = min(max(goal, state.threshold - settings.max_step), state.threshold + settings.max_step)
    step = round(step, 4)
    if abs(step - state.threshold) < MIN_CHANGE:
        return replace(base, reason=f"at the fitted threshold {goal:.4g}")
    return replace(
        base,
        threshold=step,
        state="adapted",
        previous=state.threshold,
        changed_at=now,
        updates=state.updates + 1,
        reason=f"fitted {goal:.4g} for {settings.target:g} over {len(outcomes)} outcomes"
        + ("" if fitted is not None else " (target not reached: raised)"),
    )
