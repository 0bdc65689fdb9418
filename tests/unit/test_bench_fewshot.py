"""The few-shot protocol of `router-mesh bench quality`: tables drawn from a train file or
taken from a RouteTable YAML, absent routes, eval rows of three kinds, synthetic
multi-step rows, and the metrics that count them (no model needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from routermesh.labelled import LabelledRequest
from routermesh.operator import api
from routermesh.runtime.decision import Verdict
from routermesh_bench import metrics
from routermesh_bench.fewshot_sets import ceiling_of
from routermesh_bench.records import LayerVerdict, Record
from routermesh_bench.report import write_report
from routermesh_bench.stack import BenchError, EvalRow, eval_rows, multi_step_rows
from routermesh_bench.tables import TableError, TableSource, read_descriptions, table_manifest

REPO = Path(__file__).resolve().parents[2]
ESC = "escalate"


def _train(tmp_path: Path) -> Path:
    rows = [
        {"text": f"{route} request {i}", "route": route, "intent": route}
        for route in ("credit_cards", "travel", "banking", "small_talk")
        for i in range(30)
    ] + [{"text": "what is the meaning of this", "route": "__escalate__"}]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_few_shot_table_has_k_examples_per_route_and_the_descriptions(tmp_path: Path) -> None:
    descriptions = tmp_path / "d.json"
    descriptions.write_text(json.dumps({"credit_cards": "Cards and limits.", "travel": "Trips."}))
    source = TableSource(
        train=_train(tmp_path), few_shot=10, descriptions=read_descriptions(descriptions), seed=3
    )
    manifest, absent = table_manifest(source, "bench")
    routes = {r["name"]: r for r in manifest["spec"]["routes"]}
    assert sorted(routes) == ["banking", "credit-cards", "small-talk", "travel"]
    assert all(len(r["examples"]) == 10 for r in routes.values())
    assert routes["credit-cards"]["description"] == "Cards and limits."
    assert routes["banking"]["description"] == ""
    assert "examplesFrom" not in manifest["spec"] and absent == []
    api.RouteTable.model_validate(manifest)
    # Seeded: the same draw again, another seed another draw.
    assert table_manifest(source, "bench")[0] == manifest
    other = table_manifest(TableSource(train=source.train, few_shot=10, seed=4), "bench")[0]
    assert other["spec"]["routes"][0]["examples"] != manifest["spec"]["routes"][0]["examples"]


def test_absent_routes_leave_the_table_and_their_rows_become_out_of_scope(
    tmp_path: Path,
) -> None:
    source = TableSource(train=_train(tmp_path), few_shot=5, absent=1, seed=0)
    manifest, absent = table_manifest(source, "bench")
    assert len(absent) == 1 and absent[0] not in {r["name"] for r in manifest["spec"]["routes"]}
    eval_path = tmp_path / "eval.jsonl"
    eval_path.write_text(
        "".join(
            json.dumps({"text": f"{label} x", "route": label}) + "\n"
            for label in ("credit_cards", "travel", "banking", "small_talk", "__escalate__")
        )
    )
    routes = [r["name"] for r in manifest["spec"]["routes"]]
    rows = eval_rows(eval_path, routes, ESC, None, 0, absent=absent)
    kinds = {row.text.split()[0].replace("_", "-"): row.kind for row in rows}
    assert kinds[absent[0]] == "out_of_scope"
    assert sum(k == "out_of_scope" for k in kinds.values()) == 2  # the absent one, __escalate__
    assert all(row.gold == ESC for row in rows if row.kind != "in_scope")
    with pytest.raises(TableError, match="fewer than two routes"):
        table_manifest(TableSource(train=source.train, few_shot=5, absent=3), "bench")


def test_a_routetable_yaml_is_taken_as_written() -> None:
    source = TableSource(routetable=REPO / "samples/homelab/routetable.yaml")
    manifest, _ = table_manifest(source, "bench")
    written = yaml.safe_load((REPO / "samples/homelab/routetable.yaml").read_text())
    assert manifest["metadata"] == {"name": "bench"}
    assert manifest["spec"] == written["spec"]


def test_eval_rows_carry_their_kind_and_plan(tmp_path: Path) -> None:
    path = tmp_path / "eval.jsonl"
    path.write_text(
        json.dumps({"text": "a", "route": "unifi", "kind": "in_scope"})
        + "\n"
        + json.dumps({"text": "b", "route": "__escalate__", "kind": "out_of_scope"})
        + "\n"
        + json.dumps(
            {"text": "c", "route": "__escalate__", "kind": "multi_step", "routes": ["unifi", "x"]}
        )
        + "\n"
    )
    rows = eval_rows(path, ["unifi"], ESC, None, 0)
    assert rows == [
        EvalRow("a", "unifi", True, "in_scope", ()),
        EvalRow("b", ESC, False, "out_of_scope", ()),
        EvalRow("c", ESC, False, "multi_step", ("unifi", "x")),
    ]
    path.write_text(json.dumps({"text": "a", "route": "unifi", "kind": "sideways"}) + "\n")
    with pytest.raises(BenchError, match=r"eval\.jsonl:1: kind: Input should be 'in_scope'"):
        eval_rows(path, ["unifi"], ESC, None, 0)


def test_synthetic_multi_step_rows_join_two_routes() -> None:
    pool = [EvalRow(f"ask {r} {i}", r, True) for r in ("a", "b", "c") for i in range(5)]
    made = multi_step_rows(pool, 20, ESC, seed=1)
    assert len(made) == 20
    for row in made:
        first, second = row.plan
        assert first != second and row.kind == "multi_step" and row.gold == ESC
        assert row.text.startswith(f"ask {first} ") and f"ask {second} " in row.text
    assert multi_step_rows(pool, 20, ESC, seed=1) == made
    assert multi_step_rows([EvalRow("x", "a", True)] * 3, 5, ESC, seed=0) == []


def _record(
    kind: str, gold: str, route: str, reason: str | None, plan: tuple[str, ...] = ()
) -> Record:
    return Record(
        text=f"{kind}:{gold}->{route}",
        gold=gold,
        in_scope=kind == "in_scope",
        kind=kind,
        gold_plan=plan if kind == "multi_step" else (),
        route=route,
        layer="l0" if route != ESC else "escalated",
        confidence=0.5,
        escalation_reason=reason,
        plan=plan if reason == "multi_step" else (),
        trace=(LayerVerdict(layer="l0", route=route, confidence=0.5),),
    )


def test_quality_counts_multi_step_rows_and_escalation_reasons() -> None:
    records = [
        _record("in_scope", "a", "a", None),
        _record("in_scope", "b", ESC, "out_of_scope"),
        _record("out_of_scope", ESC, ESC, "out_of_scope"),
        _record("out_of_scope", ESC, "a", None),
        _record("multi_step", ESC, ESC, "multi_step", ("a", "b")),
        _record("multi_step", ESC, ESC, "low_confidence", ("a", "b")),
        _record("multi_step", ESC, "b", None, ("a", "b")),
    ]
    q = metrics.quality(records, ESC)
    # Routed locally: rows 1, 4, 7; right: row 1 only (an out-of-scope or multi-step row
    # routed locally is a mistake).
    assert q["routed_accuracy"] == pytest.approx(1 / 3, abs=1e-6)
    assert q["coverage"] == 0.5
    assert q["oos_escalated"] == 0.5
    assert q["n_multi_step"] == 3
    assert q["multi_step_escalated"] == pytest.approx(2 / 3, abs=1e-6)
    assert q["multi_step_plans"] == 1.0
    assert q["in_scope_accuracy"] == 1.0
    assert q["escalation_reasons"] == {
        "in_scope": {"out_of_scope": 1},
        "multi_step": {"low_confidence": 1, "multi_step": 1},
        "out_of_scope": {"out_of_scope": 1},
    }


def test_the_report_puts_small_tables_first_with_their_commands(tmp_path: Path) -> None:
    records = [
        _record("in_scope", "a", "a", None),
        _record("out_of_scope", ESC, ESC, "out_of_scope"),
        _record("multi_step", ESC, ESC, "multi_step", ("a", "b")),
        _record("multi_step", ESC, "b", None, ("a", "b")),
    ]
    run = {
        "routetable": "samples/homelab/routetable.yaml",
        "eval": "bench/data/homelab-dev.jsonl",
        "synthetic_multi_step": 100,
        "settings": {
            "l0": {"multiStep": {"enabled": False}, "head": {"genericRequests": ["hwu64"]}}
        },
        "disabled": [],
    }
    folder = tmp_path / "results/fewshot/homelab-dev"
    folder.mkdir(parents=True)
    (folder / "quality.json").write_text(json.dumps({**metrics.quality(records, ESC), "run": run}))
    page = write_report(tmp_path / "results", tmp_path / "docs/benchmarks.md").read_text()
    assert page.index("## Small hand-written tables") < page.index("## Routing quality")
    assert "| homelab-dev | 1 / 1 / 2 | 50.0 % | 100.0 % | 100.0 % | 50.0 % | 100.0 % |" in page
    assert (
        "`router-mesh bench quality --routetable samples/homelab/routetable.yaml --eval "
        f"bench/data/homelab-dev.jsonl --out {folder.as_posix()} --multi 100 "
        "--set l0.multiStep.enabled=false --set 'l0.head.genericRequests=[\"hwu64\"]'`"
    ) in page


def test_the_oracle_ceiling_counts_in_scope_rows_under_the_cut_with_their_route_right() -> None:
    outside = [0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.3]
    rows = [LabelledRequest(text=f"o{i}", route="__escalate__") for i in range(10)]
    verdicts = [Verdict(route="a", confidence=0.5, out_of_scope=p) for p in outside]
    # At 90 % escalated one out-of-scope row may pass: the cut is the second lowest, 0.55.
    inside = [
        ("a", "a", 0.5),  # kept, right
        ("a", "b", 0.2),  # kept, wrong route
        ("b", "b", 0.54),  # kept, right
        ("b", "b", 0.6),  # above the cut
    ]
    rows += [LabelledRequest(text=f"i{i}", route=gold) for i, (gold, _, _) in enumerate(inside)]
    verdicts += [Verdict(route=route, confidence=0.5, out_of_scope=p) for _, route, p in inside]
    assert ceiling_of(verdicts, rows, 0.9) == "ceiling at 90% out of scope escalated: 50.0 %"
    assert ceiling_of(verdicts[10:], rows[10:], 0.9) == "no out-of-scope rows"
