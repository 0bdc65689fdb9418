"""Routing quality from benchmark records (pure functions).

Definitions (docs/benchmarks.md repeats them for readers):

- *routed locally*: the decision is a route other than the escalation route,
  whichever layer (or the cache) made it;
- ``routed_accuracy``: share of locally routed decisions whose route is the
  row's label (an out-of-scope row routed locally is a mistake);
- ``coverage``: share of in-scope rows routed locally;
- ``oos_escalated``: share of out-of-scope rows that went to the escalation
  route (``None`` when the eval set has none);
- ``multi_step_escalated``: the same for multi-step rows (requests that need several
  routes); ``multi_step_plans``: of those escalated as ``multi_step``, the share whose
  plan names every route the row needs;
- ``in_scope_accuracy``: share of locally routed in-scope rows routed right;
- ``escalation_reasons``: per kind of row, how many escalated for each reason;
- per layer: the share of rows it decided and the accuracy of those decisions
  (choosing the escalation route for an out-of-scope row is correct);
- ``ece``: expected calibration error of a layer's confidence in its top route,
  over every row where the layer answered (10 equal-width bins);
- the accuracy-vs-coverage curve of a layer: for each threshold, the share of
  the rows it answered with at least that confidence and their accuracy.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from routermesh_bench.records import Record, layer_names

BINS = 10
CURVE_THRESHOLDS = (*(round(i / 100, 2) for i in range(0, 100, 5)), 0.97, 0.98, 0.99)


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_summary(values: Sequence[float]) -> dict[str, float | int | None]:
    def rounded(v: float | None) -> float | None:
        return None if v is None else round(v, 3)

    return {
        "n": len(values),
        "p50": rounded(percentile(values, 50)),
        "p95": rounded(percentile(values, 95)),
        "p99": rounded(percentile(values, 99)),
        "mean": rounded(statistics.fmean(values)) if values else None,
    }


def reliability(pairs: Sequence[tuple[float, bool]], bins: int = BINS) -> dict[str, Any]:
    """ECE and the reliability diagram's bins for (confidence, correct) pairs."""
    counts = [0] * bins
    hits = [0] * bins
    confidence_sums = [0.0] * bins
    for confidence, correct in pairs:
        index = min(int(confidence * bins), bins - 1)
        counts[index] += 1
        hits[index] += int(correct)
        confidence_sums[index] += confidence
    total = len(pairs)
    ece = sum(abs(hits[i] - confidence_sums[i]) for i in range(bins)) / total if total else None
    return {
        "ece": None if ece is None else round(ece, 6),
        "bins": [
            {
                "low": i / bins,
                "high": (i + 1) / bins,
                "n": counts[i],
                "accuracy": _share(hits[i], counts[i]),
                "confidence": round(confidence_sums[i] / counts[i], 6) if counts[i] else None,
            }
            for i in range(bins)
        ],
    }


def coverage_curve(
    pairs: Sequence[tuple[float, bool]], thresholds: Sequence[float] = CURVE_THRESHOLDS
) -> list[dict[str, float | int | None]]:
    total = len(pairs)
    points = []
    for threshold in thresholds:
        kept = [correct for confidence, correct in pairs if confidence >= threshold]
        points.append(
            {
                "threshold": threshold,
                "coverage": _share(len(kept), total),
                "accuracy": _share(sum(kept), len(kept)),
                "n": len(kept),
            }
        )
    return points


def quality(records: Sequence[Record], escalation_route: str) -> dict[str, Any]:
    """Everything ``quality.json`` reports about ``records``."""
    in_scope = [r for r in records if r.in_scope]
    out_of_scope = [r for r in records if r.row_kind == "out_of_scope"]
    multi_step = [r for r in records if r.row_kind == "multi_step"]
    routed = [r for r in records if r.route != escalation_route]
    routed_in_scope = [r for r in in_scope if r.route != escalation_route]
    as_multi_step = [r for r in multi_step if r.escalation_reason == "multi_step"]
    reasons: dict[str, dict[str, int]] = {}
    for record in records:
        if record.route == escalation_route:
            kind = reasons.setdefault(record.row_kind, {})
            reason = record.escalation_reason or "chose_escalation"
            kind[reason] = kind.get(reason, 0) + 1

    deciding: defaultdict[str, list[Record]] = defaultdict(list)
    for record in records:
        deciding[record.layer].append(record)
    per_layer: dict[str, Any] = {}
    for name in [*layer_names(records), "cache", "escalated"]:
        decided = deciding.get(name, [])
        per_layer[name] = {
            "share": _share(len(decided), len(records)),
            "n": len(decided),
            "accuracy": _share(sum(r.correct for r in decided), len(decided)),
        }

    ece: dict[str, float | None] = {}
    layers: dict[str, Any] = {}
    for name in layer_names(records):
        answered = [
            (verdict.confidence, verdict.route == r.gold)
            for r in records
            if (verdict := r.verdict(name)) is not None and verdict.route is not None
        ]
        errors = Counter(
            verdict.reason
            for r in records
            if (verdict := r.verdict(name)) is not None and verdict.route is None
        )
        times = [v.ms for r in records if (v := r.verdict(name)) is not None]
        curve = reliability(answered)
        ece[name] = curve["ece"]
        layers[name] = {
            "asked": sum(1 for r in records if r.verdict(name) is not None),
            "answered": len(answered),
            "abstained": dict(sorted((str(k), v) for k, v in errors.items())),
            "top1_accuracy": _share(sum(c for _, c in answered), len(answered)),
            "reliability": curve,
            "accuracy_vs_coverage": coverage_curve(answered),
            "latency_ms": latency_summary(times),
        }

    labels = sorted({r.gold for r in records} | {r.route for r in records})
    matrix = {gold: dict.fromkeys(labels, 0) for gold in labels}
    for record in records:
        matrix[record.gold][record.route] += 1

    return {
        "n": len(records),
        "n_in_scope": len(in_scope),
        "n_out_of_scope": len(out_of_scope),
        "routed_accuracy": _share(sum(r.correct for r in routed), len(routed)),
        "coverage": _share(len(routed_in_scope), len(in_scope)),
        "oos_escalated": _share(
            sum(r.route == escalation_route for r in out_of_scope), len(out_of_scope)
        ),
        "n_multi_step": len(multi_step),
        "multi_step_escalated": _share(
            sum(r.route == escalation_route for r in multi_step), len(multi_step)
        ),
        "multi_step_plans": _share(
            sum(set(r.gold_plan) <= set(r.plan) for r in as_multi_step), len(as_multi_step)
        ),
        "in_scope_accuracy": _share(sum(r.correct for r in routed_in_scope), len(routed_in_scope)),
        "escalation_reasons": {k: dict(sorted(v.items())) for k, v in sorted(reasons.items())},
        "accuracy_all": _share(sum(r.correct for r in records), len(records)),
        "ece": ece,
        "per_layer": per_layer,
        "layers": layers,
        "latency_ms": latency_summary([r.latency_ms for r in records]),
        "client_ms": latency_summary([r.client_ms for r in records]),
        "confusion": {"labels": labels, "matrix": matrix},
    }
