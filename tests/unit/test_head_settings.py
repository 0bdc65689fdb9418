"""L0's trained head has its own threshold and calibration (``l0.head.threshold``,
``l0.head.calibration``): the base encoder, which serves while the head trains, and the
head give confidences on different scales, so each is judged by its own settings.

Rendered from a RouterMesh as the operator and local mode render it, decided by the real
cascade with a scripted L0 whose verdict says whether the head answered."""

from __future__ import annotations

import asyncio
import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from routermesh.operator import api
from routermesh.operator.render import render_config
from routermesh.runtime.cache import MemoryCache
from routermesh.runtime.cascade import Cascade, Decision
from routermesh.runtime.contract.config import RouterConfig
from routermesh.runtime.decision import Reason, Verdict
from routermesh.runtime.metrics import RouterMetrics
from tests.support import layer_of

REPO = Path(__file__).resolve().parents[2]
MESH = yaml.safe_load((REPO / "samples/homelab/routermesh.yaml").read_text())
TABLE = api.parse(
    api.RouteTable, yaml.safe_load((REPO / "samples/homelab/routetable.yaml").read_text())
)


def rendered(head: dict[str, Any], l0: dict[str, Any] | None = None) -> RouterConfig:
    doc = copy.deepcopy(MESH)
    layer = doc["spec"].setdefault("layers", {}).setdefault("l0", {})
    layer.update({"threshold": 0.5, **(l0 or {})})
    layer["head"] = {"enabled": True, **head}
    return render_config(api.parse(api.RouterMesh, doc), [TABLE])


@dataclass
class ScriptedL0:
    verdict: Verdict
    name: str = "l0"

    async def classify(self, message: str) -> Verdict:
        return self.verdict

    async def ready(self) -> bool:
        return True

    async def warm(self) -> None:
        return None


def decide(config: RouterConfig, verdict: Verdict) -> Decision:
    only_l0 = config.model_copy(
        update={
            "layers": tuple(
                x if x.name == "l0" else x.model_copy(update={"enabled": False})
                for x in config.layers
            )
        }
    )
    cascade = Cascade(only_l0, [ScriptedL0(verdict)], MemoryCache(), RouterMetrics())  # type: ignore[list-item]
    return asyncio.run(cascade.decide("list the dhcp leases", explain=True))


def test_the_heads_settings_reach_the_runtime_config() -> None:
    config = rendered({"threshold": 0.94, "calibration": {"slope": 0.72, "intercept": 0.88}})
    head = layer_of(config, "l0").head
    assert head is not None
    assert head.threshold == 0.94
    assert head.calibration == (0.72, 0.88)
    # Without them the head uses L0's own (as before the head had settings).
    plain = layer_of(rendered({}), "l0").head
    assert plain is not None and plain.threshold is None and plain.calibration is None


def test_a_head_threshold_out_of_range_is_refused_at_the_edge() -> None:
    doc = copy.deepcopy(MESH)
    doc["spec"]["layers"]["l0"] = {"head": {"enabled": True, "threshold": 1.5}}
    with pytest.raises(api.InvalidSpecError, match=r"spec\.layers\.l0\.head\.threshold"):
        api.parse(api.RouterMesh, doc)


def test_each_model_is_judged_by_its_own_threshold() -> None:
    config = rendered({"threshold": 0.94})
    assert config.threshold_for("l0", "unifi") == 0.5
    assert config.threshold_for("l0", "unifi", head=True) == 0.94
    # Feedback adapts L0's threshold; the head's own is fixed.
    assert config.threshold_for("l0", "unifi", 0.6) == 0.6
    assert config.threshold_for("l0", "unifi", 0.6, head=True) == 0.94
    # A head without its own threshold: L0's, adapted or not.
    assert rendered({}).threshold_for("l0", "unifi", 0.6, head=True) == 0.6

    base = decide(config, Verdict(route="unifi", confidence=0.9))
    assert (base.route, base.layer, base.escalation_reason) == ("unifi", "l0", None)
    head = decide(config, Verdict(route="unifi", confidence=0.9, head=True))
    assert (head.route, head.escalation_reason) == ("cortex", Reason.LOW_CONFIDENCE)
    sure = decide(config, Verdict(route="unifi", confidence=0.95, head=True))
    assert (sure.route, sure.layer) == ("unifi", "l0")


def test_a_routes_own_threshold_still_comes_first() -> None:
    doc = copy.deepcopy(TABLE.model_dump(mode="json", by_alias=True, exclude_none=True))
    doc["spec"]["routes"][0]["thresholds"] = {"l0": 0.7}
    table = api.parse(api.RouteTable, doc)
    mesh_doc = copy.deepcopy(MESH)
    mesh_doc["spec"].setdefault("layers", {})["l0"] = {"head": {"enabled": True, "threshold": 0.94}}
    config = render_config(api.parse(api.RouterMesh, mesh_doc), [table])
    assert config.threshold_for("l0", "unifi", head=True) == 0.7
    assert config.threshold_for("l0", "proxmox", head=True) == 0.94


def test_the_heads_calibration_rescales_only_the_heads_confidence() -> None:
    # sigmoid(logit(p) + 2): 0.8808 at 0.5, 0.9673 at 0.8; L0's own halves the logit instead
    # (0.6667 at 0.8).
    config = rendered(
        {"calibration": {"slope": 1.0, "intercept": 2.0}},
        l0={"calibration": {"slope": 0.5, "intercept": 0.0}},
    )
    l0 = layer_of(config, "l0")
    assert round(l0.calibrated(0.5, head=True), 4) == 0.8808
    assert round(l0.calibrated(0.8, head=True), 4) == 0.9673
    assert round(l0.calibrated(0.8), 4) == 0.6667
    head = decide(config, Verdict(route="unifi", confidence=0.5, head=True))
    assert head.route == "unifi"
    assert round(head.trace[0].confidence, 4) == 0.8808
    assert head.trace[0].head is True
    base = decide(config, Verdict(route="unifi", confidence=0.5))
    assert round(base.trace[0].confidence, 4) == 0.5
    assert base.route == "unifi"


def test_check_table_moves_the_threshold_of_the_model_that_answers() -> None:
    from routermesh.table_check import _with_threshold  # noqa: PLC0415

    config = rendered({"threshold": 0.94})
    headed = layer_of(_with_threshold(config, "l0", 0.7, head=True), "l0")
    assert headed.threshold == 0.5
    assert headed.head is not None and headed.head.threshold == 0.7
    base = layer_of(_with_threshold(config, "l0", 0.7, head=False), "l0")
    assert base.threshold == 0.7
    assert base.head is not None and base.head.threshold == 0.94
    # A head without its own threshold answers by L0's: that one moves.
    plain = layer_of(_with_threshold(rendered({}), "l0", 0.7, head=True), "l0")
    assert plain.threshold == 0.7
