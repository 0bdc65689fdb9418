"""Lexical evidence: a message's content words against each route's evidence, and what it
changes in L0's decisions on the homelab sample."""

from __future__ import annotations

import pytest

from routermesh.runtime.contract.config import RouterConfig
from routermesh.runtime.embedding import EmbeddingLayer
from routermesh.runtime.lexical import Lexical, RouteVocabulary, content_words, lexical_of


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("What's the status of VMs on pve2? Show 10 of them", {"status", "vm", "pve2"}),
        ("get_clients", {"client"}),
        ("Zürich Wi-Fi", {"zürich", "wi", "fi"}),
        ("show me all of it", set()),
        # "has" is not "ha" (high availability); what is left of a contraction is no word
        ("the HA pair has failed over, don't reboot", {"ha", "pair", "failed", "reboot"}),
        ("it isn't adopted and we can't ssh in", {"adopted", "ssh"}),
        ("is that laptop ours or hers", {"laptop"}),
        ("", set()),
    ],
)
def test_content_words(text: str, words: set[str]) -> None:
    assert content_words(text) == frozenset(words)


@pytest.fixture
def vocabulary() -> RouteVocabulary:
    return RouteVocabulary.build(
        ["start the vm", "snapshot vm 104", "restart the access point", "block the vm client"],
        [0, 0, 1, 1],
    )


def test_a_word_one_route_uses_counts_whole_and_a_shared_one_split(
    vocabulary: RouteVocabulary,
) -> None:
    # "snapshot": route 0 alone (1); "vm": both routes (1/2 each); of two words
    words = frozenset({"snapshot", "vm"})
    assert vocabulary.judge(words, 0) == Lexical(own=0.75, margin=0.5)
    assert vocabulary.judge(words, 1) == Lexical(own=0.25, margin=-0.5)
    assert vocabulary.judge(frozenset({"weather"}), 0) == Lexical(own=0.0, margin=0.0)
    assert vocabulary.judge(frozenset(), 0) == Lexical(own=0.0, margin=0.0)


def test_leave_one_out_forgets_the_rows_own_words(vocabulary: RouteVocabulary) -> None:
    # "snapshot vm 104" without itself: "snapshot" is nobody's, "vm" both routes'
    assert vocabulary.scores_left_one_out(1) == {0: 0.25, 1: 0.25}
    # "block the vm client" without itself: "client" is nobody's, "vm" route 0's alone (1)
    # of its three words ("block" too)
    assert vocabulary.scores_left_one_out(3) == {0: pytest.approx(1 / 3)}
    assert lexical_of(vocabulary.scores_left_one_out(1), 0) == Lexical(own=0.25, margin=0.0)


def test_leave_route_out_forgets_the_whole_route(vocabulary: RouteVocabulary) -> None:
    # "snapshot vm 104" without route 0: "vm" is route 1's alone
    assert vocabulary.scores_left_route_out(1) == {1: 0.5}
    assert lexical_of({1: 0.5}, 1) == Lexical(own=0.5, margin=0.5)
    assert lexical_of({1: 0.5}, 0) == Lexical(own=0.0, margin=-0.5)


@pytest.mark.parametrize(
    ("message", "route"),
    [
        ("why are there unassigned shards", "elastic"),  # "shard health": the description
        ("who deleted the media share? check the audit trail", "elastic"),  # "audit trails"
        ("force stop vm 144 its hung", "proxmox"),
    ],
)
async def test_a_request_in_the_routes_own_words_is_more_confident(
    homelab_l0: tuple[EmbeddingLayer, RouterConfig], message: str, route: str
) -> None:
    """The same vector judged with and without its words: the words are what lifts it."""
    layer, _ = homelab_l0
    await layer.prepare()
    index, encoder = layer.index, layer._encoder
    assert index is not None and encoder is not None
    vector = encoder.encode([message])[0]
    with_words = index.classify(vector, words=content_words(message))
    without = index.classify(vector)
    assert with_words.route == without.route == route
    assert with_words.features.lexical_margin >= 0.2
    assert with_words.in_scope > without.in_scope + 0.1
    assert with_words.confidence > without.confidence + 0.1


@pytest.mark.parametrize(
    "message",
    [
        "whats the weather like in denver this weekend",  # "weekend": a grafana example's
        "how do i set up wireguard on my iphone",
        "write a bash script that rsyncs my photos to the nas every night",
    ],
)
async def test_a_request_outside_every_route_still_escalates(
    homelab_l0: tuple[EmbeddingLayer, RouterConfig], message: str
) -> None:
    layer, _ = homelab_l0
    await layer.prepare()
    verdict = await layer.classify(message)
    assert verdict.confidence < 0.5
    assert verdict.out_of_scope is not None and verdict.out_of_scope > 0.5
