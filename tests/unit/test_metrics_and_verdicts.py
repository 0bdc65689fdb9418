"""Metric names and semantics, the latency window behind the HPA metric, and verdicts."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from routermesh.runtime.decision import Classifier, Reason, Verdict
from routermesh.runtime.metrics import LatencyWindow, RouterMetrics


def test_latency_window_percentiles_and_expiry() -> None:
    now = [0.0]
    window = LatencyWindow(seconds=60, clock=lambda: now[0])
    assert window.percentile(0.95) == 0.0
    for value in range(1, 101):
        window.observe(value / 1000)
    assert window.percentile(0.95) == pytest.approx(0.095)
    assert window.percentile(0.5) == pytest.approx(0.050)
    now[0] = 61.0
    window.observe(0.2)
    assert window.percentile(0.95) == pytest.approx(0.2)


def test_metric_names_are_the_designs() -> None:
    metrics = RouterMetrics()
    metrics.decisions.labels(route="grafana", layer="l1").inc()
    metrics.cache_hits.inc()
    metrics.observe_latency("l1", 0.012)
    metrics.escalations.labels(reason=Reason.TIMEOUT).inc()
    metrics.layer_errors.labels(layer="l2", reason=Reason.HTTP_ERROR).inc()
    metrics.set_config("abc")
    metrics.set_config("def")
    text = generate_latest(metrics.registry).decode()
    for line in [
        'router_decisions_total{layer="l1",route="grafana"} 1.0',
        "router_cache_hits_total 1.0",
        'router_latency_seconds_bucket{layer="l1",le="0.02"} 1.0',
        'router_escalations_total{reason="timeout"} 1.0',
        'router_layer_errors_total{layer="l2",reason="http_error"} 1.0',
        'router_config_info{hash="def"} 1.0',
        "router_latency_p95_seconds 0.012",
    ]:
        assert line in text
    assert 'hash="abc"' not in text  # only the running config is reported


def test_verdicts_route_or_abstain() -> None:
    assert Verdict(route="elastic", confidence=0.9).reason is None
    assert Verdict.abstain(Reason.TIMEOUT).route is None
    with pytest.raises(ValueError, match="outside"):
        Verdict(route="elastic", confidence=1.2)
    with pytest.raises(ValueError, match="not both"):
        Verdict(route="elastic", confidence=0.5, reason=Reason.TIMEOUT)
    assert Reason.TIMEOUT.is_error and not Reason.LOW_CONFIDENCE.is_error


def test_a_layer_is_anything_with_a_name_classify_and_ready() -> None:
    class Keyword:
        name = "l0"

        async def classify(self, message: str) -> Verdict:
            if "vm" in message:
                return Verdict(route="proxmox", confidence=1.0)
            return Verdict.abstain(Reason.LOW_CONFIDENCE)

        async def ready(self) -> bool:
            return True

        async def warm(self) -> None:
            return None

    assert isinstance(Keyword(), Classifier)

    class NoReadiness:
        name = "l0"

        async def classify(self, message: str) -> Verdict:
            return Verdict.abstain(Reason.LOW_CONFIDENCE)

    assert not isinstance(NoReadiness(), Classifier)
