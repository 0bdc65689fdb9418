"""The cascade under load calls only what can help, with scripted layers and the real
Cascade, then over real HTTP with scripted model servers:

- a layer whose calibrated confidence cannot reach the threshold of any route it could
  answer is not called (``unreachable_threshold``), and /readyz and the log say so;
- a layer whose model server has every slot busy, or L0 with a long encoder backlog, is
  skipped at once (``overload``), and the HPA's p95 window counts the shed request as the
  layers' whole time budget;
- an undecided request escalates within the largest layer timeout, not their sum
  (``budget``), and the calls it stops waiting for are cancelled: their connections
  close, so the model server stops the work."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from routermesh.runtime.cache import MemoryCache
from routermesh.runtime.cascade import Cascade
from routermesh.runtime.contract.config import AdaptiveConfig, RouterConfig
from routermesh.runtime.decision import Candidate, Reason, Verdict
from routermesh.runtime.metrics import RouterMetrics
from routermesh.runtime.reach import highest_confidence, unreachable_problems
from tests.support import Behaviour, homelab_rendered, layer_of, wait_until
from tests.unit.test_orchestrator import Stack, publish

CONFIG = homelab_rendered()
NEVER = (1.0, -20.0)
"""A calibration that caps a confidence of 1.0 at about 0.002."""
LOW = (0.1, 0.0)
"""A calibration that caps a confidence of 1.0 at about 0.80 (below L1's 0.85)."""


@dataclass
class Scripted:
    name: str
    verdict: Verdict
    calls: int = 0
    gate: asyncio.Event | None = None
    """Set: the layer answers only once the gate opens."""
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: bool = False

    async def classify(self, message: str) -> Verdict:
        self.calls += 1
        self.entered.set()
        try:
            if self.gate is not None:
                await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return self.verdict

    async def ready(self) -> bool:
        return True

    async def warm(self) -> None:
        return None


@dataclass
class ScriptedJudge(Scripted):
    async def judge(self, message: str, candidates: tuple[Candidate, ...]) -> Verdict:
        return await self.classify(message)


def _config(**layers: dict[str, Any]) -> RouterConfig:
    """CONFIG with its layers changed as given (l1 and l2 on), and failure TTL 0: an
    escalation after a failure is not cached, so a repeat asks the layers again."""
    changed = tuple(
        x.model_copy(update={"enabled": True, **layers.get(x.name, {})}) for x in CONFIG.layers
    )
    cache = CONFIG.cache.model_copy(update={"failure_ttl_seconds": 0})
    return CONFIG.model_copy(update={"layers": changed, "cache": cache}).sealed()


def _cascade(config: RouterConfig, *layers: Scripted) -> tuple[Cascade, RouterMetrics]:
    metrics = RouterMetrics()
    return Cascade(config, list(layers), MemoryCache(), metrics), metrics


def _value(metrics: RouterMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def _reasons(decision: Any) -> list[str | None]:
    return [o.reason for o in decision.trace]


UNSURE_L0 = Verdict("unifi", 0.4)  # under L0's 0.5, and the top route L1/L2 must agree with
PATIENT = {"timeout_ms": 5000}
"""A layer held at its gate is not cut off while the test runs."""


# A layer that cannot reach its threshold


def test_calibration_caps_what_a_layer_can_reach() -> None:
    l1 = layer_of(CONFIG, "l1")
    assert highest_confidence(l1) == 1.0
    assert highest_confidence(l1.model_copy(update={"calibration": NEVER})) == pytest.approx(
        0.00206, abs=1e-4
    )
    assert highest_confidence(l1.model_copy(update={"calibration": LOW})) == pytest.approx(
        0.7992, abs=1e-4
    )
    # A falling calibration peaks at the other end.
    assert highest_confidence(l1.model_copy(update={"calibration": (-1.0, 0.0)})) > 0.99


def test_a_layer_that_cannot_reach_its_threshold_is_not_called() -> None:
    config = _config(l1={"calibration": NEVER})
    l1 = Scripted("l1", Verdict("unifi", 1.0))
    l2 = Scripted("l2", Verdict("unifi", 0.9))
    cascade, metrics = _cascade(config, Scripted("l0", UNSURE_L0), l1, l2)
    decision = asyncio.run(cascade.decide("restart the access point", explain=True))
    assert (decision.layer, decision.route) == ("l2", "unifi")
    assert _reasons(decision) == [None, "unreachable_threshold", None]
    assert decision.trace[1].seconds == 0.0
    assert l1.calls == 0
    skipped = _value(
        metrics, "router_layer_skipped_total", layer="l1", reason="unreachable_threshold"
    )
    assert skipped == 1
    assert (
        _value(metrics, "router_layer_errors_total", layer="l1", reason="unreachable_threshold")
        == 0
    )
    assert unreachable_problems(config).keys() == {"l1"}
    assert "0.0021, below its lowest threshold 0.8500" in unreachable_problems(config)["l1"]


def test_the_escalation_reason_comes_from_the_layers_that_were_asked() -> None:
    config = _config(l2={"calibration": NEVER})
    l1 = Scripted("l1", Verdict("unifi", 0.5))
    cascade, _ = _cascade(config, Scripted("l0", UNSURE_L0), l1, Scripted("l2", UNSURE_L0))
    decision = asyncio.run(cascade.decide("restart the access point"))
    assert decision.layer == "escalated"
    assert decision.escalation_reason == "low_confidence"  # L1 was unsure; L2 as if disabled
    assert _reasons(decision) == [None, None, "unreachable_threshold"]


def test_all_layers_still_asks_it_and_the_decision_is_the_same() -> None:
    config = _config(l1={"calibration": NEVER})
    l1 = Scripted("l1", Verdict("unifi", 1.0))
    cascade, _ = _cascade(
        config, Scripted("l0", UNSURE_L0), l1, Scripted("l2", Verdict("unifi", 0.9))
    )
    decision = asyncio.run(cascade.decide("restart the ap", explain=True, all_layers=True))
    assert (decision.layer, decision.route) == ("l2", "unifi")
    assert l1.calls == 1  # a benchmark records what it says (calibrated: ~0.002)
    assert decision.trace[1].confidence == pytest.approx(0.00206, abs=1e-4)


def test_a_route_threshold_or_an_adapted_one_in_reach_keeps_the_layer() -> None:
    proxmox_low = tuple(
        r.model_copy(update={"thresholds": {"l1": 0.7}}) if r.name == "proxmox" else r
        for r in CONFIG.routes
    )
    config = _config(l1={"calibration": LOW}).model_copy(update={"routes": proxmox_low}).sealed()
    assert unreachable_problems(config) == {}

    def asked(l0: Verdict, adapted: float | None = None) -> int:
        l1 = ScriptedJudge("l1", Verdict.abstain(Reason.TIMEOUT))
        cascade, _ = _cascade(config, Scripted("l0", l0), l1, Scripted("l2", UNSURE_L0))
        if adapted is not None:
            cascade.adapted = {"l1": adapted}
        asyncio.run(cascade.decide("a message"))
        return l1.calls

    ranked = (Candidate("unifi"), Candidate("grafana"))
    # Judging unifi or grafana (0.85) it cannot decide; with proxmox (0.7) among them, or
    # without a ranking (any route), it can.
    assert asked(Verdict("unifi", 0.4, candidates=ranked)) == 0
    assert asked(Verdict("unifi", 0.4, candidates=(*ranked, Candidate("proxmox")))) == 1
    assert asked(Verdict.abstain(Reason.TIMEOUT)) == 1
    # Feedback that lowered L1's threshold to 0.75 brings every route within reach.
    assert asked(Verdict("unifi", 0.4, candidates=ranked), adapted=0.75) == 1


def test_an_adaptive_layer_is_reported_only_when_even_its_floor_is_out_of_reach() -> None:
    adaptive = AdaptiveConfig(floor=0.75, ceiling=0.95)
    assert unreachable_problems(_config(l1={"calibration": LOW, "adaptive": adaptive})) == {}
    floor = adaptive.model_copy(update={"floor": 0.8})
    problems = unreachable_problems(_config(l1={"calibration": LOW, "adaptive": floor}))
    assert "below its lowest threshold 0.8000" in problems["l1"]
    # Embedding layers are always asked: they rank candidates and decide out-of-scope.
    assert unreachable_problems(_config(l0={"calibration": NEVER})) == {}


# A saturated layer


def test_a_saturated_layer_is_skipped_at_once_with_reason_overload() -> None:
    gate = asyncio.Event()
    l1 = Scripted("l1", Verdict("unifi", 0.95), gate=gate)
    l2 = Scripted("l2", Verdict("unifi", 0.9))
    cascade, metrics = _cascade(_config(l1=PATIENT), Scripted("l0", UNSURE_L0), l1, l2)

    async def two() -> tuple[Any, Any, float]:
        first = asyncio.create_task(cascade.decide("restart the access point"))
        await l1.entered.wait()
        in_flight = _value(metrics, "router_layer_in_flight", layer="l1")
        # L1's only slot is busy: the second message does not queue behind the first.
        second = await cascade.decide("reboot the switch", explain=True)
        assert not first.done()
        gate.set()
        return await first, second, in_flight

    first, second, in_flight = asyncio.run(two())
    assert in_flight == 1
    assert (first.layer, second.layer) == ("l1", "l2")
    assert _reasons(second) == [None, "overload", None]
    assert l1.calls == 1
    assert _value(metrics, "router_layer_skipped_total", layer="l1", reason="overload") == 1
    assert _value(metrics, "router_layer_in_flight", layer="l1") == 0


def test_overload_of_the_last_layer_escalates_metered_and_is_not_cached_for_long() -> None:
    gate = asyncio.Event()
    l1 = Scripted("l1", Verdict("unifi", 0.95), gate=gate)
    cascade, metrics = _cascade(_config(l1=PATIENT), Scripted("l0", UNSURE_L0), l1)

    async def run() -> tuple[Any, Any]:
        first = asyncio.create_task(cascade.decide("restart the access point"))
        await l1.entered.wait()
        second = await cascade.decide("reboot the switch")
        gate.set()
        await first
        again = await cascade.decide("reboot the switch")  # the slot is free again
        return second, again

    second, again = asyncio.run(run())
    assert (second.layer, second.escalation_reason) == ("escalated", "overload")
    assert _value(metrics, "router_escalations_total", reason="overload") == 1
    assert (again.layer, again.cache_hit) == ("l1", False)  # asked, not the cached escalation
    assert l1.calls == 2


def test_max_in_flight_sizes_the_bound() -> None:
    gate = asyncio.Event()
    l1 = Scripted("l1", Verdict("unifi", 0.95), gate=gate)
    cascade, metrics = _cascade(
        _config(l1={**PATIENT, "max_in_flight": 2}),
        Scripted("l0", UNSURE_L0),
        l1,
        Scripted("l2", UNSURE_L0),
    )

    async def three() -> list[Any]:
        tasks = [asyncio.create_task(cascade.decide(f"message {n}")) for n in range(3)]
        await wait_for_calls(l1, 2)
        third = await tasks[2]
        gate.set()
        return [*(await asyncio.gather(*tasks[:2])), third]

    decisions = asyncio.run(three())
    assert [d.layer for d in decisions] == ["l1", "l1", "escalated"]
    assert _value(metrics, "router_layer_skipped_total", layer="l1", reason="overload") == 1


@dataclass
class Backlogged(Scripted):
    """L0 whose encoder backlog is too long (``saturated``) until ``busy`` is cleared."""

    busy: bool = True

    def saturated(self) -> bool:
        return self.busy


def test_a_backlogged_l0_is_skipped_with_reason_overload_and_counts_as_pressure() -> None:
    l0 = Backlogged("l0", Verdict("unifi", 0.9))
    cascade, metrics = _cascade(_config(l1={"enabled": False}, l2={"enabled": False}), l0)
    shed = asyncio.run(cascade.decide("restart the access point", explain=True))
    assert (shed.layer, shed.escalation_reason) == ("escalated", "overload")
    assert _reasons(shed) == ["overload"]
    assert l0.calls == 0
    assert _value(metrics, "router_layer_skipped_total", layer="l0", reason="overload") == 1
    # The histogram keeps the real (short) time; the HPA's window records the shed request
    # at the layers' whole budget: L0's 100 ms timeout plus the 50 ms guard.
    assert _value(metrics, "router_latency_seconds_count", layer="escalated") == 1
    assert _value(metrics, "router_latency_seconds_sum", layer="escalated") < 0.15
    assert metrics.window.percentile(0.95) == pytest.approx(0.15)

    l0.busy = False
    routed = asyncio.run(cascade.decide("reboot the switch"))
    assert (routed.layer, routed.route) == ("l0", "unifi")
    assert l0.calls == 1


async def wait_for_calls(layer: Scripted, calls: int) -> None:
    while layer.calls < calls:
        layer.entered.clear()
        await layer.entered.wait()


# The time budget


def test_a_layer_with_no_time_left_is_skipped_and_the_one_cut_off_is_cancelled() -> None:
    config = _config(l1={"timeout_ms": 200}, l2={"timeout_ms": 200})
    l1 = Scripted("l1", Verdict("unifi", 0.95), gate=asyncio.Event())  # never answers
    l2 = Scripted("l2", Verdict("unifi", 0.9))
    cascade, metrics = _cascade(config, Scripted("l0", UNSURE_L0), l1, l2)
    assert cascade.budget == 0.2  # the largest timeout (L0: 0.1 s), not the sum
    decision = asyncio.run(cascade.decide("restart the access point"))
    assert (decision.layer, decision.escalation_reason) == ("escalated", "budget")
    assert _reasons(decision) == [None, "timeout", "budget"]
    assert l1.cancelled and l2.calls == 0
    assert _value(metrics, "router_layer_skipped_total", layer="l2", reason="budget") == 1
    assert _value(metrics, "router_layer_errors_total", layer="l1", reason="timeout") == 1


def test_after_the_decision_all_layers_gives_each_its_own_timeout() -> None:
    config = _config(l1={"timeout_ms": 200}, l2={"timeout_ms": 200})
    l1 = Scripted("l1", UNSURE_L0, gate=asyncio.Event())  # never answers
    l2 = Scripted("l2", UNSURE_L0, gate=asyncio.Event())
    cascade, _ = _cascade(config, Scripted("l0", Verdict("unifi", 0.9)), l1, l2)
    decision = asyncio.run(cascade.decide("restart the ap", explain=True, all_layers=True))
    # L1 spent the budget, yet L2 is asked too: the benchmark records every layer.
    assert (decision.layer, _reasons(decision)) == ("l0", [None, "timeout", "timeout"])
    assert l2.calls == 1


# Over real HTTP, with scripted model servers


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path)
    yield s
    s.close()


def _publish(stack: Stack, **layers: dict[str, Any]) -> RouterConfig:
    changed = tuple(x.model_copy(update=layers.get(x.name, {})) for x in stack.config.layers)
    config = stack.config.model_copy(update={"layers": changed}).sealed()
    publish(stack.dir, config)
    assert wait_until(
        lambda: stack.client.get("/readyz").json()["config_hash"] == config.config_hash
    )
    return config


def _timed_explain(stack: Stack, message: str) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    response = stack.client.post("/v1/route", json={"message": message, "explain": True})
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body, elapsed


def test_no_request_waits_for_the_sum_of_the_timeouts(stack: Stack) -> None:
    _publish(stack, l1={"timeout_ms": 2000}, l2={"timeout_ms": 2000})
    stack.l1.script["plan the migration"] = Behaviour(hang=True)
    stack.l2.script["plan the migration"] = Behaviour(hang=True)
    body, elapsed = _timed_explain(stack, "plan the migration")
    assert (body["layer"], body["escalation_reason"]) == ("escalated", "budget")
    assert [(t["layer"], t["reason"]) for t in body["trace"]] == [
        ("l1", "timeout"),
        ("l2", "budget"),
    ]
    assert elapsed < 3.0  # the timeouts sum to 4 s; the budget is 2 s
    assert "plan the migration" not in stack.l2.seen
    # The call L1 timed out on was given up: its connection closed (llama.cpp then stops).
    assert wait_until(lambda: stack.l1.disconnected == ["plan the migration"]), (
        stack.l1.seen,  # was it sent at all? (a flake seen once on a loaded machine)
        stack.l1.disconnected,
    )
    assert stack.metric("router_layers_budget_seconds") == 2.0
    assert stack.metric("router_layer_skipped_total", layer="l2", reason="budget") == 1
    assert stack.metric("router_escalations_total", reason="budget") == 1


def test_a_layer_cut_short_by_the_budget_is_cancelled_at_its_server(stack: Stack) -> None:
    _publish(stack, l1={"timeout_ms": 1000}, l2={"timeout_ms": 2000})
    stack.l1.script["plan the migration"] = Behaviour(hang=True)
    stack.l2.script["plan the migration"] = Behaviour(hang=True)
    body, elapsed = _timed_explain(stack, "plan the migration")
    assert (body["layer"], body["escalation_reason"]) == ("escalated", "timeout")
    assert [t["reason"] for t in body["trace"]] == ["timeout", "timeout"]
    assert elapsed < 2.75  # L2 got the 1 s left of the 2 s budget, not its own 2 s (sum: 3 s)
    for server in (stack.l1, stack.l2):
        assert wait_until(lambda s=server: s.disconnected == ["plan the migration"])


def test_a_saturated_model_server_is_skipped_with_reason_overload(stack: Stack) -> None:
    stack.l1.script["hold the slot"] = Behaviour(hang=True)
    stack.l2.answer("snapshot the vm", {" proxmox": 0.9, " unifi": 0.1})
    holder = threading.Thread(target=stack.route, args=("hold the slot",))
    holder.start()
    try:
        assert wait_until(lambda: "hold the slot" in stack.l1.seen)
        assert stack.metric("router_layer_in_flight", layer="l1") == 1
        body = stack.client.post(
            "/v1/route", json={"message": "snapshot the vm", "explain": True}
        ).json()
    finally:
        holder.join(timeout=30)
    assert (body["route"], body["layer"]) == ("proxmox", "l2")
    assert (body["trace"][0]["reason"], body["trace"][0]["ms"]) == ("overload", 0.0)
    assert "snapshot the vm" not in stack.l1.seen
    assert stack.metric("router_layer_skipped_total", layer="l1", reason="overload") == 1
    assert stack.metric("router_layer_in_flight", layer="l1") == 0


def test_an_unreachable_layer_is_reported_at_load_and_never_called(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="routermesh.router"):
        _publish(stack, l1={"calibration": NEVER})
    assert [r.__dict__.get("layer") for r in caplog.records if r.msg.startswith("layer can")] == [
        "l1"
    ]
    problems = stack.client.get("/readyz").json()["problems"]
    assert "can never decide" in problems["l1"]
    stack.l1.answer("start vm 104", {" proxmox": 0.99, " unifi": 0.01})
    stack.l2.answer("start vm 104", {" proxmox": 0.9, " unifi": 0.1})
    body = stack.client.post("/v1/route", json={"message": "start vm 104", "explain": True}).json()
    assert (body["route"], body["layer"]) == ("proxmox", "l2")
    assert body["trace"][0]["reason"] == "unreachable_threshold"
    assert "start vm 104" not in stack.l1.seen
    assert (
        stack.metric("router_layer_skipped_total", layer="l1", reason="unreachable_threshold") == 1
    )
