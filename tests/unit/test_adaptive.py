"""Adaptive thresholds: the guarded update rule (pure), and the whole loop with the real L0
encoder behind the orchestrator API: decisions record each layer's verdict, feedback turns
them into outcomes (misroutes and confirmations), the threshold moves by a bounded step,
shows in /readyz, /v1/config and the metrics, and decisions cached before are not served."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from routermesh.runtime.adaptive import AdaptiveState, Outcome, adapt, lowest_threshold
from routermesh.runtime.app import create_app
from routermesh.runtime.contract.config import AdaptiveConfig, CacheConfig, RouterConfig
from routermesh.runtime.packaged import materialize
from routermesh.runtime.router import Router
from tests.support import homelab_rendered, layer_of, wait_until

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / ".cache/models"
MESSAGES = REPO / "bench/data/homelab-messages.jsonl"
SETTINGS = AdaptiveConfig(target=0.9, min_samples=50, max_step=0.05, floor=0.5, ceiling=0.99)


def _outcomes(pairs: list[tuple[float, bool]], at: float = 100.0, repeat: int = 1) -> list[Outcome]:
    return [Outcome(c, ok, at) for c, ok in pairs * repeat]


def _start(threshold: float = 0.8) -> AdaptiveState:
    return AdaptiveState(configured=threshold, threshold=threshold)


# Right at 0.6 and above, wrong below: the fitted threshold is 0.6.
CLEAN = [(0.95, True), (0.85, True), (0.75, True), (0.65, True), (0.6, True), (0.4, False)]


def test_lowest_threshold_keeps_the_target_over_enough_samples() -> None:
    pairs = [(0.9, True)] * 9 + [(0.7, False)] + [(0.6, True)] * 10
    assert lowest_threshold(pairs, 0.9, 5) == 0.6  # 19/20 = 0.95 >= 0.9
    assert lowest_threshold(pairs, 0.96, 5) == 0.9
    assert lowest_threshold(pairs, 0.9, 50) is None  # not enough samples anywhere


def test_nothing_moves_before_enough_outcomes_or_without_confirmations() -> None:
    few = adapt(_outcomes(CLEAN), _start(), SETTINGS, now=200)
    assert (few.threshold, few.state) == (0.8, "configured")
    assert few.reason == "6 of 50 outcomes"
    misroutes = adapt(_outcomes([(0.9, False)], repeat=60), _start(), SETTINGS, now=200)
    assert misroutes.threshold == 0.8
    assert "confirmations are needed" in misroutes.reason


def test_the_threshold_walks_to_the_fitted_value_in_bounded_steps() -> None:
    outcomes = _outcomes(CLEAN, repeat=20)
    state = _start()
    seen = []
    for step in range(6):
        state = adapt(outcomes, state, SETTINGS, now=200 + step)
        seen.append(state.threshold)
    assert seen == [0.75, 0.7, 0.65, 0.6, 0.6, 0.6]  # 0.05 at a time, then it holds
    assert state.state == "adapted" and state.updates == 4
    assert state.reason.startswith("at the fitted threshold")
    assert state.accuracy == 1.0 and state.samples == 120


def test_an_unreachable_target_raises_it_and_bounds_hold() -> None:
    noisy = _outcomes([(0.9, True), (0.9, False)], repeat=40)  # 50 % everywhere
    state = adapt(noisy, _start(0.97), SETTINGS, now=200)
    assert state.threshold == 0.99  # one step, capped by the ceiling
    assert "target not reached" in state.reason
    low = adapt(_outcomes([(0.3, True)], repeat=60), _start(0.52), SETTINGS, now=200)
    assert low.threshold == 0.5  # never below the floor


def test_a_change_that_measures_worse_is_rolled_back_and_frozen() -> None:
    before = _outcomes(CLEAN, at=100, repeat=20)
    state = adapt(before, _start(), SETTINGS, now=200)
    assert (state.threshold, state.previous) == (0.75, 0.8)
    # After the change, decisions at 0.75-0.8 turn out wrong: below 0.9 - 0.02.
    after = _outcomes([(0.77, False), (0.9, True)], at=300, repeat=15)
    rolled = adapt(before + after, state, SETTINGS, now=400)
    assert (rolled.threshold, rolled.state) == (0.8, "rolled_back")
    assert rolled.reason.startswith(
        "rolled back to the last good threshold 0.8: accuracy 0.500 over 30 outcomes"
    )
    frozen = adapt(before + after + _outcomes(CLEAN, at=500, repeat=30), rolled, SETTINGS, 600)
    assert frozen.threshold == 0.8 and frozen.state == "rolled_back"


def test_a_rollback_after_several_steps_returns_to_the_last_good_threshold() -> None:
    before = _outcomes(CLEAN, at=100, repeat=20)
    first = adapt(before, _start(), SETTINGS, now=200)
    assert first.threshold == 0.75
    # Enough outcomes at 0.75 and above since that change, all right: 0.75 is good.
    good = _outcomes([(0.77, True)], at=250, repeat=30)
    second = adapt(before + good, first, SETTINGS, now=300)
    assert (second.threshold, second.last_good) == (0.7, 0.75)
    third = adapt(before + good, second, SETTINGS, now=301)  # no outcomes at 0.7 yet
    assert (third.threshold, third.previous, third.last_good) == (0.65, 0.7, 0.75)
    bad = _outcomes([(0.67, False), (0.9, True)], at=400, repeat=15)
    rolled = adapt(before + good + bad, third, SETTINGS, now=500)
    # Not one step back to 0.7, which was never measured: to 0.75, which was.
    assert (rolled.threshold, rolled.state) == (0.75, "rolled_back")
    assert rolled.reason.startswith(
        "rolled back to the last good threshold 0.75: accuracy 0.500 over 30 outcomes since "
        "the change to 0.65"
    )


def test_a_rollback_with_no_step_measured_good_returns_to_the_configured_threshold() -> None:
    before = _outcomes(CLEAN, at=100, repeat=20)
    state = _start()
    for now in (200, 201, 202):  # three unmeasured steps: 0.75, 0.7, 0.65
        state = adapt(before, state, SETTINGS, now=now)
    assert (state.threshold, state.previous, state.last_good) == (0.65, 0.7, None)
    bad = _outcomes([(0.67, False), (0.9, True)], at=300, repeat=15)
    rolled = adapt(before + bad, state, SETTINGS, now=400)
    assert (rolled.threshold, rolled.state) == (0.8, "rolled_back")


def test_too_few_outcomes_after_a_change_do_not_roll_it_back() -> None:
    before = _outcomes(CLEAN, at=100, repeat=20)
    state = adapt(before, _start(), SETTINGS, now=200)
    after = _outcomes([(0.77, False)], at=300, repeat=5)
    assert adapt(before + after, state, SETTINGS, now=400).state == "adapted"
    # 25 of 30 right (83 %) is below 0.9 - 0.02, but not clearly: its 95 % interval reaches
    # 0.93, so a few unlucky outcomes do not undo the change.
    unlucky = _outcomes([(0.77, True)], at=300, repeat=25)
    unlucky += _outcomes([(0.77, False)], at=300, repeat=5)
    assert adapt(before + unlucky, state, SETTINGS, now=400).state == "adapted"


@pytest.fixture(scope="module")
def encoder_path() -> str:
    files = materialize(MODELS / "packaged", ["minilm-l6-onnx-int8", "minilm-l6-tokenizer"])
    return str(files["minilm-l6-onnx-int8"].parent.relative_to(MODELS))


def _config(encoder_path: str, threshold: float) -> RouterConfig:
    config = homelab_rendered()
    l0 = layer_of(config, "l0")
    l0 = l0.model_copy(
        update={
            "model": l0.model.model_copy(update={"path": encoder_path, "sha256": None}),
            "threshold": threshold,
            "timeout_ms": 5000,
            "adaptive": AdaptiveConfig(target=0.8, min_samples=20, max_step=0.1, floor=0.3),
        }
    )
    return config.model_copy(
        update={
            "layers": (l0,),
            "cache": CacheConfig(),
            "escalation": config.escalation.model_copy(update={"credentials_file": None}),
        }
    ).sealed()


def test_feedback_outcomes_move_l0s_threshold_live(
    encoder_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROUTER_MESH_LEARN_SECONDS", "0.1")
    directory = tmp_path / "config"
    directory.mkdir()
    config = _config(encoder_path, threshold=0.95)  # too strict: most requests escalate
    (directory / "router.json").write_text(config.model_dump_json())
    rows = [json.loads(line) for line in MESSAGES.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["route"] in config.route_names]
    random.Random(0).shuffle(rows)  # noqa: S311 - test order, not a secret
    with TestClient(create_app(Router(directory, models_dir=MODELS, poll_seconds=0.05))) as c:
        assert wait_until(lambda: c.get("/readyz").status_code == 200, timeout=60)
        ready = c.get("/readyz").json()
        assert ready["thresholds"]["l0"]["state"] == "configured"
        assert ready["thresholds"]["l0"]["samples"] == 0
        decided = {}
        for row in rows:
            decided[row["text"]] = c.post("/v1/route", json={"message": row["text"]}).json()
        escalated = sum(d["layer"] == "escalated" for d in decided.values())
        # An outcome is a verdict that chose a server: L0 choosing the escalation route (a
        # request split as multi-step) sends the request on and is not one.
        traces = [
            c.post("/v1/route", json={"message": row["text"], "explain": True}).json()["trace"]
            for row in rows
        ]
        escalation = config.escalation.route
        servers = sum(trace[0]["route"] not in (None, escalation) for trace in traces)
        assert servers >= len(rows) - 2
        assert escalated > len(rows) // 2
        # The agent reports how each request ended: misroutes and confirmations alike.
        for row in rows:
            answer = c.post(
                "/v1/feedback", json={"message": row["text"], "expected_route": row["route"]}
            ).json()
            assert answer["measured"] is True  # the cached decision's verdicts were found
            assert answer["misroute"] is (decided[row["text"]]["route"] != row["route"])

        def adapted() -> bool:
            report = c.get("/readyz").json()["thresholds"]["l0"]
            return bool(report["state"] == "adapted" and report["samples"] == servers)

        assert wait_until(adapted, timeout=30)
        report = c.get("/readyz").json()["thresholds"]["l0"]
        assert report["configured"] == 0.95
        assert 0.3 <= report["threshold"] < 0.95
        layer = c.get("/v1/config").json()["layers"][0]
        assert layer["threshold"] == report["threshold"] and layer["configured_threshold"] == 0.95
        metrics = c.get("/metrics").text
        assert f'router_adaptive_threshold{{layer="l0"}} {report["threshold"]}' in metrics
        assert 'router_threshold_updates_total{layer="l0",outcome="adapted"}' in metrics
        # A decision cached under the old threshold is not served: it is decided again.
        text = next(t for t, d in decided.items() if d["layer"] == "escalated")
        again = c.post("/v1/route", json={"message": text}).json()
        assert again["cache_hit"] is False
        # Confirmations are outcomes, not examples: L0 learned only the misroutes (no
        # request here is reported with the escalation route).
        misroutes = sum(d["route"] != r["route"] for r in rows for d in [decided[r["text"]]])
        wrong = {r["text"] for r in rows if decided[r["text"]]["route"] != r["route"]}
        assert wait_until(
            lambda: c.get("/v1/config").json()["layers"][0]["index"]["learned"] == len(wrong)
        )
        assert misroutes > 0
        # The reports export as examplesFrom rows for the next config, with the outcomes.
        exported = [json.loads(x) for x in c.get("/v1/feedback?limit=500").text.splitlines()]
        assert len(exported) == misroutes and all(
            e["route"] != e["decided_route"] for e in exported
        )
        every = c.get("/v1/feedback", params={"limit": 500, "misroutes": "false"}).text
        rows_out = [json.loads(x) for x in every.splitlines()]
        assert len(rows_out) == len(rows)
        assert {(e["text"], e["route"]) for e in rows_out} == {
            (r["text"], r["route"]) for r in rows
        }
        assert all(e["verdicts"] and e["verdicts"][0][0] == "l0" for e in rows_out)
        assert c.get("/v1/feedback?limit=0").status_code == 422
