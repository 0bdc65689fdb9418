"""``router-mesh bench prior``'s table draws and its tuned variant (each table judged by an
encoder tuned on that table's evidence)."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from routermesh_bench.prior import PriorSource, _draw, fit_prior

ROUTES = [f"route{i:02d}" for i in range(12)]


class Refuses:
    """The base encoder of a tuned prior: never asked."""

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        raise AssertionError(f"the base encoder was asked to encode {len(texts)} texts")


class BagOfWords:
    """A deterministic stand-in encoder: hashed word counts, unit length."""

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.split():
                out[row, int(hashlib.sha256(word.encode()).hexdigest(), 16) % 64] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def _grouped() -> dict[str, list[str]]:
    return {
        route: [f"{route} task {n} word{n % 7} thing{n % 5}" for n in range(40)] for route in ROUTES
    }


def _rng(seed: int) -> random.Random:
    return random.Random(seed)  # noqa: S311 - sampling, not secrets


def test_draw_bounds_the_routes_when_asked() -> None:
    grouped = _grouped()
    unbounded = [len(_draw(grouped, [], ROUTES, {}, _rng(seed)).routes) for seed in range(30)]
    bounded = [
        len(_draw(grouped, [], ROUTES, {}, _rng(seed), max_routes=5).routes) for seed in range(30)
    ]
    assert max(unbounded) == 10  # 4 to len - 2 routes
    assert min(bounded) == 4 and max(bounded) == 5
    # Without a bound a seed draws what it drew before the bound existed.
    table = _draw(grouped, [], ROUTES, {}, _rng(3))
    assert table.routes == ["route09", "route08", "route02", "route05", "route07"]
    assert (len(table.evidence), len(table.rows)) == (100, 156)
    assert table.evidence[0] == ("route09 task 4 word4 thing4", 0)


def test_tuned_prior_judges_each_table_with_its_own_encoder(tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    train.write_text(
        "".join(
            json.dumps({"text": text, "route": route}) + "\n"
            for route, texts in _grouped().items()
            for text in texts
        )
    )
    tuned: list[tuple[list[str], list[int], int]] = []

    def tune(texts: Sequence[str], labels: Sequence[int], routes: int) -> BagOfWords:
        tuned.append((list(texts), list(labels), routes))
        return BagOfWords()

    fitted = fit_prior(
        [PriorSource(train, {})],
        Refuses(),
        tables=3,
        k=5,
        seed=7,
        tune=tune,
        max_routes=6,
    )
    assert len(tuned) == 3
    for texts, labels, routes in tuned:
        assert 4 <= routes <= 6
        assert sorted(set(labels)) == list(range(routes))
        # No description: the evidence is examples alone, one size for every route.
        assert len(texts) == len(labels) and len(texts) % routes == 0
        assert all(text.split()[0] in ROUTES for text in texts)
    assert fitted["tables"] == 3 and len(fitted["in_scope"]) == 3
    assert len(fitted["correct"]) == 4
    with pytest.raises(ValueError, match="4 routes or more"):
        fit_prior([PriorSource(train, {})], Refuses(), tables=1, k=5, seed=7, max_routes=3)
