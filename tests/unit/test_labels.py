"""Label scoring from first-token log-probabilities: renormalization, multi-token labels,
shared first tokens, and answers that are not labels."""

from __future__ import annotations

import math

import pytest

from routermesh.runtime.decision import Reason
from routermesh.runtime.labels import score_labels, verdict_from_logprobs

LABELS = ["unifi", "proxmox", "grafana", "elastic", "cortex", "credit-cards"]


def lp(probability: float) -> float:
    return math.log(probability)


def test_confidence_is_renormalized_over_the_labels() -> None:
    top = {" proxmox": lp(0.6), " grafana": lp(0.2), " The": lp(0.1)}
    verdict = verdict_from_logprobs(top, LABELS)
    assert verdict.route == "proxmox"
    assert verdict.confidence == pytest.approx(0.6 / 0.8)


def test_multi_token_labels_match_by_their_first_token() -> None:
    # Servers report only the first token of "credit-cards" and "proxmox".
    top = {" credit": lp(0.7), " prox": lp(0.2)}
    verdict = verdict_from_logprobs(top, LABELS)
    assert verdict.route == "credit-cards"
    assert verdict.confidence == pytest.approx(0.7 / 0.9)


def test_spellings_of_one_choice_add_up() -> None:
    top = {" Grafana": lp(0.4), "grafana": lp(0.3), " elastic": lp(0.3)}
    scores = score_labels(top, LABELS)
    assert scores.mass["grafana"] == pytest.approx(0.7)
    assert verdict_from_logprobs(top, LABELS).confidence == pytest.approx(0.7)


def test_a_shared_first_token_never_picks_a_route() -> None:
    # "c" begins both cortex and credit-cards: its mass is counted, for neither label.
    top = {" c": lp(0.5), " cortex": lp(0.3), " unifi": lp(0.1)}
    scores = score_labels(top, LABELS)
    assert scores.ambiguous == pytest.approx(0.5)
    verdict = verdict_from_logprobs(top, LABELS)
    assert verdict.route == "cortex"
    assert verdict.confidence == pytest.approx(0.3 / 0.9)
    only_ambiguous = verdict_from_logprobs({" c": lp(0.9)}, LABELS)
    assert only_ambiguous.route is None and only_ambiguous.reason is Reason.INVALID_LABEL


def test_an_answer_that_is_not_a_label_is_never_routed() -> None:
    top = {" Sure": lp(0.8), " proxmox": lp(0.15)}
    verdict = verdict_from_logprobs(top, LABELS)
    assert verdict.route is None and verdict.reason is Reason.INVALID_LABEL
    for empty in ({}, {" ": lp(0.9)}, {" proxmox": -math.inf}):
        assert verdict_from_logprobs(empty, LABELS).reason is Reason.INVALID_LABEL


def test_the_escalation_label_is_a_choice_like_any_other() -> None:
    verdict = verdict_from_logprobs({" cortex": lp(0.95), " unifi": lp(0.01)}, LABELS)
    assert verdict.route == "cortex" and verdict.confidence > 0.98


def test_no_labels_abstains() -> None:
    assert verdict_from_logprobs({" x": 0.0}, []).reason is Reason.NO_LAYER


def test_the_most_likely_choice_is_taken_after_spellings_add_up() -> None:
    # " grafana" + "Grafana" (0.5) outweigh the non-label "I" (0.3): route, do not abstain.
    top = {"I": lp(0.3), " grafana": lp(0.25), "Grafana": lp(0.25)}
    verdict = verdict_from_logprobs(top, LABELS)
    assert verdict.route == "grafana" and verdict.confidence == pytest.approx(1.0)
