"""The benchmark's arithmetic (quality metrics, threshold calibration, replay stream,
eval rows, report) on hand-built records whose right answers are known, and the
`router-mesh bench` commands that need no model (records reuse, input errors)."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest

from routermesh.cli import main
from routermesh.runtime.app import LayerTrace
from routermesh_bench import calibrate, metrics
from routermesh_bench.perf import replay_stream
from routermesh_bench.records import LayerVerdict, Record, read_records, write_records
from routermesh_bench.report import write_report
from routermesh_bench.stack import BenchError, eval_rows, mesh_manifest

ESC = "escalate"


def record(
    gold: str,
    route: str,
    layer: str,
    trace: list[tuple[str, str | None, float]],
    *,
    in_scope: bool | None = None,
) -> Record:
    return Record(
        text=f"{gold}->{route}",
        gold=gold,
        in_scope=gold != ESC if in_scope is None else in_scope,
        route=route,
        layer=layer,
        confidence=max((c for _, _, c in trace), default=0.0),
        trace=tuple(
            LayerVerdict(layer=n, route=r, confidence=c, reason=None if r else "timeout", ms=1.0)
            for n, r, c in trace
        ),
        latency_ms=2.0,
        client_ms=3.0,
    )


def test_quality_counts_routed_accuracy_coverage_and_out_of_scope() -> None:
    records = [
        record("a", "a", "l1", [("l1", "a", 0.9), ("l2", "a", 0.8)]),
        record("a", "b", "l1", [("l1", "b", 0.95), ("l2", "a", 0.6)]),
        record("b", "b", "l2", [("l1", "a", 0.4), ("l2", "b", 0.9)]),
        record("b", ESC, "escalated", [("l1", None, 0.0), ("l2", "b", 0.5)]),
        record(ESC, ESC, "escalated", [("l1", "a", 0.3), ("l2", "b", 0.4)]),
        record(ESC, "a", "l2", [("l1", "a", 0.2), ("l2", "a", 0.9)]),
    ]
    q = metrics.quality(records, ESC)
    assert q["n"] == 6 and q["n_in_scope"] == 4 and q["n_out_of_scope"] == 2
    # Routed locally: rows 1, 2, 3, 6; right: 1 and 3.
    assert q["routed_accuracy"] == 0.5
    assert q["coverage"] == 0.75  # 3 of 4 in-scope rows routed
    assert q["oos_escalated"] == 0.5
    assert q["per_layer"]["l1"] == {
        "share": pytest.approx(2 / 6, abs=1e-6),
        "n": 2,
        "accuracy": 0.5,
    }
    assert q["per_layer"]["l2"]["n"] == 2 and q["per_layer"]["l2"]["accuracy"] == 0.5
    assert q["per_layer"]["escalated"]["accuracy"] == 0.5
    assert q["per_layer"]["cache"]["n"] == 0
    assert q["layers"]["l1"]["abstained"] == {"timeout": 1}
    assert q["layers"]["l1"]["answered"] == 5
    assert q["confusion"]["matrix"]["a"]["b"] == 1
    assert q["confusion"]["matrix"][ESC]["a"] == 1
    assert set(q["ece"]) == {"l1", "l2"}


def test_oos_escalated_is_null_without_out_of_scope_rows() -> None:
    q = metrics.quality([record("a", "a", "l1", [("l1", "a", 0.9)])], ESC)
    assert q["oos_escalated"] is None and q["routed_accuracy"] == 1.0


def test_ece_is_zero_when_calibrated_and_the_gap_when_overconfident() -> None:
    calibrated = [(0.75, True)] * 3 + [(0.75, False)]
    assert metrics.reliability(calibrated)["ece"] == pytest.approx(0.0)
    overconfident = [(0.95, True)] * 5 + [(0.95, False)] * 5
    result = metrics.reliability(overconfident)
    assert result["ece"] == pytest.approx(0.45)
    assert result["bins"][9] == {
        "low": 0.9,
        "high": 1.0,
        "n": 10,
        "accuracy": 0.5,
        "confidence": pytest.approx(0.95),
    }


def test_percentiles_interpolate() -> None:
    assert metrics.percentile([1, 2, 3, 4], 50) == 2.5
    assert metrics.percentile([], 50) is None
    assert metrics.latency_summary([5.0])["p99"] == 5.0


def _synthetic(seed: int = 1, n: int = 600) -> list[Record]:
    """L1 right when confident (>= 0.8) 97 % of the time, else 50 %; L2 right 93 % at >= 0.6."""
    rng = random.Random(seed)  # noqa: S311 - test data
    rows = []
    for _ in range(n):
        gold = rng.choice("abc")
        c1 = rng.random()
        r1 = gold if rng.random() < (0.97 if c1 >= 0.8 else 0.5) else "x"
        c2 = rng.random()
        r2 = gold if rng.random() < (0.93 if c2 >= 0.6 else 0.4) else "x"
        rows.append(record(gold, gold, "l1", [("l1", r1, c1), ("l2", r2, c2)]))
    return rows


def test_calibration_finds_the_lowest_threshold_that_meets_each_target() -> None:
    records = _synthetic()
    fits = calibrate.fit(records, per_route=False)
    l1, l2 = fits
    assert (l1.layer, l2.layer) == ("l1", "l2")
    assert l1.reached and l2.reached
    assert 0.7 < l1.threshold <= 0.85
    assert l1.accuracy is not None and l1.accuracy >= 0.95
    assert l2.accuracy is not None and l2.accuracy >= 0.92
    assert l2.rows == len(records) - l1.decided  # L2 only sees what L1 left
    # A lower threshold than the fitted one misses the target on the same rows.
    lower = [
        (r.verdict("l1").confidence, r.verdict("l1").route == r.gold)  # type: ignore[union-attr]
        for r in records
        if r.verdict("l1").confidence >= l1.threshold - 0.05  # type: ignore[union-attr]
    ]
    assert sum(ok for _, ok in lower) / len(lower) < 0.95
    expected = calibrate.expected(records, fits, ESC)
    assert expected["coverage"] == pytest.approx((l1.decided + l2.decided) / len(records), abs=1e-6)
    assert calibrate.mesh_patch(fits) == {
        "spec": {"layers": {"l1": {"threshold": l1.threshold}, "l2": {"threshold": l2.threshold}}}
    }


def test_a_layer_that_cannot_reach_its_target_routes_only_at_certainty() -> None:
    records = [record("a", "a", "l1", [("l1", "b", 0.99)]) for _ in range(30)]
    (fit,) = calibrate.fit(records)
    assert (fit.threshold, fit.reached, fit.decided) == (1.0, False, 0)


def test_per_route_override_raises_the_threshold_of_a_route_that_misses() -> None:
    good = [record("a", "a", "l1", [("l1", "a", 0.9)]) for _ in range(200)]
    # route b is right only above 0.95
    bad_b = [record("c", "c", "l1", [("l1", "b", 0.9)]) for _ in range(40)]
    right_b = [record("b", "b", "l1", [("l1", "b", 0.97)]) for _ in range(40)]
    fits = calibrate.fit(good + bad_b + right_b, {"l1": 0.8}, min_samples=20, per_route=True)
    assert fits[0].threshold == 0.9
    assert fits[0].per_route == {"b": 0.97}
    assert calibrate.route_thresholds(fits) == {"b": {"l1": 0.97}}


def test_an_oos_target_raises_the_first_threshold_as_little_as_it_takes() -> None:
    # In scope: right at 0.7-0.99. Out of scope: the layer is sure of a route at 0.6-0.89.
    inside = [record("a", "a", "l0", [("l0", "a", 0.7 + i / 100)]) for i in range(30)]
    outside = [
        record(ESC, "a", "l0", [("l0", "a", 0.6 + i / 100)], in_scope=False) for i in range(30)
    ]
    records = inside + outside
    fits = calibrate.fit(records, {"l0": 0.5}, min_samples=5)
    assert calibrate.expected(records, fits, ESC)["oos_escalated"] < 0.5
    raised = calibrate.meet_oos(records, fits, ESC, 0.85)
    result = calibrate.expected(records, raised, ESC)
    assert result["oos_escalated"] >= 0.85
    # The lowest threshold that does it: one step lower escalates too few.
    lower = [dataclasses.replace(raised[0], threshold=raised[0].threshold - 0.01)]
    assert calibrate.expected(records, lower, ESC)["oos_escalated"] < 0.85
    assert result["coverage"] > 0  # what is left of coverage is kept
    # Already met, or no out-of-scope rows: unchanged.
    assert calibrate.meet_oos(records, raised, ESC, 0.85) == raised
    assert calibrate.meet_oos(inside, fits, ESC, 0.99) == fits


def test_routed_accuracy_at_a_realistic_out_of_scope_share() -> None:
    # 100 in scope: 90 routed, 88 right. 10 out of scope: 2 routed (always wrong).
    records = (
        [record("a", "a", "l0", [("l0", "a", 0.9)]) for _ in range(88)]
        + [record("a", "b", "l0", [("l0", "b", 0.9)]) for _ in range(2)]
        + [record("a", ESC, "escalated", [("l0", "a", 0.1)]) for _ in range(10)]
        + [record(ESC, "a", "l0", [("l0", "a", 0.9)], in_scope=False) for _ in range(2)]
        + [record(ESC, ESC, "escalated", [("l0", "a", 0.1)], in_scope=False) for _ in range(8)]
    )
    fits = [calibrate.LayerFit("l0", 0.9, 0.5, True, 110, 0, 0)]
    result = calibrate.expected(records, fits, ESC, 0.5)
    # As counted: 88 right of 92 routed.
    assert result["routed_accuracy"] == 0.956522
    # Half the traffic out of scope: 0.5 * 0.88 right of 0.5 * 0.90 + 0.5 * 0.2 routed.
    assert result["routed_accuracy_at_share"] == 0.8
    assert result["oos_share"] == 0.5
    assert "routed_accuracy_at_share" not in calibrate.expected(records, fits, ESC)


def test_an_oos_share_raises_the_first_threshold_until_the_target_holds_at_that_share() -> None:
    # In scope: right at 0.70-0.99. Out of scope (2 rows in 32): routed at 0.80 and 0.90.
    inside = [record("a", "a", "l0", [("l0", "a", round(0.7 + i / 100, 2))]) for i in range(30)]
    outside = [record(ESC, "a", "l0", [("l0", "a", c)], in_scope=False) for c in (0.8, 0.9)]
    records = inside + outside
    fits = calibrate.fit(records, {"l0": 0.9}, min_samples=5)
    assert fits[0].threshold == 0.7  # 30 right of 32: the 90 % target holds as counted
    raised = calibrate.meet_share(records, fits, ESC, 0.5, 0.9)
    # With out-of-scope requests half the traffic, only a threshold above 0.90 keeps 90 %
    # (0.81-0.90: 0.5 right of 0.5 + 0.5 * 1/2 routed is 67 %): the next confidence seen.
    assert raised[0].threshold == 0.91
    assert (raised[0].decided, raised[0].correct) == (9, 9)  # counted at the new threshold
    result = calibrate.expected(records, raised, ESC, 0.5)
    assert result["routed_accuracy_at_share"] == 1.0
    assert result["coverage"] == 0.3
    # Already met, or no out-of-scope rows: unchanged.
    assert calibrate.meet_share(records, raised, ESC, 0.5, 0.9) == raised
    assert calibrate.meet_share(inside, fits, ESC, 0.5, 0.9) == fits


def test_a_fit_on_a_trained_heads_records_patches_the_heads_settings() -> None:
    fits = [calibrate.LayerFit("l0", 0.98, 0.93914, True, 10, 9, 9)]
    patch = calibrate.mesh_patch(fits, {"l0": (0.7213041, 0.8763889)}, headed=("l0",))
    assert patch == {
        "spec": {
            "layers": {
                "l0": {
                    "head": {
                        "threshold": 0.93914,
                        "calibration": {"slope": 0.721304, "intercept": 0.876389},
                    }
                }
            }
        }
    }


def test_records_round_trip(tmp_path: Path) -> None:
    records = _synthetic(n=5)
    write_records(tmp_path / "r.jsonl", records)
    assert list(read_records(tmp_path / "r.jsonl")) == records
    (tmp_path / "bad.jsonl").write_text('{"text": 1}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1"):
        list(read_records(tmp_path / "bad.jsonl"))


def test_replay_stream_has_every_message_once_in_order_and_about_half_repeats() -> None:
    messages = [f"m{i}" for i in range(400)]
    stream = replay_stream(messages, random.Random(3))  # noqa: S311
    first = list(dict.fromkeys(stream))
    assert first == messages
    assert len(stream) == 2 * len(messages)
    assert replay_stream([], random.Random(3)) == []  # noqa: S311


def _jsonl(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"text": t, "route": r}) + "\n" for t, r in rows))
    return path


def test_eval_rows_map_labels_and_sample_reproducibly(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "eval.jsonl",
        [("a", "credit_cards"), ("b", "__escalate__"), ("c", "travel"), ("d", "travel")],
    )
    rows = eval_rows(path, ["credit-cards", "travel"], ESC, None, 0)
    assert [(r.gold, r.in_scope) for r in rows[:2]] == [("credit-cards", True), (ESC, False)]
    assert eval_rows(path, ["credit-cards", "travel"], ESC, 2, 7) == eval_rows(
        path, ["credit-cards", "travel"], ESC, 2, 7
    )
    with pytest.raises(BenchError, match="is not in the table's routes"):
        eval_rows(path, ["travel"], ESC, None, 0)


def test_the_bench_mesh_takes_thresholds_and_stays_a_valid_routermesh() -> None:
    manifest = mesh_manifest({"l1": 0.9}, {"l2": {"timeoutMs": 900}})
    assert manifest["spec"]["layers"]["l1"]["threshold"] == 0.9
    assert manifest["spec"]["layers"]["l2"]["timeoutMs"] == 900
    assert manifest["spec"]["escalation"]["route"] == ESC


def test_quality_and_calibrate_commands_reuse_records(tmp_path: Path) -> None:
    train = _jsonl(tmp_path / "train.jsonl", [("x", "a"), ("y", "b"), ("z", "c")])
    out = tmp_path / "out"
    out.mkdir()
    write_records(out / "records.jsonl", _synthetic(n=300))
    args = ["--train", str(train), "--eval", str(train), "--out", str(out)]
    reuse = ["--records", str(out / "records.jsonl")]
    assert main(["bench", "quality", *args, *reuse]) == 0
    quality = json.loads((out / "quality.json").read_text())
    assert quality["n"] == 300 and quality["run"]["records_from"].endswith("records.jsonl")
    assert {"routed_accuracy", "coverage", "oos_escalated", "ece", "per_layer"} <= set(quality)
    assert (out / "quality.png").stat().st_size > 10_000
    assert main(["bench", "calibrate", *args, *reuse, "--target", "l1=0.9"]) == 0
    calibration = json.loads((out / "calibration.json").read_text())
    assert calibration["layers"]["l1"]["target"] == 0.9
    assert main(["bench", "calibrate", *args, *reuse, "--oos-share", "0.18"]) == 0
    calibration = json.loads((out / "calibration.json").read_text())
    assert calibration["oos_share"] == 0.18
    assert "routed_accuracy_at_share" in calibration["expected"]
    with pytest.raises(SystemExit):
        main(["bench", "calibrate", *args, *reuse, "--oos-share", "1.5"])
    assert "kubectl patch routermesh" in (out / "routermesh-patch.yaml").read_text()


def test_bench_commands_refuse_missing_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["bench", "quality", "--train", "nope.jsonl", "--eval", "nope.jsonl", "--out", "x"])
    assert code == 2
    assert "--train: no such file: nope.jsonl" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "calibrate", "--train", "a", "--eval", "b", "--out", "c", "--target", "l1"])


def test_report_renders_every_result_folder(tmp_path: Path) -> None:
    folder = tmp_path / "results/quality/demo-val"
    folder.mkdir(parents=True)
    records = _synthetic(n=200)
    summary = {**metrics.quality(records, ESC), "run": {"train": "t", "eval": "e", "layers": []}}
    (folder / "quality.json").write_text(json.dumps(summary))
    page = write_report(tmp_path / "results", tmp_path / "docs/benchmarks.md").read_text()
    assert "### demo-val" in page
    assert f"{summary['routed_accuracy'] * 100:.1f} %" in page
    assert "No performance results yet." in page
    perf = tmp_path / "results/perf/demo"
    perf.mkdir(parents=True)
    (perf / "perf.json").write_text(json.dumps(PERF))
    page = write_report(tmp_path / "results", tmp_path / "docs/benchmarks.md").read_text()
    assert "## Performance of the real stack: demo" in page
    assert "--disable l0" in page
    assert "| decided by l1 (60.0 %) | 150.0 / 190.0 / 199.0 | 20.0 ms |" in page
    assert "| orchestrator | 60.0 | 1.5 | 512 Mi |" in page


def _lat(p50: float, p95: float, p99: float, **extra: object) -> dict[str, object]:
    return {"n": 10, "p50": p50, "p95": p95, "p99": p99, "mean": p50, **extra}


PERF = {
    "machine": {"cpus": 2, "date": "2026-11-26"},
    "files": ["samples/homelab"],
    "disabled": ["l0"],
    "layers": [{"name": "l1", "engine": "llamacpp", "model": "m.gguf", "timeout_ms": 250}],
    "start_seconds": {"l1": 2.0, "orchestrator": 1.5, "pod_ready": 9.0},
    "uncached": {"client_ms": _lat(160, 200, 210)},
    "latency_by_layer": {
        "l1": _lat(150, 190, 199, share=0.6),
        "escalated": _lat(400, 500, 510, share=0.4),
        "cache": _lat(0.1, 0.2, 0.3, share=None),
    },
    "model_time_ms": {"l1": _lat(140, 180, 190)},
    "orchestrator_overhead_ms": _lat(5, 9, 12),
    "cache_hit": {"memory": {"client_ms": _lat(2, 3, 4), "hit_ratio": 1.0}, "redis": None},
    "throughput": {
        "uncached": [{"concurrency": c, "per_second": 3.0, "decided_by": {}} for c in (1, 8, 32)],
        "cached": [{"concurrency": c, "per_second": 300.0, "decided_by": {}} for c in (1, 8, 32)],
    },
    "replay": {"messages": 20, "unique": 12, "cache": "redis", "client_ms": _lat(3, 300, 400)},
    "rss_mib": {"l1": 190.0, "orchestrator": 60.0},
    "seed": {"l1": 20.0, "l2": 50.0, "cache": 5.0, "end_to_end_p50": 25.0, "end_to_end_p95": 75.0},
    "seed_memory_mib": {"orchestrator": 512, "l1": 512, "l2": 2048},
}


def test_a_bounded_update_moves_each_threshold_at_most_one_step() -> None:
    fits = calibrate.fit(_synthetic(), per_route=False)
    moved = calibrate.bounded(fits, {"l1": 0.5, "l2": 0.3}, 0.1)
    assert [f.threshold for f in moved] == [0.6, pytest.approx(0.4)]
    assert calibrate.bounded(fits, {}, 0.1) == fits


def _overconfident(seed: int, n: int = 800) -> list[Record]:
    """One layer that says 0.95 and is right half of the time, one that is calibrated."""
    rng = random.Random(seed)  # noqa: S311 - test data
    rows = []
    for _ in range(n):
        c = rng.random()
        rows.append(
            record(
                "a",
                "a",
                "l1",
                [
                    ("l1", "a" if rng.random() < 0.5 else "b", 0.95),
                    ("l2", "a" if rng.random() < c else "b", c),
                ],
            )
        )
    return rows


def test_platt_scaling_is_adopted_only_where_it_lowers_the_held_out_error() -> None:
    records = _overconfident(4)
    l1, l2 = calibrate.fit_calibration(records)
    assert l1.adopted and l1.ece_before is not None and l1.ece_after is not None
    assert l1.ece_before > 0.4 and l1.ece_after < 0.05
    assert not l2.adopted and (l2.slope, l2.intercept) == (1.0, 0.0)
    scaled = calibrate.calibrated_records(records, [l1, l2])
    confidences = {r.verdict("l1").confidence for r in scaled}  # type: ignore[union-attr]
    assert len(confidences) == 1 and abs(confidences.pop() - 0.5) < 0.05
    assert [r.verdict("l2") for r in scaled] == [r.verdict("l2") for r in records]


def test_calibrations_compose() -> None:
    assert calibrate.compose(None, (2.0, 1.0)) == (2.0, 1.0)
    assert calibrate.compose((2.0, 1.0), (0.5, -1.0)) == (1.0, -0.5)
    patch = calibrate.mesh_patch(
        [calibrate.LayerFit("l1", 0.9, 0.7, True, 1, 1, 1)], {"l1": (0.5, -0.25)}
    )
    assert patch == {
        "spec": {
            "layers": {"l1": {"threshold": 0.7, "calibration": {"slope": 0.5, "intercept": -0.25}}}
        }
    }


def test_the_adaptive_replay_moves_the_threshold_fed_on_one_half() -> None:
    from routermesh.runtime.contract.config import AdaptiveConfig  # noqa: PLC0415
    from routermesh_bench.adapt_replay import ReplayOptions, replay  # noqa: PLC0415

    rng = random.Random(3)  # noqa: S311 - test data
    rows = []
    for _ in range(2000):
        confidence = rng.random()
        right = rng.random() < (0.995 if confidence >= 0.6 else 0.5)
        rows.append(record("a", "a", "l0", [("l0", "a" if right else "b", confidence)]))
    options = ReplayOptions(
        start=0.95,
        settings=AdaptiveConfig(target=0.98, min_samples=50, max_step=0.05),
        share=0.5,
        batch=100,
    )
    result = replay(rows, {"l0": 0.95}, ESC, options)
    assert 0.55 <= result["end"] <= 0.7 and result["state"] == "adapted"
    steps = [t["threshold"] for t in result["trajectory"]]
    assert all(abs(a - b) <= 0.05 + 1e-9 for a, b in zip([0.95, *steps], steps, strict=False))
    before, after = result["other_half_before"], result["other_half_after"]
    assert after["coverage"] > before["coverage"] and after["routed_accuracy"] >= 0.97


def test_the_bench_reads_every_field_of_the_routers_trace() -> None:
    """The records keep what /v1/route's trace says: a new trace field must not make every
    benchmark run fail to parse the answers."""
    traced = LayerTrace(
        layer="l0",
        route="cortex",
        confidence=0.7,
        reason=None,
        cause="multi_step",
        plan=["unifi", "proxmox"],
        out_of_scope=0.1,
        head=True,
        ms=3.5,
    )
    assert set(LayerTrace.model_fields) <= set(LayerVerdict.model_fields)
    verdict = LayerVerdict.model_validate(traced.model_dump())
    assert (verdict.plan, verdict.head, verdict.ms) == (("unifi", "proxmox"), True, 3.5)


def test_a_head_run_keeps_the_head_fields_set_beside_it() -> None:
    from routermesh_bench.quality import RunOptions, _layer_spec  # noqa: PLC0415

    settings = {"l0": {"head": {"mode": "encoder"}}, "l1": {"enabled": False}}
    options = RunOptions(
        train=None, eval=Path("e.jsonl"), out=Path("o"), head_epochs=4, settings=settings
    )
    assert _layer_spec(options) == {
        "l0": {"head": {"mode": "encoder", "enabled": True, "epochs": 4}},
        "l1": {"enabled": False},
    }
    # The run's record of its --set fields is what was given, not what the run added.
    assert options.settings == {"l0": {"head": {"mode": "encoder"}}, "l1": {"enabled": False}}
