"""Threshold calibration: the seed's "adaptive thresholds", fitted reproducibly.

Given records where every layer was asked (``explain`` + ``all_layers``), it
replays the cascade offline and picks, layer by layer in cascade order, the
lowest threshold whose decisions reach the layer's target accuracy over the rows
that reach that layer (so each threshold maximizes the layer's coverage at its
target). Optionally (``--per-route``) a route whose own decisions miss the target at
the layer's threshold gets a higher per-route threshold (only with enough samples).

Targets default to the seed's figures, L1 95 % and L2 92 %, and 98 % for L0, the
layer that decides most traffic (other layers 95 %).
The result is written as a RouterMesh merge patch (``kubectl patch routermesh
NAME --type merge --patch-file routermesh-patch.yaml``), the per-route
overrides for the RouteTable, and ``calibration.json`` with the expected
coverage and accuracy.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from routermesh.runtime.adaptive import lowest_threshold
from routermesh.runtime.calibration import fit_platt
from routermesh_bench.metrics import reliability
from routermesh_bench.records import Record, layer_names

DEFAULT_TARGETS = {"l0": 0.98, "l1": 0.95, "l2": 0.92}
DEFAULT_TARGET = 0.95
MIN_SAMPLES = 20
"""Fewest decisions a threshold (or a per-route override) may be fitted on."""
NEVER = 1.0
"""The threshold of a layer that cannot reach its target: it routes only at certainty."""


@dataclass
class LayerFit:
    layer: str
    target: float
    threshold: float
    reached: bool
    rows: int
    """Rows that reach the layer (not decided by an earlier one)."""
    decided: int
    correct: int
    per_route: dict[str, float] = field(default_factory=dict)

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.decided if self.decided else None


def _floor(threshold: float) -> float:
    """Six decimals (as the API reports confidences), never above the fitted value, so the
    written threshold routes every row the fit counted."""
    return math.floor(threshold * 1e6) / 1e6


def _verdict_pairs(rows: Sequence[Record], layer: str) -> list[tuple[Record, str, float]]:
    pairs = []
    for record in rows:
        verdict = record.verdict(layer)
        # A verdict with a reason (a disagreement) never decides, at any threshold.
        if verdict is not None and verdict.route is not None and verdict.reason is None:
            pairs.append((record, verdict.route, verdict.confidence))
    return pairs


def fit(
    records: Sequence[Record],
    targets: dict[str, float] | None = None,
    *,
    per_route: bool = False,
    min_samples: int = MIN_SAMPLES,
) -> list[LayerFit]:
    """Thresholds for each layer (cascade order) maximizing coverage at its target."""
    targets = {**DEFAULT_TARGETS, **(targets or {})}
    remaining = list(records)
    fits = []
    for layer in layer_names(records):
        target = targets.get(layer, DEFAULT_TARGET)
        answered = _verdict_pairs(remaining, layer)
        found = lowest_threshold(
            [(conf, route == r.gold) for r, route, conf in answered], target, min_samples
        )
        threshold = NEVER if found is None else _floor(found)
        overrides: dict[str, float] = {}
        if per_route and found is not None:
            for route in sorted({route for _, route, _ in answered}):
                mine = [
                    (conf, route == r.gold)
                    for r, chosen, conf in answered
                    if chosen == route and conf >= threshold
                ]
                if len(mine) < min_samples or sum(ok for _, ok in mine) / len(mine) >= target:
                    continue
                own = lowest_threshold(mine, target, min_samples)
                overrides[route] = NEVER if own is None else _floor(own)
        decided = [
            (r, route) for r, route, conf in answered if conf >= overrides.get(route, threshold)
        ]
        decided_ids = {id(r) for r, _ in decided}
        fits.append(
            LayerFit(
                layer=layer,
                target=target,
                threshold=threshold,
                reached=found is not None,
                rows=len(remaining),
                decided=len(decided),
                correct=sum(route == r.gold for r, route in decided),
                per_route=overrides,
            )
        )
        remaining = [r for r in remaining if id(r) not in decided_ids]
    return fits


def meet_oos(
    records: Sequence[Record], fits: list[LayerFit], escalation_route: str, target: float
) -> list[LayerFit]:
    """``fits`` with the first layer's threshold raised, as little as it takes, until the
    cascade escalates ``target`` of the out-of-scope rows (accuracy fits say nothing about
    requests that belong nowhere); unchanged when it already does or there are none. The
    lowest such threshold keeps the most coverage."""

    def reached(candidate: list[LayerFit]) -> bool:
        value = expected(records, candidate, escalation_route)["oos_escalated"]
        return value is None or float(value) >= target

    return _raised_until(records, fits, reached)


def _raised_until(
    records: Sequence[Record],
    fits: list[LayerFit],
    reached: Callable[[list[LayerFit]], bool],
) -> list[LayerFit]:
    """``fits`` with the first layer's threshold raised to the lowest confidence where
    ``reached`` holds (``fits`` itself when it already holds, or when no row is out of
    scope; the original fits when nothing below certainty does)."""
    if not fits or not any(not r.in_scope for r in records) or reached(fits):
        return fits
    first = fits[0]
    confidences = sorted(
        {conf for _, _, conf in _verdict_pairs(records, first.layer) if conf > first.threshold}
    )
    for confidence in [*confidences, NEVER]:
        candidate = [_at_threshold(records, first, _ceil(confidence)), *fits[1:]]
        if reached(candidate):
            return candidate
    return fits


def _at_threshold(records: Sequence[Record], first: LayerFit, threshold: float) -> LayerFit:
    """The first layer's fit moved to ``threshold``, its decisions counted again (every
    row reaches the first layer)."""
    decided = [
        (record, route)
        for record, route, conf in _verdict_pairs(records, first.layer)
        if conf >= first.per_route.get(route, threshold)
    ]
    return replace(
        first,
        threshold=threshold,
        decided=len(decided),
        correct=sum(route == record.gold for record, route in decided),
    )


def _ceil(threshold: float) -> float:
    return math.ceil(threshold * 1e6) / 1e6


def bounded(fits: Sequence[LayerFit], current: dict[str, float], step: float) -> list[LayerFit]:
    """``fits`` moved at most ``step`` away from the ``current`` thresholds (a guarded
    update: one calibration never swings a layer far; run it again to go further)."""
    out = []
    for layer_fit in fits:
        now = current.get(layer_fit.layer)
        if now is None:
            out.append(layer_fit)
            continue

        def clamp(value: float, now: float = now) -> float:
            return min(max(value, now - step), now + step, 1.0)

        out.append(
            replace(
                layer_fit,
                threshold=clamp(layer_fit.threshold),
                per_route={k: clamp(v) for k, v in layer_fit.per_route.items()},
            )
        )
    return out


def expected(
    records: Sequence[Record],
    fits: Sequence[LayerFit],
    escalation_route: str,
    oos_share: float | None = None,
) -> dict[str, Any]:
    """The cascade's routed accuracy, coverage and OOS escalation under ``fits``; with
    ``oos_share``, also the routed accuracy when out-of-scope requests are that share of
    the traffic (each kind's rates weighted, for eval files with far fewer of them than
    real traffic: CLINC150 val has 3 %, its test 18 %)."""
    in_scope = sum(r.in_scope for r in records)
    out_of_scope = len(records) - in_scope
    routed = correct = routed_in_scope = correct_in_scope = oos_escalated = 0
    for record in records:
        decision = _decision(record, fits, escalation_route)
        if decision != escalation_route:
            routed += 1
            correct += decision == record.gold
            routed_in_scope += record.in_scope
            correct_in_scope += record.in_scope and decision == record.gold
        elif not record.in_scope:
            oos_escalated += 1
    result: dict[str, Any] = {
        "routed_accuracy": round(correct / routed, 6) if routed else None,
        "coverage": round(routed_in_scope / in_scope, 6) if in_scope else None,
        "oos_escalated": round(oos_escalated / out_of_scope, 6) if out_of_scope else None,
        "n": len(records),
    }
    if oos_share is not None:
        result["oos_share"] = oos_share
        result["routed_accuracy_at_share"] = _at_share(
            oos_share,
            in_scope=in_scope,
            out_of_scope=out_of_scope,
            routed_in_scope=routed_in_scope,
            correct_in_scope=correct_in_scope,
            routed_out_of_scope=out_of_scope - oos_escalated,
        )
    return result


def _decision(record: Record, fits: Sequence[LayerFit], escalation_route: str) -> str:
    for layer_fit in fits:
        verdict = record.verdict(layer_fit.layer)
        if verdict is None or verdict.route is None or verdict.reason is not None:
            continue
        if verdict.confidence >= layer_fit.per_route.get(verdict.route, layer_fit.threshold):
            return verdict.route
    return escalation_route


def _at_share(
    share: float,
    *,
    in_scope: int,
    out_of_scope: int,
    routed_in_scope: int,
    correct_in_scope: int,
    routed_out_of_scope: int,
) -> float | None:
    """Routed accuracy with out-of-scope rows weighted to ``share`` of all rows (an
    out-of-scope request routed locally is always a mistake)."""
    if not in_scope or not out_of_scope:
        return None
    right = (1 - share) * correct_in_scope / in_scope
    routed = right + (1 - share) * (routed_in_scope - correct_in_scope) / in_scope
    routed += share * routed_out_of_scope / out_of_scope
    return round(right / routed, 6) if routed else None


def meet_share(
    records: Sequence[Record],
    fits: list[LayerFit],
    escalation_route: str,
    share: float,
    target: float,
) -> list[LayerFit]:
    """``fits`` with the first layer's threshold raised, as little as it takes, until the
    routed accuracy reaches ``target`` with out-of-scope requests ``share`` of the traffic:
    accuracy fitted on an eval file with few of them promises more than real traffic
    gives. Unchanged when it already does or there are no out-of-scope rows."""

    def reached(candidate: list[LayerFit]) -> bool:
        value = expected(records, candidate, escalation_route, share)["routed_accuracy_at_share"]
        return value is None or float(value) >= target

    return _raised_until(records, fits, reached)


def mesh_patch(
    fits: Sequence[LayerFit],
    calibrations: dict[str, tuple[float, float]] | None = None,
    headed: Collection[str] = (),
) -> dict[str, Any]:
    """The RouterMesh merge patch that sets the fitted thresholds (and calibrations); for
    a layer in ``headed`` (the records came from its trained head) under the layer's
    ``head``, so the base encoder keeps its own."""
    layers: dict[str, Any] = {f.layer: {"threshold": f.threshold} for f in fits}
    for layer, (slope, intercept) in (calibrations or {}).items():
        layers.setdefault(layer, {})["calibration"] = {
            "slope": round(slope, 6),
            "intercept": round(intercept, 6),
        }
    for layer in headed:
        if layer in layers:
            layers[layer] = {"head": layers[layer]}
    return {"spec": {"layers": layers}}


def route_thresholds(fits: Sequence[LayerFit]) -> dict[str, dict[str, float]]:
    """Per-route overrides, as RouteTable ``spec.routes[].thresholds`` by route name."""
    routes: dict[str, dict[str, float]] = {}
    for layer_fit in fits:
        for route, threshold in layer_fit.per_route.items():
            routes.setdefault(route, {})[layer_fit.layer] = threshold
    return dict(sorted(routes.items()))


# --- confidence calibration (Platt scaling) ------------------------------------------------------


@dataclass(frozen=True)
class PlattFit:
    layer: str
    slope: float
    intercept: float
    ece_before: float | None
    """Expected calibration error on the held-out half, as the layer reports confidence."""
    ece_after: float | None
    """The same rows with the calibration fitted on the other half."""
    adopted: bool
    """Only when it lowers the held-out error (calibrate where it pays)."""


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-max(min(z, 40.0), -40.0)))


def _pairs(records: Sequence[Record], layer: str) -> list[tuple[float, bool]]:
    return [
        (v.confidence, v.route == r.gold)
        for r in records
        if (v := r.verdict(layer)) is not None and v.route is not None
    ]


def _platt(pairs: Sequence[tuple[float, bool]]) -> tuple[float, float]:
    slope, intercept = fit_platt([[_logit(c)] for c, _ in pairs], [ok for _, ok in pairs])
    return slope, intercept


def _scaled(
    pairs: Sequence[tuple[float, bool]], params: tuple[float, float]
) -> list[tuple[float, bool]]:
    slope, intercept = params
    return [(_sigmoid(slope * _logit(c) + intercept), ok) for c, ok in pairs]


def fit_calibration(
    records: Sequence[Record], min_samples: int = MIN_SAMPLES, seed: int = 0
) -> list[PlattFit]:
    """Platt scaling per layer, fitted on a seeded half and judged on the other; adopted
    (and refitted on all rows) only where it lowers the held-out calibration error."""
    shuffled = list(records)
    random.Random(seed).shuffle(shuffled)  # noqa: S311 - a split
    half = len(shuffled) // 2
    fit_half, check_half = shuffled[:half], shuffled[half:]
    fits = []
    for layer in layer_names(records):
        train, check = _pairs(fit_half, layer), _pairs(check_half, layer)
        if len(train) < min_samples or len(check) < min_samples:
            fits.append(PlattFit(layer, 1.0, 0.0, None, None, adopted=False))
            continue
        before = reliability(check)["ece"]
        after = reliability(_scaled(check, _platt(train)))["ece"]
        adopted = before is not None and after is not None and after < before
        slope, intercept = _platt(_pairs(records, layer)) if adopted else (1.0, 0.0)
        fits.append(PlattFit(layer, slope, intercept, before, after, adopted))
    return fits


def calibrated_records(records: Sequence[Record], fits: Sequence[PlattFit]) -> list[Record]:
    """``records`` with the adopted calibrations applied to each layer's confidence."""
    adopted = {f.layer: (f.slope, f.intercept) for f in fits if f.adopted}
    if not adopted:
        return list(records)
    out = []
    for record in records:
        trace = tuple(
            v.model_copy(
                update={
                    "confidence": _sigmoid(
                        adopted[v.layer][0] * _logit(v.confidence) + adopted[v.layer][1]
                    )
                }
            )
            if v.layer in adopted and v.route is not None
            else v
            for v in record.trace
        )
        out.append(record.model_copy(update={"trace": trace}))
    return out


def compose(current: tuple[float, float] | None, new: tuple[float, float]) -> tuple[float, float]:
    """The single calibration equal to ``current`` followed by ``new`` (records hold
    confidences the run already calibrated)."""
    if current is None:
        return new
    (a1, b1), (a2, b2) = current, new
    return a2 * a1, a2 * b1 + b2
