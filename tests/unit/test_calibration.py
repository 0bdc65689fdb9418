"""L0's calibration: the logistic fit, the pull towards the prior, and the two models
fitted from a table's own rows."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from routermesh.runtime.calibration import (
    PRIOR_CORRECT,
    PRIOR_IN_SCOPE,
    Calibration,
    fit_calibration,
    fit_logistic,
    fit_platt,
)


def _logistic_rows(truth: list[float], n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(truth) - 1))
    p = 1 / (1 + np.exp(-(x @ np.array(truth[:-1]) + truth[-1])))
    return x, rng.random(n) < p


def test_the_fit_recovers_a_known_logistic_model() -> None:
    x, y = _logistic_rows([1.5, -2.0, 0.5, 0.3], 4000, 0)
    assert np.allclose(fit_platt(x.tolist(), y.tolist()), [1.5, -2.0, 0.5, 0.3], atol=0.2)


def test_the_prior_decides_for_few_rows_and_the_data_for_many() -> None:
    prior = [0.0, 3.0]
    x_few, y_few = _logistic_rows([2.0, -1.0], 10, 1)
    few = fit_logistic(x_few, y_few, prior=prior, strength=20.0)
    assert abs(few[1] - 3.0) < abs(few[1] - (-1.0))  # still near the prior's bias
    x_many, y_many = _logistic_rows([2.0, -1.0], 20000, 2)
    many = fit_logistic(x_many, y_many, prior=prior, strength=20.0)
    assert many == pytest.approx([2.0, -1.0], abs=0.1)


def test_rows_with_a_feature_that_barely_varies_do_not_blow_the_fit_up() -> None:
    """Newton's method alone overshot here (a vote share of 1 for nearly every row): the
    fit must stay finite and keep the data's direction."""
    rng = np.random.default_rng(3)
    share = np.where(rng.random(15000) < 0.97, 9.21, rng.uniform(-2, 9, 15000))
    margin = rng.uniform(0, 0.5, 15000)
    correct = rng.random(15000) < 1 / (1 + np.exp(-(12 * margin - 1)))
    lexical = np.zeros(15000)  # a message with none of the table's words: constant too
    weights = fit_logistic(np.column_stack([share, margin, lexical]), correct, prior=PRIOR_CORRECT)
    assert all(math.isfinite(w) for w in weights)
    assert weights[1] > 5.0  # the margin still carries the signal


def test_weights_weigh_rows() -> None:
    x = [[0.0]] * 4
    y = [True, False, False, False]
    plain = fit_logistic(x, y, strength=1e-9)
    balanced = fit_logistic(x, y, weights=[3.0, 1.0, 1.0, 1.0], strength=1e-9)
    assert 1 / (1 + math.exp(-plain[-1])) == pytest.approx(0.25, abs=1e-3)
    assert 1 / (1 + math.exp(-balanced[-1])) == pytest.approx(0.5, abs=1e-3)


@dataclass(frozen=True)
class _Row:
    best: float
    lexical: float = 0.0
    share: float = 0.9
    margin: float = 0.3
    lexical_margin: float = 0.0
    typicality: float = 0.0


def test_a_table_separates_in_scope_similarity_from_leave_route_out_similarity() -> None:
    rng = np.random.default_rng(4)
    inside = [_Row(b) for b in rng.normal(0.7, 0.05, 200)]
    outside = [_Row(b) for b in rng.normal(0.3, 0.05, 200)]
    calibration = fit_calibration(inside, outside, [True] * 200)
    assert calibration.p_in_scope(0.7, 0.0) > 0.85
    assert calibration.p_in_scope(0.3, 0.0) < 0.2
    # The similarity at which in_scope is one half (for a message without the route's
    # words) moves from the prior's (0.440) towards the table's own boundary (0.5).
    slope, _, bias = calibration.in_scope
    assert -PRIOR_IN_SCOPE[2] / PRIOR_IN_SCOPE[0] == pytest.approx(0.440, abs=0.001)
    assert 0.46 < -bias / slope <= 0.5


def test_a_message_in_the_routes_own_words_is_more_likely_in_scope() -> None:
    prior = Calibration()
    assert prior.p_in_scope(0.4, 0.0) == pytest.approx(0.4158, abs=1e-4)
    assert prior.p_in_scope(0.4, 0.5) == pytest.approx(0.6525, abs=1e-4)
    # A table whose in-scope queries use their route's words and whose out-of-scope ones
    # do not, at the same similarities, weighs the words more than the prior does.
    rng = np.random.default_rng(5)
    inside = [_Row(b, lexical=0.5) for b in rng.normal(0.45, 0.1, 200)]
    outside = [_Row(b, lexical=0.0) for b in rng.normal(0.45, 0.1, 200)]
    fitted = fit_calibration(inside, outside, [True] * 200)
    assert fitted.in_scope[1] > PRIOR_IN_SCOPE[1]
    gap = fitted.p_in_scope(0.45, 0.5) - fitted.p_in_scope(0.45, 0.0)
    assert gap > 0.35 > prior.p_in_scope(0.45, 0.5) - prior.p_in_scope(0.45, 0.0)


def test_a_route_whose_words_the_message_uses_more_is_more_likely_right() -> None:
    prior = Calibration()
    assert prior.p_correct(0.6, 0.05, 0.4) > prior.p_correct(0.6, 0.05, 0.0)
    assert prior.p_correct(0.6, 0.05, -0.4) < prior.p_correct(0.6, 0.05, 0.0)


def test_without_rows_the_prior_is_the_calibration() -> None:
    assert fit_calibration([], [], []) == Calibration(PRIOR_IN_SCOPE, PRIOR_CORRECT)
