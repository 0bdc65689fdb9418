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

from routermesh_bench.prior import PriorSource, _draw, fit_prior, judge_tables

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


def _route_train(tmp_path: Path) -> Path:
    """_grouped()'s routes as a train file."""
    train = tmp_path / "train.jsonl"
    train.write_text(
        "".join(
            json.dumps({"text": text, "route": route}) + "\n"
            for route, texts in _grouped().items()
            for text in texts
        )
    )
    return train


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
    train = _route_train(tmp_path)
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


def _intent_train(tmp_path: Path) -> Path:
    """Two routes of three intents each, 40 rows per intent, and one intent too small to
    give both a table's examples and its requests (``prior.ROWS_PER_ROUTE``)."""
    lines = []
    for route in ("alarm", "music"):
        for intent in ("query", "set", "remove"):
            name = f"{route}_{intent}"
            lines += [
                {"text": f"{name} request {n} word{n % 3}", "route": route, "intent": name}
                for n in range(40)
            ]
    lines += [
        {"text": f"music_tiny request {n}", "route": "music", "intent": "music_tiny"}
        for n in range(39)
    ]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return train


def test_intent_tables_take_intents_as_routes_named_in_words(tmp_path: Path) -> None:
    train = _intent_train(tmp_path)
    tuned: list[tuple[list[str], list[int], int]] = []

    def tune(texts: Sequence[str], labels: Sequence[int], routes: int) -> BagOfWords:
        tuned.append((list(texts), list(labels), routes))
        return BagOfWords()

    judged = judge_tables(
        [PriorSource(train, {"alarm": "never read for intent tables"}, by_intent=True)],
        Refuses(),
        tables=6,
        k=5,
        seed=11,
        tune=tune,
        min_routes=4,
        max_routes=4,
    )
    sized = {f"{r}_{i}" for r in ("alarm", "music") for i in ("query", "set", "remove")}
    described = 0
    for texts, _, routes in tuned:
        assert routes == 4
        examples = [t for t in texts if " request " in t]
        # Every example's route is one of the six sized intents (never music_tiny).
        assert {t.split()[0] for t in examples} <= sized
        phrases = [t for t in texts if " request " not in t]
        # A described intent's description is its name in words.
        assert set(phrases) <= {name.replace("_", " ") for name in sized}
        described += len(phrases)
    assert described > 0 and len(tuned) == 6
    # 4 drawn intents x 20 requests; the 2 others give 8 rows each.
    assert len(judged.inside) == 6 * 80 and len(judged.outside) == 6 * 16
    assert len(judged.correct) == len(judged.inside)
    both = judged + judged
    assert (len(both.inside), len(both.outside)) == (960, 192)


def test_intent_tables_need_an_intent_on_every_row(tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"text": "wake me at six", "route": "alarm"}) + "\n")
    with pytest.raises(ValueError, match="route 'alarm' has no intent"):
        judge_tables([PriorSource(train, {}, by_intent=True)], BagOfWords(), tables=1, k=5, seed=1)


def test_route_bounds_are_checked(tmp_path: Path) -> None:
    train = _intent_train(tmp_path)
    with pytest.raises(ValueError, match="max_routes must not be below min_routes"):
        judge_tables(
            [PriorSource(train, {})],
            BagOfWords(),
            tables=1,
            k=5,
            seed=1,
            min_routes=6,
            max_routes=5,
        )
    with pytest.raises(ValueError, match="4 routes or more"):
        judge_tables([PriorSource(train, {})], BagOfWords(), tables=1, k=5, seed=1, min_routes=3)


def test_a_table_larger_than_the_file_allows_is_refused(tmp_path: Path) -> None:
    train = _intent_train(tmp_path)
    # Six sized intents: tables of up to four, two left out as out of scope.
    with pytest.raises(ValueError, match="a table of 5 needs 7"):
        judge_tables(
            [PriorSource(train, {}, by_intent=True)],
            BagOfWords(),
            tables=1,
            k=5,
            seed=1,
            min_routes=5,
        )


def test_route_tables_draw_as_before_the_intent_draws(tmp_path: Path) -> None:
    # Every route is large enough, so judge_tables draws what _draw drew for this seed
    # before intents and the size filter existed (test_draw_bounds_the_routes_when_asked:
    # five routes, 20 requests each, 8 from each of the 7 absent routes).
    train = _route_train(tmp_path)
    judged = judge_tables([PriorSource(train, {})], BagOfWords(), tables=1, k=5, seed=3)
    assert (len(judged.inside), len(judged.outside)) == (100, 56)
