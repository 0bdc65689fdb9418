"""L0's index: the routes' evidence as unit vectors, nearest-evidence features and
the calibrated judgement of one message.

Evidence is each route's examples and the phrases of its description
(:mod:`routermesh.runtime.evidence`). For a message, every piece of evidence gets its
cosine similarity; the ``k`` nearest vote for their routes, weighted by similarity,
and each route's best similarity is taken over all of its evidence. The route with
the largest vote share plus best similarity (plus half the share of the message's words
the route's evidence uses, :mod:`routermesh.runtime.lexical`) is chosen: the vote decides
on large tables, the best similarity on small ones where ``k`` neighbours span several
routes. The features of that choice (vote share, best similarity, margin to the runner-up
route's best, the route's share of the message's words, and the route's typicality:
how alike its examples are, :mod:`routermesh.runtime.typicality`) feed the calibration
(:mod:`routermesh.runtime.calibration`), fitted when the index is built from the examples
themselves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from routermesh.runtime.calibration import (
    Calibration,
    Prior,
    fit_calibration,
    in_scope_best,
    logistic,
    logit,
    typicality_shift,
)
from routermesh.runtime.encoder import FloatArray
from routermesh.runtime.lexical import RouteVocabulary, lexical_of
from routermesh.runtime.route_groups import IntArray, RouteGroups, sample_rows
from routermesh.runtime.typicality import Typicality, route_typicality

BoolArray = npt.NDArray[np.bool_]

LOO_CHUNK = 256
"""Queries per block of the leave-one-out pass: argpartition copies a block's similarities
and returns int64 indices for all of them (~190 MB at 1,024 x 15,000 examples)."""
LOO_LIMIT = 20_000
"""Examples used for the leave-one-out fit (a seeded sample beyond this)."""
LRO_LIMIT = 4_000
"""Examples used for the leave-route-out fit (a seeded sample beyond this): the model it
feeds has three weights."""
DUPLICATE_SIMILARITY = 0.97
"""Neighbours at least this similar are (near) copies of the message: they alone vote, so a
verbatim example, a learned misroute included, decides its own text."""
CANDIDATES = 5
"""Routes ranked for later layers (the generative judges)."""
WORDS_IN_RANKING = 0.5
"""Weight of a route's share of the message's words in its ranking score (vote share + best
similarity): in-scope top-1 on the tool table's dev set 88.0 % without, 91.0 % with (0.2:
89.5 %, 1.0: 91.3 %); CLINC150 and HWU64 at ten examples +0.9 and +1.0 points."""


@dataclass(frozen=True)
class Features:
    """What the calibration sees about one message's neighbours."""

    route: int
    share: float
    best: float
    margin: float
    lexical: float = 0.0
    """The share of the message's words the route's evidence uses (0 until measured)."""
    lexical_margin: float = 0.0
    """``lexical`` minus the largest other route's."""
    typicality: float = 0.0
    """How similar the route's own examples are to each other, less the table's mean
    (:mod:`routermesh.runtime.typicality`; 0 until measured)."""

    def vector(self) -> list[float]:
        """The trained head's calibration features (logit of the share, best, margin)."""
        return [logit(self.share), self.best, self.margin]


