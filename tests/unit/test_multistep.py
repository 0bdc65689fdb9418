"""Multi-step requests: clauses, plans, and L0's verdicts for the seed's examples with the
real encoder over the homelab sample (descriptions and ten examples per route)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from routermesh.local import LocalOptions, render
from routermesh.runtime.contract.config import LayerConfig, RouterConfig
from routermesh.runtime.decision import Reason, Verdict
from routermesh.runtime.embedding import EmbeddingLayer
from routermesh.runtime.encoder import EncoderStore
from routermesh.runtime.example_index import Candidate, Features, Judgement
from routermesh.runtime.multistep import Clause, ClauseRoute, clauses, plan_of
from tests.support import homelab_rendered, homelab_with, layer_of

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / ".cache/models"


@pytest.mark.parametrize(
    ("message", "parts"),
    [
        ("check network and spin up test VM", [("check network", True), ("spin up test VM", True)]),
        (
            "reboot the switch and then migrate vm 101 to node 2",
            [("reboot the switch", True), ("migrate vm 101 to node 2", True)],
        ),
        (
            "silence the pve1 alerts, then shut pve1 down; after that check the logs",
            [("silence the pve1 alerts", True), ("shut pve1 down", True), ("check the logs", True)],
        ),
        (
            "if the backup failed, show me its logs",
            [("the backup failed", True), ("show me its logs", False)],
        ),
        (
            "snapshot vm 106 before the firmware upgrade",
            [("snapshot vm 106", True), ("the firmware upgrade", True)],
        ),
        # Punctuation alone joins context more often than tasks: no joining word.
        (
            "I just landed in Paris. Find me a hotel, something cheap",
            [
                ("I just landed in Paris", False),
                ("Find me a hotel", False),
                ("something cheap", False),
            ],
        ),
        (
            "my laptop keeps dropping off the wifi, any idea why. please check it",
            [
                ("my laptop keeps dropping off the wifi", False),
                ("any idea why", False),
                ("check it", False),
            ],
        ),
        # More clauses than are judged: cut at the strongest joins, so the last task stays.
        (
            "graph the cpu of pve1 for the last day, the memory too, the disk io as well as "
            "the network, then restart the access point in the garage",
            [
                ("graph the cpu of pve1 for the last day", False),
                ("the memory too, the disk io", True),
                ("the network", True),
                ("restart the access point in the garage", True),
            ],
        ),
        ("restart the access point in the living room", []),
        ("start and stop", []),  # one-word parts are no clauses
        ("x and " * 200, []),  # a paragraph is not split
    ],
)
def test_clauses(message: str, parts: list[tuple[str, bool]]) -> None:
    assert clauses(message) == [Clause(text, joined) for text, joined in parts]


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
    # A clause the escalation route's examples are nearest is a step no server takes: with
    # a server's step beside it, the message needs both; alone, it is no plan.
    escalation = [ClauseRoute("a", "unifi", 0.9), ClauseRoute("b", "cortex", 0.9)]
    assert plan_of(escalation, 0.5, "cortex") == ["unifi", "cortex"]
    assert plan_of([escalation[1], ClauseRoute("c", "cortex", 0.8)], 0.5, "cortex") == []
    # ... and the server's task must be the sure one: a weakly joined server clause beside
    # a sure escalation clause was as likely part of the endpoint's request.
    weak = [ClauseRoute("a", "unifi", 0.2, joined=True), ClauseRoute("b", "cortex", 0.9)]
    options = {"joined_threshold": 0.15, "candidates": ["unifi"]}
    assert plan_of(weak, 0.5, "cortex", **options) == []


def test_a_joined_clause_counts_at_the_joined_threshold_for_one_of_the_best_routes() -> None:
    steps = [
        ClauseRoute("migrate vm 210 to pve2", "proxmox", 0.9, joined=True),
        ClauseRoute("reboot the core switch", "unifi", 0.31, joined=True),
    ]
    best = ["proxmox", "unifi", "grafana"]
    options = {"joined_threshold": 0.15, "candidates": best}
    assert plan_of(steps, 0.4, "cortex", **options) == ["proxmox", "unifi"]
    assert plan_of(steps, 0.4, "cortex") == []  # without a joined threshold: 0.4 for both
    assert plan_of(steps, 0.4, "cortex", joined_threshold=0.35, candidates=best) == []
    # Not among the message's best routes, or tied by punctuation alone: 0.4 it is.
    assert plan_of(steps, 0.4, "cortex", joined_threshold=0.15, candidates=["proxmox"]) == []
    comma = [steps[0], ClauseRoute("reboot the core switch", "unifi", 0.31, joined=False)]
    assert plan_of(comma, 0.4, "cortex", **options) == []
    # Two unsure clauses are no plan: one of them must reach the threshold.
    unsure = [
        ClauseRoute("a", "proxmox", 0.3, joined=True),
        ClauseRoute("b", "unifi", 0.3, joined=True),
    ]
    assert plan_of(unsure, 0.4, "cortex", **options) == []


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

    # A second task said in few words: unsure alone, but joined by "after that".
    joined = await layer.classify("move vm 101 over to pve2, after that reboot the core switch")
    assert (joined.route, joined.cause, joined.plan) == (
        config.escalation.route,
        Reason.MULTI_STEP,
        ("proxmox", "unifi"),
    )
    one = await layer.classify("my laptop keeps dropping off the wifi upstairs, any idea why")
    assert one.cause is not Reason.MULTI_STEP

    far = await layer.classify("what's the weather tomorrow")
    assert far.out_of_scope is not None and far.out_of_scope > 0.5
    assert far.confidence < 0.5


async def test_a_task_no_server_takes_beside_one_a_server_takes_is_multi_step(
    homelab_l0: tuple[EmbeddingLayer, RouterConfig],
) -> None:
    """Once a request is reported as the reasoning endpoint's own, a message joining a
    server's task to one like it escalates with the server's part as its plan."""
    layer, config = homelab_l0
    await layer.prepare()
    message = "snapshot vm 104 and then compose a haiku about my network"
    before = await layer.classify(message)
    assert (before.route, before.cause) == ("proxmox", None)  # the haiku matched nothing

    reports = [("write me a poem about my network", config.escalation.route)]

    async def feedback(limit: int) -> list[tuple[str, str]]:
        return reports[:limit]

    learning = EmbeddingLayer(layer._layer, config, MODELS, store=EncoderStore(), feedback=feedback)
    await learning.prepare()
    after = await learning.classify(message)
    assert (after.route, after.cause, after.plan) == (
        config.escalation.route,
        Reason.MULTI_STEP,
        ("proxmox",),  # the table's part; the rest is the reasoning endpoint's
    )
    # The seed's two-server request keeps both servers in its plan.
    seed = await learning.classify("check network and spin up test VM")
    assert (seed.cause, seed.plan) == (Reason.MULTI_STEP, ("unifi", "proxmox"))


class _Index:
    """Judges vectors by their first number: 0 the whole message, 1 and 2 its clauses."""

    texts = ("reboot the switch", "migrate vm 101")
    head = None
    artifact = None  # no trained artifact: the base encoder answers

    def __init__(self, whole: float, *, clauses_by_route: bool = False) -> None:
        self.clauses_by_route = clauses_by_route
        self.answers = {
            0.0: Judgement("unifi", whole, 0.99, Features(0, 1.0, 0.9, 0.5)),
            1.0: Judgement("unifi", 0.8, 0.99, Features(0, 1.0, 0.9, 0.5)),
            2.0: Judgement("proxmox", 0.8, 0.99, Features(1, 1.0, 0.9, 0.5)),
        }

    def classify(
        self, vector: np.ndarray, candidates: int = 5, words: frozenset[str] = frozenset()
    ) -> Judgement:
        return self.answers[float(vector[0])]


@pytest.mark.parametrize(("whole", "multi"), [(0.6, True), (0.89, True), (0.9, False)])
def test_a_message_l0_is_very_sure_of_is_not_split(
    homelab_l0: tuple[EmbeddingLayer, RouterConfig], whole: float, multi: bool
) -> None:
    layer, _ = homelab_l0
    vectors = np.array([[0.0], [1.0], [2.0]], dtype=np.float32)
    verdict = layer._verdict(
        _Index(whole),  # type: ignore[arg-type]
        "reboot the switch and migrate vm 101",
        vectors[0],
        [Clause("reboot the switch", True), Clause("migrate vm 101", True)],
        vectors[1:],
    )
    assert (verdict.cause is Reason.MULTI_STEP) is multi
    assert verdict.route == ("cortex" if multi else "unifi")


def _split(layer: EmbeddingLayer, index: _Index) -> Verdict:
    vectors = np.array([[0.0], [1.0], [2.0]], dtype=np.float32)
    return layer._verdict(
        index,  # type: ignore[arg-type]
        "reboot the switch and migrate vm 101",
        vectors[0],
        [Clause("reboot the switch", True), Clause("migrate vm 101", True)],
        vectors[1:],
    )


@pytest.mark.parametrize(("whole", "multi"), [(0.6, True), (0.93, True), (0.95, False)])
def test_an_encoder_tuned_with_generic_requests_is_split_below_095(
    homelab_l0: tuple[EmbeddingLayer, RouterConfig], whole: float, multi: bool
) -> None:
    layer, _ = homelab_l0
    index = _Index(whole, clauses_by_route=True)
    # Each clause 0.5 sure of its route overall, 0.91 of it once in scope (0.55).
    index.answers[1.0] = Judgement("unifi", 0.5, 0.55, Features(0, 1.0, 0.9, 0.5))
    index.answers[2.0] = Judgement("proxmox", 0.5, 0.55, Features(1, 1.0, 0.9, 0.5))
    verdict = _split(layer, index)
    assert (verdict.cause is Reason.MULTI_STEP) is multi
    if multi:
        assert verdict.plan == ("unifi", "proxmox")


def test_its_clauses_are_judged_by_route_alone_at_its_own_thresholds(
    homelab_l0: tuple[EmbeddingLayer, RouterConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    layer, _ = homelab_l0
    # 0.3 overall is under the layer's 0.4; 0.3 / 0.33 = 0.91 once in scope is over 0.85.
    unsure = {
        1.0: Judgement("unifi", 0.3, 0.33, Features(0, 1.0, 0.9, 0.5)),
        2.0: Judgement("proxmox", 0.3, 0.33, Features(1, 1.0, 0.9, 0.5)),
    }
    base, tuned = _Index(0.6), _Index(0.6, clauses_by_route=True)
    base.answers |= unsure
    tuned.answers |= unsure
    assert _split(layer, base).cause is None
    assert _split(layer, tuned).cause is Reason.MULTI_STEP
    # 0.8 of 0.99 in scope is 0.81 by route: under its 0.85, though over the layer's 0.4.
    assert _split(layer, _Index(0.6, clauses_by_route=True)).cause is None
    # multiStep.enabled: false turns detection off for it too.
    off = layer._layer.model_copy(
        update={"multi_step_threshold": None, "multi_step_joined_threshold": None}
    )
    monkeypatch.setattr(layer, "_layer", off)
    assert _split(layer, tuned).cause is None


def test_the_escalation_route_near_the_message_takes_no_server_out_of_its_best_few(
    homelab_l0: tuple[EmbeddingLayer, RouterConfig],
) -> None:
    """A joined clause counts at the lower threshold for one of the message's best three
    servers; learned escalations ranked among them do not push a server out."""
    layer, _ = homelab_l0
    ranked = tuple(
        Candidate(route, 1.0 - rank / 10, 0)
        for rank, route in enumerate(["proxmox", "cortex", "elastic", "unifi", "grafana"])
    )
    index = _Index(0.6)
    index.answers = {
        0.0: Judgement("proxmox", 0.6, 0.9, Features(0, 1.0, 0.9, 0.5), ranked),
        1.0: Judgement("proxmox", 0.9, 0.99, Features(0, 1.0, 0.9, 0.5)),
        2.0: Judgement("unifi", 0.3, 0.99, Features(1, 1.0, 0.9, 0.5)),  # joined, unsure
    }
    vectors = np.array([[0.0], [1.0], [2.0]], dtype=np.float32)
    verdict = layer._verdict(
        index,  # type: ignore[arg-type]
        "migrate vm 210 to pve2, then reboot the core switch",
        vectors[0],
        [Clause("migrate vm 210 to pve2", True), Clause("reboot the core switch", True)],
        vectors[1:],
    )
    # unifi is fourth with cortex among the routes, third among the servers
    assert (verdict.cause, verdict.plan) == (Reason.MULTI_STEP, ("proxmox", "unifi"))


@pytest.mark.parametrize(
    ("multi_step", "rendered"),
    [
        ({}, (0.4, 0.15)),  # the defaults
        ({"threshold": 0.1}, (0.1, 0.1)),  # a lower threshold lowers the joined one too
        ({"threshold": 0.6, "joinedThreshold": 0.3}, (0.6, 0.3)),
        ({"enabled": False}, (None, None)),
    ],
)
def test_the_joined_threshold_renders_never_above_the_threshold(
    tmp_path: Path, multi_step: dict[str, object], rendered: tuple[float | None, float | None]
) -> None:
    folder = homelab_with(tmp_path, {"l0": {"multiStep": multi_step}})
    l0 = layer_of(render(LocalOptions(files=[folder])), "l0")
    assert (l0.multi_step_threshold, l0.multi_step_joined_threshold) == rendered


def test_the_contract_refuses_a_joined_threshold_above_the_threshold() -> None:
    l0 = layer_of(homelab_rendered(), "l0")
    with pytest.raises(ValidationError, match="may not exceed it"):
        LayerConfig.model_validate(
            {**l0.model_dump(), "multi_step_threshold": 0.3, "multi_step_joined_threshold": 0.5}
        )
    with pytest.raises(ValidationError, match="needs multi_step_threshold"):
        LayerConfig.model_validate(
            {**l0.model_dump(), "multi_step_threshold": None, "multi_step_joined_threshold": 0.1}
        )
