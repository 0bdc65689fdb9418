"""How the cascade says no, with scripted layers and the real Cascade: a layer's
out-of-scope probability and its multi-step plan decide, the escalation reason says
why when nobody decides, the judges get L0's candidates, and a cached multi-step
decision keeps its plan."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from routermesh.runtime.cache import MemoryCache
from routermesh.runtime.cascade import Cascade, Decision
from routermesh.runtime.contract.config import RouterConfig
from routermesh.runtime.decision import Candidate, Reason, Verdict
from routermesh.runtime.metrics import RouterMetrics
from tests.support import homelab_rendered, layer_of

CONFIG = homelab_rendered()
CANDIDATES = (Candidate("proxmox", "start vm 104"), Candidate("unifi", "restart the ap"))


@dataclass
class Scripted:
    name: str
    verdict: Verdict
    calls: int = 0

    async def classify(self, message: str) -> Verdict:
        self.calls += 1
        return self.verdict

    async def ready(self) -> bool:
        return True

    async def warm(self) -> None:
        return None


@dataclass
class ScriptedJudge(Scripted):
    judged: list[tuple[Candidate, ...]] = field(default_factory=list)

    async def judge(self, message: str, candidates: tuple[Candidate, ...]) -> Verdict:
        self.judged.append(candidates)
        return self.verdict


def _cascade(config: RouterConfig, *layers: Scripted) -> Cascade:
    return Cascade(config, list(layers), MemoryCache(), RouterMetrics())  # type: ignore[arg-type]


def _decide(cascade: Cascade, message: str = "a message") -> Decision:
    return asyncio.run(cascade.decide(message))


def _with_l0_threshold(threshold: float) -> RouterConfig:
    l0 = layer_of(CONFIG, "l0").model_copy(update={"threshold": threshold})
    layers = tuple(l0 if layer.name == "l0" else layer for layer in CONFIG.layers)
    return CONFIG.model_copy(update={"layers": layers}).sealed()


def test_a_sure_out_of_scope_escalates_at_l0_and_asks_no_later_layer() -> None:
    l1 = ScriptedJudge("l1", Verdict("proxmox", 0.99))
    l0 = Scripted("l0", Verdict("proxmox", 0.1, out_of_scope=0.9, candidates=CANDIDATES))
    decision = _decide(_cascade(CONFIG, l0, l1))
    assert (decision.route, decision.layer) == ("cortex", "l0")
    assert decision.escalation_reason is Reason.OUT_OF_SCOPE
    assert decision.confidence == 0.9 and l1.calls == 0 and l1.judged == []


def test_a_multi_step_verdict_decides_with_its_plan_and_the_cache_keeps_it() -> None:
    plan = ("unifi", "proxmox")
    multi = Verdict("cortex", 0.45, cause=Reason.MULTI_STEP, plan=plan, decisive=True)
    l0 = Scripted("l0", multi)
    cascade = _cascade(CONFIG, l0)
    decision = _decide(cascade, "check network and spin up test VM")
    assert (decision.layer, decision.escalation_reason, decision.plan) == (
        "l0",
        Reason.MULTI_STEP,
        plan,
    )
    # Decisive: its confidence (0.45) is below L0's threshold (0.5) and it still decides.
    assert decision.confidence == 0.45
    again = _decide(cascade, "check network and spin up test VM")
    assert (again.layer, again.plan, l0.calls) == ("cache", plan, 1)


def test_when_nobody_decides_the_reason_is_the_first_cause_a_layer_gave() -> None:
    config = _with_l0_threshold(0.8)
    leaning_out = Verdict("grafana", 0.3, out_of_scope=0.6)  # below 0.8 both ways
    unsure = Verdict("grafana", 0.4)
    assert (
        _decide(_cascade(config, Scripted("l0", leaning_out))).escalation_reason
        is Reason.OUT_OF_SCOPE
    )
    assert (
        _decide(_cascade(config, Scripted("l0", unsure))).escalation_reason is Reason.LOW_CONFIDENCE
    )
    several = Verdict("cortex", 0.6, cause=Reason.MULTI_STEP, plan=("a", "b"))
    l1 = ScriptedJudge("l1", several)  # L1's threshold is 0.85: it does not decide
    decision = _decide(_cascade(config, Scripted("l0", unsure), l1))
    assert (decision.escalation_reason, decision.plan) == (Reason.MULTI_STEP, ("a", "b"))


def test_the_judges_get_l0s_candidates_and_may_say_the_message_escalates() -> None:
    l0 = Scripted("l0", Verdict("proxmox", 0.3, out_of_scope=0.2, candidates=CANDIDATES))
    none = Verdict("cortex", 0.9, cause=Reason.OUT_OF_SCOPE)
    l1 = ScriptedJudge("l1", none)
    decision = _decide(_cascade(CONFIG, l0, l1))
    assert l1.judged == [CANDIDATES]
    # Saying "escalate" is never a disagreement with L0's top route.
    assert (decision.layer, decision.escalation_reason) == ("l1", Reason.OUT_OF_SCOPE)


def test_a_judge_agrees_with_l0s_top_candidate_even_when_l0_leaned_out_of_scope() -> None:
    l0_out = Verdict("cortex", 0.3, cause=Reason.OUT_OF_SCOPE, candidates=CANDIDATES)
    agreeing = _decide(
        _cascade(CONFIG, Scripted("l0", l0_out), ScriptedJudge("l1", Verdict("proxmox", 0.95)))
    )
    assert (agreeing.layer, agreeing.route) == ("l1", "proxmox")
    steered = _decide(
        _cascade(CONFIG, Scripted("l0", l0_out), ScriptedJudge("l1", Verdict("unifi", 0.95)))
    )
    assert steered.layer == "escalated"
    assert [o.reason for o in steered.trace] == [None, Reason.DISAGREEMENT]