def neighbour_features(
    sims: FloatArray,
    labels: IntArray,
    groups: RouteGroups,
    k: int,
    word_scores: Sequence[dict[int, float]] | None = None,
    *,
    typicality: npt.NDArray[np.float64] | None = None,
) -> tuple[list[Features], npt.NDArray[np.float64]]:
    """Features of each row of ``sims`` (queries x evidence; -inf for masked evidence) and
    the per-route scores (vote share + best similarity + :data:`WORDS_IN_RANKING` x the
    route's share of the row's words, ``word_scores``: each row's
    :meth:`~routermesh.runtime.lexical.RouteVocabulary.scores`) they were chosen by; the
    features' lexical fields are filled from ``word_scores`` too."""
    routes = groups.routes
    k = max(1, min(k, sims.shape[1]))
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    best = groups.best(sims)
    scores = np.empty((len(sims), routes))
    result = []
    for row, nearest in enumerate(top):
        values = sims[row, nearest]
        copies = nearest[values >= DUPLICATE_SIMILARITY]
        voters = copies if copies.size else nearest[np.isfinite(values)]
        weights = np.maximum(sims[row, voters], 0.0)
        votes = np.bincount(labels[voters], weights=weights, minlength=routes)
        total = float(votes.sum())
        share = votes / total if total > 0 else np.full(routes, 1.0 / routes)
        # A copy decides its own text: only the routes that hold it compete.
        score = share + (np.where(share > 0, best[row], -2.0) if copies.size else best[row])
        lexical = word_scores[row] if word_scores is not None else {}
        for other, value in lexical.items():
            score[other] += WORDS_IN_RANKING * value
        scores[row] = score
        route = int(np.argmax(score))
        others = np.delete(best[row], route)
        runner_up = float(others.max()) if others.size else -1.0
        of_route = lexical_of(lexical, route)
        result.append(
            Features(
                route=route,
                share=float(share[route]),
                best=float(best[row, route]),
                margin=float(best[row, route]) - max(runner_up, 0.0),
                lexical=of_route.own,
                lexical_margin=of_route.margin,
                typicality=float(typicality[route]) if typicality is not None else 0.0,
            )
        )
    return result, scores


@dataclass(frozen=True)
class TrainedHead:
    """A linear head over the (fine-tuned) embeddings and its calibration."""

    weights: npt.NDArray[np.float64]
    bias: npt.NDArray[np.float64]
    calibration: list[float]
    digest: str


def head_features(
    vector: FloatArray, head: TrainedHead, sims: FloatArray, groups: RouteGroups
) -> Features:
    """Features of one message under a trained head: the head's route and probability,
    and (as for the vote) that route's best similarity (``sims``: to every piece of
    evidence) and its margin over the other routes' best."""
    logits = head.weights @ vector + head.bias
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    route = int(np.argmax(probabilities))
    best_per_route = groups.best(sims)
    others = np.delete(best_per_route, route)
    runner_up = float(others.max()) if others.size else -1.0
    return Features(
        route=route,
        share=float(probabilities[route]),
        best=float(best_per_route[route]),
        margin=float(best_per_route[route]) - max(runner_up, 0.0),
    )


@dataclass(frozen=True)
class Candidate:
    """A route ranked for a message, with its evidence nearest to the message."""

    route: str
    score: float
    nearest: int
    """Row of the evidence nearest to the message (``ExampleIndex.texts``)."""


@dataclass(frozen=True)
class Judgement:
    """L0's view of one message."""

    route: str
    confidence: float
    """P(in scope) x P(this route | in scope), or the trained head's calibrated probability."""
    in_scope: float
    features: Features
    candidates: tuple[Candidate, ...] = ()


