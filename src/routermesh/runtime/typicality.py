"""How alike a route's examples are, for L0's in-scope model.

Ten examples that say one thing one way sit close together, and a request for that route
lands close to them; ten that spread over a server's job leave its requests further out.
A route's typicality is the mean similarity of its examples to their nearest other piece
of the route's evidence, less the table's mean over routes; the in-scope model reads the
best similarity less a share of it (``calibration.TYPICALITY_WEIGHT``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from routermesh.runtime.route_groups import RouteGroups, sample_rows

FloatArray = npt.NDArray[np.float64]

TYPICALITY_ROWS = 20
"""Examples (and, apart, phrases) per route that measure it, a seeded sample beyond this:
the nearest neighbour is nearer the more pieces a route has, so a route of 200 examples,
or one that learned many, is measured at the size of a hand-written one."""


@dataclass(frozen=True)
class Typicality:
    routes: FloatArray
    """Per route, less the table's mean; 0 for a route that was not measured."""
    left_out: dict[int, float] = field(default_factory=dict)
    """Evidence row -> its route's value without that row's own term: what the
    leave-one-out fit must see, as a serving request is never part of the mean."""


def route_typicality(
    vectors: npt.NDArray[np.floating[Any]],
    labels: npt.NDArray[np.int64],
    routes: int,
    requests: npt.NDArray[np.bool_] | None = None,
    *,
    copies: float,
    exclude: int | None = None,
    seed: int = 0,
    groups: RouteGroups | None = None,
) -> Typicality:
    """Each route's typicality over its examples (``requests``). Neighbours at least
    ``copies`` similar are copies and left out (a pasted duplicate says nothing about the
    spread). A route without examples is not measured (how alike a server's tool texts or
    description phrases are says nothing about its requests: on the 40-server tool table
    with tools alone, measuring them cost 4 points of coverage), nor is the route
    ``exclude`` (the escalation route: varied by design); neither counts in the mean.
    ``vectors`` are unit length (a row is its own copy, so never its own neighbour);
    ``groups``: ``labels`` already grouped, when the caller has them."""
    askable = np.ones(len(labels), bool) if requests is None else requests
    groups = groups if groups is not None else RouteGroups(labels, routes)
    rng = np.random.default_rng(seed)
    sums = np.zeros(routes)
    counts = np.zeros(routes, dtype=np.int64)
    terms: dict[int, float] = {}
    for route in range(routes):
        if route == exclude:
            continue
        members = groups.rows(route)
        asked, phrases = members[askable[members]], members[~askable[members]]
        asked = sample_rows(asked, TYPICALITY_ROWS, rng)
        phrases = sample_rows(phrases, TYPICALITY_ROWS, rng)
        if not asked.size:
            continue
        pool = np.concatenate([asked, phrases])
        sims = vectors[asked] @ vectors[pool].T
        sims[sims >= copies] = -np.inf  # itself included
        nearest = sims.max(axis=1)
        for row, value in zip(asked, nearest, strict=True):
            if np.isfinite(value):
                terms[int(row)] = float(value)
                sums[route] += value
                counts[route] += 1
    measured = counts > 0
    if not bool(measured.any()):
        return Typicality(np.zeros(routes))
    values = np.divide(sums, counts, out=np.zeros(routes), where=measured)
    centre = float(values[measured].mean())
    left_out = {}
    for row, term in terms.items():
        label = int(labels[row])
        # Without its one measured example a route is not measured: the table's mean.
        alone = counts[label] == 1
        left_out[row] = 0.0 if alone else (sums[label] - term) / (counts[label] - 1) - centre
    return Typicality(np.where(measured, values - centre, 0.0), left_out)
