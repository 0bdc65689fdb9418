"""L0's confidence: two small logistic models over nearest-example features.

A route decision is right when the message belongs to some route at all *and* the
route chosen is that one, so L0's confidence is a product of two calibrated
probabilities:

- ``in_scope``: that some route handles the message, from the best similarity to
  the route's evidence (less a share of the route's typicality, :data:`TYPICALITY_WEIGHT`)
  and the share of the message's words the route's evidence uses
  (:mod:`routermesh.runtime.lexical`). Fitted on the table itself: each example queried
  against the others (leave-one-out) is in scope; each example queried against the
  table *without its own route* (leave-route-out) stands for a request whose route does
  not exist, the nearest thing to an out-of-scope request the table can show.
- ``correct``: that the chosen route is the right one when the message is in
  scope, from the vote share, the margin to the runner-up route and how much more of the
  message's words the route uses than any other. Fitted leave-one-out.

A table of ten examples per route gives too few rows to fit either model well, so
both fits are maximum-a-posteriori: the weights are pulled towards a prior measured
on many tables (:data:`PRIOR_IN_SCOPE`, :data:`PRIOR_CORRECT`) with a strength that
a few dozen rows barely move and thousands of rows override. Out-of-scope requests
are far from every example, which the similarity sees and a vote share does not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

PRIOR_IN_SCOPE: tuple[float, float, float] = (8.45, 1.94, -3.72)
"""Prior weights (best similarity, words of the route, bias) of ``in_scope`` for the
all-MiniLM-L6-v2 encoder, fitted by ``router-mesh bench prior`` (its defaults) on 20
few-shot tables drawn from the CLINC150 and HWU64 *train* splits (4 to all-but-two routes,
5-20 examples each, descriptions for most, other routes' rows and CLINC's out-of-scope
rows as requests no route handles); bench/results/prior/prior.json has the run."""

PRIOR_CORRECT: tuple[float, float, float, float] = (0.85, 8.28, 2.05, 0.5)
"""Prior weights (logit of the vote share, margin, the route's words less the next route's,
bias) of ``correct``; same fit."""

TYPICALITY_WEIGHT = 0.5
"""Share of a route's typicality (``runtime/typicality.py``: how alike its
examples are, against the table's other routes) taken off the best similarity before the
in-scope model reads it. Ten examples that say one thing in one way put in-scope requests
nearer to them than ten that spread over a server's job, so the same similarity says
"in scope" more weakly for the first route than for the second. Picked on the four
few-shot dev sets (``bench/experiments/route_typicality.py``): 0.25 gains about half of
what 0.5 does, 0.75 and 1.0 no more on the tool table and less on homelab."""

TUNED_PRIOR_IN_SCOPE: tuple[float, float, float] = (11.05, 1.90, -4.74)
"""Prior weights of ``in_scope`` when L0's encoder is fine-tuned on the table
(``runtime/encoder_tuning.py``): fitted on 16 tables drawn as for :data:`PRIOR_IN_SCOPE`,
each tuned the same way (4 epochs) before its other rows were judged
(``bench/experiments/tuned_encoder.py prior --tables 8``;
bench/results/experiments/tuned-prior.json). The table's own leave-one-out rows were
trained on, so they flatter a tuned encoder: the prior says how far to trust them.
Tables as large as a tool table (20 to 40 of the train files' intents) cost homelab a
third of its coverage and gained the 40-route tool table nothing clear
(tuned-prior-intents.txt there), so the prior stays drawn from routes."""

TUNED_PRIOR_CORRECT: tuple[float, float, float, float] = (0.57, 8.14, 1.91, 0.30)
"""Prior weights of ``correct`` for a tuned encoder; same fit."""

TUNED_GENERIC_PRIOR_IN_SCOPE: tuple[float, float, float] = (10.38, 1.85, -5.15)
"""Prior weights of ``in_scope`` when the tuned encoder also learned generic requests as
one more class (``runtime/generic_requests.py``): 16 tables drawn and tuned as for
:data:`TUNED_PRIOR_IN_SCOPE`, each with 300 generic requests from the other source's train
file (``bench/experiments/tuned_encoder.py prior --tables 8 --background ...``, seeds 100
and 101; bench/results/experiments/tuned-prior-background.json). Those draws were
filtered by the int8 encoder and the Job filters by the fp32 base it tunes: the same rule,
a row or two apart at the 0.6 edge."""

TUNED_GENERIC_PRIOR_CORRECT: tuple[float, float, float, float] = (0.35, 9.23, 1.93, 0.36)
"""Prior weights of ``correct`` for an encoder tuned with generic requests; same fit."""

PRIOR_STRENGTH = 20.0
"""Ridge strength towards the prior: worth about as much as a few dozen rows."""


def fit_logistic(
    x: Sequence[Sequence[float]] | npt.NDArray[np.float64],
    y: Sequence[bool] | npt.NDArray[np.bool_],
    *,
    weights: Sequence[float] | npt.NDArray[np.float64] | None = None,
    prior: Sequence[float] | None = None,
    strength: float = 1e-3,
    steps: int = 50,
) -> list[float]:
    """Logistic regression by Newton's method, ridge-penalized towards ``prior`` (zero
    by default); returns ``[w..., b]``. ``weights`` weigh the rows."""
    features = np.asarray(x, dtype=np.float64)
    design = np.hstack([features, np.ones((len(features), 1))])
    target = np.asarray(y, dtype=np.float64)
    row_weights = np.ones(len(target)) if weights is None else np.asarray(weights, np.float64)
    center = np.zeros(design.shape[1]) if prior is None else np.asarray(prior, np.float64)
    if center.shape != (design.shape[1],):
        raise ValueError(f"prior has {center.size} weights, expected {design.shape[1]}")
    ridge = strength * np.eye(design.shape[1])

    def loss(weights: npt.NDArray[np.float64]) -> float:
        z = design @ weights
        # log(1 + e^z) - y z, computed without overflow
        nll = np.logaddexp(0.0, z) - target * z
        penalty = 0.5 * (weights - center) @ ridge @ (weights - center)
        return float(row_weights @ nll + penalty)

    coefficients = center.copy()
    current = loss(coefficients)
    for _ in range(steps):
        p = 1 / (1 + np.exp(-np.clip(design @ coefficients, -30, 30)))
        gradient = design.T @ (row_weights * (p - target)) + ridge @ (coefficients - center)
        hessian = design.T @ (design * (row_weights * p * (1 - p))[:, None]) + ridge
        step = np.linalg.lstsq(hessian, gradient, rcond=None)[0]
        # Newton's step, halved until the loss goes down: near-separable rows (a feature
        # that barely varies) make plain Newton overshoot.
        scale = 1.0
        while scale > 1e-4:
            candidate = coefficients - scale * step
            value = loss(candidate)
            if value <= current:
                break
            scale /= 2
        else:
            break
        coefficients, current = candidate, value
        if float(np.abs(scale * step).max()) < 1e-8:
            break
    return [float(w) for w in coefficients]


def fit_platt(x: Sequence[Sequence[float]], y: Sequence[bool], steps: int = 50) -> list[float]:
    """Plain Platt scaling (a small ridge towards zero); returns ``[w..., b]``."""
    return fit_logistic(x, y, steps=steps)


def logistic(weights: Sequence[float], features: Sequence[float]) -> float:
    z = sum(w * f for w, f in zip(weights[:-1], features, strict=True)) + weights[-1]
    return 1 / (1 + math.exp(-max(min(z, 30.0), -30.0)))


def logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


class Observed(Protocol):
    """What the two models read about one message (``example_index.Features``)."""

    @property
    def best(self) -> float: ...
    @property
    def lexical(self) -> float: ...
    @property
    def share(self) -> float: ...
    @property
    def margin(self) -> float: ...
    @property
    def lexical_margin(self) -> float: ...
    @property
    def typicality(self) -> float: ...


@dataclass(frozen=True)
class Calibration:
    """The two fitted models (weights as :func:`fit_logistic` returns them)."""

    in_scope: tuple[float, float, float] = PRIOR_IN_SCOPE
    correct: tuple[float, float, float, float] = PRIOR_CORRECT

    def p_in_scope(self, best: float, lexical: float) -> float:
        return logistic(self.in_scope, [best, lexical])

    def p_correct(self, share: float, margin: float, lexical_margin: float) -> float:
        return logistic(self.correct, [logit(share), margin, lexical_margin])


def typicality_shift(typicality: float) -> float:
    """How much further a message must come for a route of this typicality."""
    return TYPICALITY_WEIGHT * typicality


def in_scope_best(observed: Observed) -> float:
    """The best similarity as the in-scope model reads it (the route's typicality off)."""
    return observed.best - typicality_shift(observed.typicality)


def in_scope_row(observed: Observed) -> list[float]:
    return [in_scope_best(observed), observed.lexical]


def correct_row(observed: Observed) -> list[float]:
    return [logit(observed.share), observed.margin, observed.lexical_margin]


@dataclass(frozen=True)
class Prior:
    """The weights both models are pulled towards (one pair per kind of encoder)."""

    in_scope: tuple[float, float, float]
    correct: tuple[float, float, float, float]


TUNED_PRIOR = Prior(TUNED_PRIOR_IN_SCOPE, TUNED_PRIOR_CORRECT)
TUNED_GENERIC_PRIOR = Prior(TUNED_GENERIC_PRIOR_IN_SCOPE, TUNED_GENERIC_PRIOR_CORRECT)


def base_prior() -> Prior:
    """The prior of the packaged encoder (read when called: experiments refit it)."""
    return Prior(PRIOR_IN_SCOPE, PRIOR_CORRECT)


def fit_calibration(
    in_scope: Sequence[Observed],
    out_of_scope: Sequence[Observed],
    correct: Sequence[bool],
    prior: Prior | None = None,
) -> Calibration:
    """Both models from a table's own rows, each pulled towards its prior.

    ``in_scope`` / ``out_of_scope``: leave-one-out and leave-route-out queries; the two
    classes weigh the same in total, so the fit makes no assumption about how much
    traffic is out of scope. ``correct``: whether each leave-one-out query's route was
    right. ``prior``: the encoder's (:func:`base_prior` by default).
    """
    centre = prior or base_prior()
    in_scope_weights: tuple[float, float, float] = centre.in_scope
    if in_scope and out_of_scope:
        positives, negatives = len(in_scope), len(out_of_scope)
        fitted = fit_logistic(
            [in_scope_row(o) for o in [*in_scope, *out_of_scope]],
            [True] * positives + [False] * negatives,
            weights=[0.5 / positives] * positives + [0.5 / negatives] * negatives,
            prior=centre.in_scope,
            # Weights sum to one: the strength is relative to a whole table's evidence.
            strength=PRIOR_STRENGTH / max(positives + negatives, 1),
        )
        in_scope_weights = (fitted[0], fitted[1], fitted[2])
    correct_weights: tuple[float, float, float, float] = centre.correct
    if correct:
        fitted = fit_logistic(
            [correct_row(o) for o in in_scope],
            list(correct),
            prior=centre.correct,
            strength=PRIOR_STRENGTH,
        )
        correct_weights = (fitted[0], fitted[1], fitted[2], fitted[3])
    return Calibration(in_scope=in_scope_weights, correct=correct_weights)