@dataclass
class ExampleIndex:
    """Evidence vectors with their routes, and the fitted calibration."""

    routes: tuple[str, ...]
    vectors: FloatArray
    labels: IntArray
    k: int
    calibration: Calibration
    loo_accuracy: float | None
    texts: tuple[str, ...] = ()
    head: TrainedHead | None = None
    clauses_by_route: bool = False
    """Multi-step detection judges a clause by P(route | in scope) alone (an encoder tuned
    with generic requests: the message around a clause says whether it is in scope)."""
    artifact: str | None = None
    """Digest of the trained artifact whose encoder built this index (a head, or an encoder
    tuned on the table); None: the base encoder."""
    requests: BoolArray | None = None
    """The evidence that stands for requests (examples; not description or tool phrases);
    None: all of it."""
    vocabulary: RouteVocabulary | None = None
    """The evidence's words per route (None: no texts, no lexical evidence)."""
    typicality: Typicality | None = None
    """How alike each route's examples are (None: not measured)."""
    groups: RouteGroups = field(init=False)

    def __post_init__(self) -> None:
        self.groups = RouteGroups(self.labels, len(self.routes))

    @property
    def typicality_by_route(self) -> npt.NDArray[np.float64] | None:
        """Each route's typicality (None: not measured)."""
        return self.typicality.routes if self.typicality is not None else None

    def classify(
        self,
        query: FloatArray,
        candidates: int = CANDIDATES,
        words: frozenset[str] = frozenset(),
    ) -> Judgement:
        """``query``: the message's unit vector; ``words``: its content words
        (:func:`routermesh.runtime.lexical.content_words`)."""
        sims = self.vectors @ query
        lexical = [self.vocabulary.scores(words)] if self.vocabulary is not None else None
        features, scores = neighbour_features(
            sims[None, :],
            self.labels,
            self.groups,
            self.k,
            lexical,
            typicality=self.typicality_by_route,
        )
        vote = features[0]
        in_scope = self.calibration.p_in_scope(in_scope_best(vote), vote.lexical)
        ranked = self._ranked(sims, scores[0], candidates)
        if self.head is not None and not bool((sims >= DUPLICATE_SIMILARITY).any()):
            # A near copy of an example (a learned misroute included) is decided by its
            # copies; everything else by the trained head.
            head = head_features(query, self.head, sims, self.groups)
            return Judgement(
                route=self.routes[head.route],
                confidence=logistic(self.head.calibration, head.vector()),
                in_scope=in_scope,
                features=head,
                candidates=ranked,
            )
        confidence = in_scope * self.calibration.p_correct(
            vote.share, vote.margin, vote.lexical_margin
        )
        return Judgement(
            route=self.routes[vote.route],
            confidence=confidence,
            in_scope=in_scope,
            features=vote,
            candidates=ranked,
        )

    def leave_one_out(self) -> list[tuple[int, Features]]:
        """Each example judged against the rest of the evidence, as the calibration sees
        it: (evidence row, features of the route chosen for it)."""
        rows = (
            np.flatnonzero(self.requests)
            if self.requests is not None
            else np.arange(len(self.labels), dtype=np.int64)
        )
        return _features(
            self.vectors,
            self.labels,
            self.groups,
            self.k,
            rows,
            mask_route=False,
            vocabulary=self.vocabulary,
            typicality=self.typicality,
        )

    def _ranked(
        self, sims: FloatArray, scores: npt.NDArray[np.float64], count: int
    ) -> tuple[Candidate, ...]:
        order = np.argsort(-scores)[:count]
        ranked = []
        for route in order:
            rows = self.groups.rows(int(route))
            if not rows.size:
                continue
            nearest = int(rows[np.argmax(sims[rows])])
            ranked.append(Candidate(self.routes[route], float(scores[route]), nearest))
        return tuple(ranked)


def build_index(
    vectors: FloatArray,
    labels: Sequence[int],
    routes: Sequence[str],
    k: int,
    *,
    queries: BoolArray | None = None,
    texts: Sequence[str] = (),
    seed: int = 0,
    escalation: str | None = None,
    prior: Prior | None = None,
) -> ExampleIndex:
    """The index over evidence ``vectors`` (route ids ``labels``) with its calibration.

    ``queries`` marks the evidence that stands for requests (examples, not description
    phrases): only those are queried in the leave-one-out and leave-route-out passes.
    ``escalation``: the escalation route, whose examples are varied by design (its
    typicality is not measured). ``prior``: the calibration prior of the encoder that
    made ``vectors`` (the packaged encoder's by default).
    """
    label_array = np.asarray(labels, dtype=np.int64)
    askable = np.ones(len(label_array), bool) if queries is None else np.asarray(queries, bool)
    groups = RouteGroups(label_array, len(routes))
    rng = np.random.default_rng(seed)
    candidates = np.flatnonzero(askable)
    vocabulary = RouteVocabulary.build(texts, label_array) if texts else None
    typicality = route_typicality(
        vectors,
        label_array,
        len(routes),
        askable,
        copies=DUPLICATE_SIMILARITY,
        exclude=list(routes).index(escalation)
        if escalation is not None and escalation in routes
        else None,
        seed=seed,
        groups=groups,
    )
    loo = _features(
        vectors,
        label_array,
        groups,
        k,
        sample_rows(candidates, LOO_LIMIT, rng),
        mask_route=False,
        vocabulary=vocabulary,
        typicality=typicality,
    )
    lro = _features(
        vectors,
        label_array,
        groups,
        k,
        sample_rows(candidates, LRO_LIMIT, rng),
        mask_route=True,
        vocabulary=vocabulary,
        typicality=typicality,
    )
    correct = [f.route == label_array[i] for i, f in loo]
    calibration = fit_calibration(
        in_scope=[f for _, f in loo],
        out_of_scope=[f for _, f in lro],
        correct=correct,
        prior=prior,
    )
    return ExampleIndex(
        routes=tuple(routes),
        vectors=vectors,
        labels=label_array,
        k=k,
        calibration=calibration,
        # None without examples to leave out (a table of tools or descriptions only).
        loo_accuracy=sum(correct) / len(correct) if correct else None,
        texts=tuple(texts),
        requests=askable,
        vocabulary=vocabulary,
        typicality=typicality,
    )


