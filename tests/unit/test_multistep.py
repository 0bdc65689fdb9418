"""Multi-step requests: clauses, plans, and L0's verdicts for the seed's examples with the
real encoder over the homelab sample (descriptions and ten examples per route)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from routermesh.runtime.contract.config import RouterConfig
from routermesh.runtime.decision import Reason
from routermesh.runtime.embedding import EmbeddingLayer
from routermesh.runtime.encoder import EncoderStore
from routermesh.runtime.example_index import Features, Judgement
from routermesh.runtime.multistep import ClauseRoute, clauses, plan_of
from routermesh.runtime.packaged import materialize
from tests.support import homelab_rendered, layer_of

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / ".cache/models"


@pytest.mark.parametrize(
    ("message", "parts"),
    [
        ("check network and spin up test VM", ["check network", "spin up test VM"]),
        (
            "reboot the switch and then migrate vm 101 to node 2",
            ["reboot the switch", "migrate vm 101 to node 2"],
        ),
        (
            "silence the pve1 alerts, then shut pve1 down; after that check the logs",
            ["silence the pve1 alerts", "shut pve1 down", "check the logs"],
        ),
        (
            "if the backup failed, show me its logs",
            ["the backup failed", "show me its logs"],
        ),
        (
            "snapshot vm 106 before the firmware upgrade",
            ["snapshot vm 106", "the firmware upgrade"],
        ),
        ("restart the access point in the living room", []),
        ("start and stop", []),  # one-word parts are no clauses
        ("x and " * 200, []),  # a paragraph is not split
    ],
)
def test_clauses(message: str, parts: list[str]) -> None:
    assert clauses(message) == parts


def test_a_plan_needs_two_confident_clauses_of_different_routes() -> None:
    steps = [
        ClauseRoute("reboot the switch", "unifi", 0.7),
        ClauseRoute("migrate vm 101", "proxmox", 0.6),
        ClauseRoute("and the other one", "proxmox", 0.9),
    ]
    assert plan_of(steps, 0.5, "cortex") == ["unifi", "proxmox"]
    assert plan_of(steps, 0.75, "cortex") == []  # one confident route is no plan
    same = [ClauseRoute("cpu graph", "grafana", 0.9), ClauseRoute("memory graph", "grafana", 0.9)]
    assert plan_of(same, 0.5, "cortex") == []
    escalation = [ClauseRoute("a", "unifi", 0.9), ClauseRoute("b", "cortex", 0.9)]
    assert plan_of(escalation, 0.5, "cortex") == []


@pytest.fixture(scope="module")
def homelab_l0() -> tuple[EmbeddingLayer, RouterConfig]:
    files = materialize(MODELS / "packaged", ["minilm-l6-onnx-int8", "minilm-l6-tokenizer"])
    folder = files["minilm-l6-onnx-int8"].parent
    config = homelab_rendered()
    l0 = layer_of(config, "l0")
    assert (l0.threshold, l0.multi_step_threshold) == (0.5, 0.4)  # the sample's settings
    l0 = l0.model_copy(
        update={"model": l0.model.model_copy(update={"path": str(folder.relative_to(MODELS))})}
    )
    return EmbeddingLayer(l0, config, MODELS, store=EncoderStore()), config


async def test_the_seed_examples_are_decided_as_the_seed_shows(
    homelab_l0: tuple[EmbeddingLayer, RouterConfig],
) -> None:
    layer, config = homelab_l0
    await layer.prepare()
    assert layer.error is None

    routed = await layer.classify("show me connected clients")
    assert routed.route == "unifi" and routed.cause is None
    assert routed.confidence >= 0.5  # routes at the sample's threshold
    assert routed.candidates[0].route == "unifi"

    multi = await layer.classify("check network and spin up test VM")
    assert (multi.route, multi.cause, multi.plan) == (
        config.escalation.route,
        Reason.MULTI_STEP,
        ("unifi", "proxmox"),
    )
    assert multi.decisive

    far = await layer.classify("what's the weather tomorrow")
    assert far.out_of_scope is not None and far.out_of_scope > 0.5
    assert far.confidence < 0.5


class _Index:
    """Judges vectors by their first number: 0 the whole message, 1 and 2 its clauses."""

    texts = ("reboot the switch", "migrate vm 101")
    head = None  # no trained head: the base encoder answers

    def __init__(self, whole: float) -> None:
        self.answers = {
            0.0: Judgement("unifi", whole, 0.99, Features(0, 1.0, 0.9, 0.5)),
            1.0: Judgement("unifi", 0.8, 0.99, Features(0, 1.0, 0.9, 0.5)),
            2.0: Judgement("proxmox", 0.8, 0.99, Features(1, 1.0, 0.9, 0.5)),
        }

    def classify(self, vector: np.ndarray, candidates: int = 5) -> Judgement:
        return self.answers[float(vector[0])]


@pytest.mark.parametrize(("whole", "multi"), [(0.6, True), (0.89, True), (0.9, False)])
def test_a_message_l0_is_very_sure_of_is_not_split(
    homelab_l0: tuple[EmbeddingLayer, RouterConfig], whole: float, multi: bool
) -> None:
    layer, _ = homelab_l0
    vectors = np.array([[0.0], [1.0], [2.0]], dtype=np.float32)
    verdict = layer._verdict(
        _Index(whole),  # type: ignore[arg-type]
        vectors[0],
        ["reboot the switch", "migrate vm 101"],
        vectors[1:],
    )
    assert (verdict.cause is Reason.MULTI_STEP) is multi
    assert verdict.route == ("cortex" if multi else "unifi")
