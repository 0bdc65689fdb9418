"""``router-mesh bench prior``: the calibration prior of L0 (``runtime/calibration.py``).

A RouteTable of ten examples per route gives L0's calibration a few dozen rows, too
few to fit on their own; the fit is pulled towards a prior measured here on many
few-shot tables drawn from labelled *train* files (never the splits a benchmark
reports): random subsets of routes, a few examples each, descriptions for most,
the other routes' rows (and ``__escalate__`` rows) as requests no route handles.
Every row is judged by the serving path's own code (evidence, features); the two
models are fitted the way the per-table fit is (the in-scope classes weigh the same).
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from routermesh import bootstrap
from routermesh.runtime.calibration import correct_row, fit_logistic, in_scope_row
from routermesh.runtime.contract.config import ESCALATE_ROUTE, route_name_from_label
from routermesh.runtime.encoder import FloatArray
from routermesh.runtime.evidence import description_phrases
from routermesh.runtime.example_index import (
    DUPLICATE_SIMILARITY,
    Features,
    neighbour_features,
)
from routermesh.runtime.lexical import RouteVocabulary, content_words
from routermesh.runtime.route_groups import RouteGroups
from routermesh.runtime.typicality import route_typicality

SIZES = (5, 8, 10, 15, 20)
MIN_ROUTES = 4
QUERIES_PER_ROUTE = 20
OUT_OF_SCOPE_PER_ABSENT_ROUTE = 8
ROWS_PER_ROUTE = max(SIZES) + QUERIES_PER_ROUTE
log = logging.getLogger("routermesh.bench")

DESCRIBED = 0.7
"""Share of routes that get their description (people do not always write one)."""


@dataclass(frozen=True)
class PriorSource:
    train: Path
    descriptions: dict[str, str]
    by_intent: bool = False
    """Routes are the file's intents (CLINC150's 150, HWU64's 64) instead of its routes:
    tables as large as a tool table, whose routes are as near each other as tools
    are. An intent's description is its name in words (``alarm_query``, route ``alarm-query``:
    "alarm query")."""


class Encodes(Protocol):
    def encode(self, texts: Sequence[str]) -> FloatArray: ...


Tuner = Callable[[Sequence[str], Sequence[int], int], Encodes]
"""(evidence texts, their route numbers, routes) -> the encoder tuned on them."""


def fit_prior(
    sources: list[PriorSource],
    encoder: Encodes,
    *,
    tables: int,
    k: int,
    seed: int,
    tune: Tuner | None = None,
    max_routes: int | None = None,
    min_routes: int = MIN_ROUTES,
) -> dict[str, Any]:
    """Draw ``tables`` tables per source, judge their rows, fit both models.

    ``tune``: each table is judged by an encoder tuned on its evidence (the prior of a
    tuned L0) instead of ``encoder``; ``max_routes``, ``min_routes``: the most and fewest
    routes a table draws (tuning time grows with the table)."""
    judged = judge_tables(
        sources,
        encoder,
        tables=tables,
        k=k,
        seed=seed,
        tune=tune,
        max_routes=max_routes,
        min_routes=min_routes,
    )
    return {
        **fit_judged(judged),
        "tables": tables * len(sources),
        "k": k,
        "seed": seed,
        "sources": [str(s.train) for s in sources],
    }


@dataclass(frozen=True)
class Judged:
    """Every drawn table's rows as L0 saw them: requests some route handles (with
    whether the route chosen was theirs) and requests none does."""

    inside: list[Features]
    outside: list[Features]
    correct: list[bool]

    def __add__(self, other: Judged) -> Judged:
        return Judged(
            self.inside + other.inside, self.outside + other.outside, self.correct + other.correct
        )


def judge_tables(
    sources: list[PriorSource],
    encoder: Encodes,
    *,
    tables: int,
    k: int,
    seed: int,
    tune: Tuner | None = None,
    max_routes: int | None = None,
    min_routes: int = MIN_ROUTES,
) -> Judged:
    """Draw ``tables`` tables per source and judge their rows (see :func:`fit_prior`)."""
    if min_routes < MIN_ROUTES or (max_routes is not None and max_routes < min_routes):
        raise ValueError(
            f"max_routes {max_routes}, min_routes {min_routes}: a prior table holds "
            f"{MIN_ROUTES} routes or more, and max_routes must not be below min_routes"
        )
    rng = random.Random(seed)  # noqa: S311 - sampling, not secrets
    inside: list[Features] = []
    outside: list[Features] = []
    correct: list[bool] = []
    for source in sources:
        grouped, escalate = _grouped(source.train, by_intent=source.by_intent)
        # A route too small to give both its examples and its requests is left out.
        names = sorted(n for n, texts in grouped.items() if len(texts) >= ROWS_PER_ROUTE)
        if len(grouped) > len(names):
            small = sorted(set(grouped) - set(names))
            log.info(
                "%s: left out of the draws (under %d rows): %s", source.train, ROWS_PER_ROUTE, small
            )
        if len(names) - 2 < min_routes:
            raise ValueError(
                f"{source.train}: {len(names)} routes of {ROWS_PER_ROUTE} rows or more; a "
                f"table of {min_routes} needs {min_routes + 2} (two left out as out of scope)"
            )
        descriptions = (
            {name: re.sub(r"[-_]+", " ", name) for name in names}
            if source.by_intent
            else source.descriptions
        )
        for number in range(tables):
            table = _draw(
                grouped,
                escalate,
                names,
                descriptions,
                rng,
                max_routes=max_routes,
                min_routes=min_routes,
            )
            judge = encoder
            if tune is not None:
                started = time.monotonic()
                judge = tune(
                    [t for t, _ in table.evidence],
                    [label for _, label in table.evidence],
                    len(table.routes),
                )
                log.info(
                    "prior table %d/%d of %s tuned: %d routes, %d rows, %.0f s",
                    number + 1,
                    tables,
                    source.train,
                    len(table.routes),
                    len(table.evidence),
                    time.monotonic() - started,
                )
            features = _judge(judge, table, k)
            for (_, gold, asked), f in zip(table.rows, features, strict=True):
                if asked:
                    inside.append(f)
                    correct.append(table.routes[f.route] == gold)
                else:
                    outside.append(f)
    return Judged(inside, outside, correct)


def fit_judged(judged: Judged) -> dict[str, Any]:
    """Both models fitted on judged rows the way the per-table fit is (the in-scope
    classes weigh the same)."""
    inside, outside, correct = judged.inside, judged.outside, judged.correct
    positives, negatives = len(inside), len(outside)
    in_scope = fit_logistic(
        [in_scope_row(f) for f in [*inside, *outside]],
        [True] * positives + [False] * negatives,
        weights=[0.5 / positives] * positives + [0.5 / negatives] * negatives,
        strength=1e-6,
    )
    right = fit_logistic([correct_row(f) for f in inside], correct)
    return {
        "in_scope": [round(w, 2) for w in in_scope],
        "correct": [round(w, 2) for w in right],
        "in_scope_rows": positives,
        "out_of_scope_rows": negatives,
        "top1_accuracy": round(sum(correct) / max(len(correct), 1), 4),
    }


@dataclass(frozen=True)
class _Table:
    routes: list[str]
    evidence: list[tuple[str, int]]
    rows: list[tuple[str, str, bool]]
    requests: npt.NDArray[np.bool_]
    """Which evidence stands for requests (examples, not description phrases)."""


def _grouped(train: Path, *, by_intent: bool = False) -> tuple[dict[str, list[str]], list[str]]:
    grouped: defaultdict[str, list[str]] = defaultdict(list)
    escalate = []
    for row in bootstrap.read_rows(train):
        if row.route == ESCALATE_ROUTE:
            escalate.append(row.text)
        elif by_intent:
            if row.intent is None:
                raise ValueError(f"{train}: a row of route {row.route!r} has no intent")
            grouped[route_name_from_label(row.intent)].append(row.text)
        else:
            grouped[route_name_from_label(row.route)].append(row.text)
    return dict(grouped), escalate


def _draw(
    grouped: dict[str, list[str]],
    escalate: list[str],
    names: list[str],
    descriptions: dict[str, str],
    rng: random.Random,
    *,
    max_routes: int | None = None,
    min_routes: int = MIN_ROUTES,
) -> _Table:
    most = max(min_routes, len(names) - 2)
    chosen = rng.sample(
        names, rng.randint(min_routes, most if max_routes is None else min(most, max_routes))
    )
    size = rng.choice(SIZES)
    evidence: list[tuple[str, int]] = []
    requests: list[bool] = []
    rows: list[tuple[str, str, bool]] = []
    for label, route in enumerate(chosen):
        texts = rng.sample(grouped[route], size + QUERIES_PER_ROUTE)
        evidence += [(text, label) for text in texts[:size]]
        requests += [True] * size
        if rng.random() < DESCRIBED:
            phrases = description_phrases(descriptions.get(route, ""))
            evidence += [(p, label) for p in phrases]
            requests += [False] * len(phrases)
        rows += [(text, route, True) for text in texts[size:]]
    for route in names:
        if route not in chosen:
            rows += [
                (text, "", False)
                for text in rng.sample(grouped[route], OUT_OF_SCOPE_PER_ABSENT_ROUTE)
            ]
    if escalate:
        rows += [(text, "", False) for text in rng.sample(escalate, min(10, len(escalate)))]
    return _Table(
        routes=chosen, evidence=evidence, rows=rows, requests=np.array(requests, dtype=bool)
    )


def _judge(encoder: Encodes, table: _Table, k: int) -> list[Features]:
    """Each row's features as the serving path computes them (lexical evidence and the
    routes' typicality included)."""
    texts = [text for text, _ in table.evidence]
    vectors = encoder.encode(texts)
    labels = np.array([label for _, label in table.evidence], dtype=np.int64)
    queries = encoder.encode([text for text, _, _ in table.rows])
    groups = RouteGroups(labels, len(table.routes))
    vocabulary = RouteVocabulary.build(texts, labels)
    word_scores = [vocabulary.scores(content_words(text)) for text, _, _ in table.rows]
    typicality = route_typicality(
        vectors,
        labels,
        len(table.routes),
        table.requests,
        copies=DUPLICATE_SIMILARITY,
        groups=groups,
    )
    return neighbour_features(
        queries @ vectors.T, labels, groups, k, word_scores, typicality=typicality.routes
    )[0]