def _features(
    vectors: FloatArray,
    labels: IntArray,
    groups: RouteGroups,
    k: int,
    rows: IntArray,
    *,
    mask_route: bool,
    vocabulary: RouteVocabulary | None = None,
    typicality: Typicality | None = None,
) -> list[tuple[int, Features]]:
    """(row, features) of evidence ``rows`` queried against the rest: without themselves
    (leave-one-out), or without every piece of their own route (leave-route-out). A row
    with nothing left to compare with (a one-route table) is left out."""
    features: list[tuple[int, Features]] = []
    for start in range(0, len(rows), LOO_CHUNK):
        block = rows[start : start + LOO_CHUNK]
        sims = vectors[block] @ vectors.T
        if mask_route:
            sims[labels[block][:, None] == labels[None, :]] = -np.inf
        else:
            sims[np.arange(len(block)), block] = -np.inf
        comparable = np.isfinite(sims).any(axis=1)
        if not bool(comparable.any()):
            continue
        kept = block[comparable]
        word_scores = None
        if vocabulary is not None:
            word_scores = [
                vocabulary.scores_left_route_out(int(r))
                if mask_route
                else vocabulary.scores_left_one_out(int(r))
                for r in kept
            ]
        judged = neighbour_features(
            sims[comparable],
            labels,
            groups,
            k,
            word_scores,
            typicality=typicality.routes if typicality is not None else None,
        )[0]
        if typicality is not None and not mask_route:
            # Left out, a row must not count in its own route's typicality either.
            judged = [
                replace(f, typicality=typicality.left_out[int(r)])
                if f.route == labels[r] and int(r) in typicality.left_out
                else f
                for r, f in zip(kept, judged, strict=True)
            ]
        features.extend(zip((int(r) for r in kept), judged, strict=True))
    return features


def calibration_report(index: ExampleIndex) -> dict[str, Any]:
    """The fitted weights, for ``/v1/config`` and logs."""
    return {
        "in_scope": [round(w, 4) for w in index.calibration.in_scope],
        "correct": [round(w, 4) for w in index.calibration.correct],
        "half_in_scope_similarity": _midpoint(index.calibration.in_scope),
        "half_in_scope_similarity_by_route": route_midpoints(index),
        "lexical_words": len(index.vocabulary.users) if index.vocabulary else 0,
    }


def route_midpoints(index: ExampleIndex) -> dict[str, float]:
    """Per route, the best similarity at which a message is as likely in scope as not (no
    words of the route's own): the table's midpoint, raised for a route whose examples
    are alike and lowered for one whose examples spread (empty when there is none)."""
    midpoint = _midpoint(index.calibration.in_scope)
    if midpoint is None:
        return {}
    typicality = (
        index.typicality_by_route
        if index.typicality_by_route is not None
        else np.zeros(len(index.routes))
    )
    return {
        route: round(midpoint + typicality_shift(float(typicality[number])), 4)
        for number, route in enumerate(index.routes)
        if index.groups.rows(number).size
    }


def _midpoint(weights: tuple[float, float, float]) -> float | None:
    """The best similarity at which ``in_scope`` is one half for a message with none of
    the route's words (None when it never is)."""
    slope, _, bias = weights
    if slope <= 0 or not math.isfinite(slope):
        return None
    return round(-bias / slope, 4)
