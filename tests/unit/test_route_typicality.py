"""A route's typicality (how alike its examples are) in L0's in-scope model: measured per
route, taken off the best similarity, and shown per route by check-table."""

from __future__ import annotations

import math

import numpy as np
import pytest

from routermesh.runtime.example_index import DUPLICATE_SIMILARITY as COPIES
from routermesh.runtime.example_index import build_index, route_midpoints
from routermesh.runtime.typicality import route_typicality


def _plane(angles: list[float], first: int, dims: int = 8) -> np.ndarray:
    """Unit vectors at ``angles`` (degrees) in the plane of axes ``first`` and ``first + 1``."""
    rows = np.zeros((len(angles), dims))
    for row, angle in enumerate(angles):
        rows[row, first] = math.cos(math.radians(angle))
        rows[row, first + 1] = math.sin(math.radians(angle))
    return rows


def test_each_route_gets_its_examples_nearest_neighbour_similarity_less_the_tables_mean() -> None:
    # Route 0: 30 degrees apart (nearest neighbour cos 30 = 0.8660); route 1: 60 degrees
    # apart (cos 60 = 0.5). The table's mean is 0.6830.
    vectors = np.vstack([_plane([0, 30, 60], 0), _plane([0, 60, 120], 2)])
    labels = np.array([0, 0, 0, 1, 1, 1])
    typicality = route_typicality(vectors, labels, 2, copies=COPIES)
    assert typicality.routes == pytest.approx([0.1830, -0.1830], abs=1e-4)


def test_copies_of_an_example_do_not_make_a_route_look_alike() -> None:
    # A pasted duplicate of route 0's first example: its nearest other piece is still 30
    # degrees away, so the route's figure stays cos 30.
    vectors = np.vstack([_plane([0, 0, 30, 60], 0), _plane([0, 60, 120], 2)])
    labels = np.array([0, 0, 0, 0, 1, 1, 1])
    typicality = route_typicality(vectors, labels, 2, copies=COPIES)
    assert typicality.routes == pytest.approx([0.1830, -0.1830], abs=1e-4)


def test_phrases_are_neighbours_but_only_examples_are_measured() -> None:
    # Route 0: examples at 0 and 60 degrees (0.5 apart) and a description phrase at 30,
    # nearest to both (0.8660). Route 1: phrases only, not measured. Route 2: examples
    # 90 degrees apart (0.0). Route 3: one example, nothing to be near. The mean of the
    # measured two is 0.4330.
    vectors = np.vstack(
        [_plane([0, 60, 30], 0), _plane([0, 90], 2), _plane([0, 90], 4), _plane([0], 6)]
    )
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 3])
    requests = np.array([True, True, False, False, False, True, True, True])
    typicality = route_typicality(vectors, labels, 4, requests, copies=COPIES)
    assert typicality.routes == pytest.approx([0.4330, 0.0, -0.4330, 0.0], abs=1e-4)


def test_a_table_of_tools_alone_is_not_measured() -> None:
    # Phrases 30 and 60 degrees apart: how alike a server's tool texts are says nothing
    # about how its requests spread.
    vectors = np.vstack([_plane([0, 30], 0), _plane([0, 60], 2)])
    labels = np.array([0, 0, 1, 1])
    requests = np.zeros(4, dtype=bool)
    typicality = route_typicality(vectors, labels, 2, requests, copies=COPIES)
    assert typicality.routes == pytest.approx([0.0, 0.0])


def test_the_escalation_route_is_neither_measured_nor_in_the_mean() -> None:
    vectors = np.vstack([_plane([0, 30], 0), _plane([0, 60], 2), _plane([0, 90], 4)])
    labels = np.array([0, 0, 1, 1, 2, 2])
    typicality = route_typicality(vectors, labels, 3, copies=COPIES, exclude=2)
    assert typicality.routes == pytest.approx([0.1830, -0.1830, 0.0], abs=1e-4)


def test_a_left_out_example_does_not_count_in_its_own_routes_figure() -> None:
    # Route 0 at 0, 30, 90 degrees: nearest 0.8660, 0.8660, 0.5 (mean 0.7440); route 1
    # at 0, 60, 120: 0.5 each. Mean 0.6220. Without the 90-degree example route 0 is
    # 0.8660 (+0.2440); without the first one (0.8660 + 0.5) / 2 (+0.0610).
    vectors = np.vstack([_plane([0, 30, 90], 0), _plane([0, 60, 120], 2)])
    labels = np.array([0, 0, 0, 1, 1, 1])
    typicality = route_typicality(vectors, labels, 2, copies=COPIES)
    assert typicality.routes == pytest.approx([0.1220, -0.1220], abs=1e-4)
    assert typicality.left_out[2] == pytest.approx(0.2440, abs=1e-4)
    assert typicality.left_out[0] == pytest.approx(0.0610, abs=1e-4)
    # The calibration's leave-one-out pass sees the left-out figure, not the route's.
    index = build_index(vectors, labels.tolist(), ["a", "b"], k=1)
    judged = dict(index.leave_one_out())
    assert index.routes[judged[2].route] == "a"
    assert judged[2].typicality == pytest.approx(0.2440, abs=1e-4)


def test_a_table_without_two_pieces_per_route_has_no_typicality() -> None:
    vectors = np.vstack([_plane([0], 0), _plane([0], 2)])
    typicality = route_typicality(vectors, np.array([0, 1]), 2, copies=COPIES)
    assert typicality.routes == pytest.approx([0.0, 0.0])
    assert typicality.left_out == {}


def _spread_table() -> tuple[np.ndarray, np.ndarray]:
    """Route 0's ten examples close around one axis (nearest neighbours 0.87-0.98, mean
    0.94: alike), route 1's spread around another (0.56-0.88, mean 0.72: varied); the
    last axes stay free."""
    rng = np.random.default_rng(7)
    dims = 24
    rows, labels = [], []
    for route, spread, first in ((0, 0.45, 0), (1, 1.5, 12)):
        for _ in range(10):
            vector = np.zeros(dims)
            vector[first] = 1.0
            vector[first + 1 : first + 10] = rng.normal(0.0, spread / 3, 9)
            rows.append(vector / np.linalg.norm(vector))
            labels.append(route)
    return np.array(rows), np.array(labels)


def test_the_same_similarity_is_weaker_evidence_for_a_route_whose_examples_are_alike() -> None:
    vectors, labels = _spread_table()
    index = build_index(vectors, labels.tolist(), ["alike", "varied"], k=5)
    assert index.typicality is not None
    assert index.typicality.routes[0] > 0 > index.typicality.routes[1]
    free = np.zeros(vectors.shape[1])
    free[-1] = 1.0
    judged = {}
    for route, row in (("alike", 0), ("varied", 10)):
        # 0.6 to one example of the route, nothing else nearer, no words.
        query = 0.6 * vectors[row] + 0.8 * free
        judgement = index.classify(query)
        assert judgement.route == route
        assert judgement.features.best == pytest.approx(0.6, abs=1e-9)
        judged[route] = judgement.in_scope
    assert judged["varied"] > judged["alike"]
    # check-table's per-route figure says the same: the alike route asks for more.
    midpoints = route_midpoints(index)
    assert midpoints["alike"] > midpoints["varied"]
