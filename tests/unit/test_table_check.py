"""``router-mesh check-table``: L0's view of a hand-written table, without a pod."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from routermesh.cli import main
from routermesh.labelled import LabelledError, read_labelled
from routermesh.runtime.calibration import Calibration
from routermesh.runtime.example_index import ExampleIndex
from routermesh.table_check import CheckOptions, TableCheck, check_table
from routermesh.table_check_text import report_text

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / ".cache/models"
HOMELAB = REPO / "samples/homelab"
DEV = REPO / "bench/data/homelab-dev.jsonl"


@pytest.fixture(scope="module")
def homelab_check() -> TableCheck:
    return check_table(
        CheckOptions(files=[HOMELAB], models_dir=MODELS, offline=True, eval=DEV, thresholds=(0.3,))
    )


def test_examples_that_land_on_another_route_are_named(homelab_check: TableCheck) -> None:
    checks = {c.route: c for c in homelab_check.route_checks}
    assert list(checks) == ["unifi", "proxmox", "grafana", "elastic"]  # no escalation row
    assert [(c.examples, c.own_route) for c in checks.values()] == [
        (10, 9),
        (10, 10),
        (10, 8),
        (10, 10),
    ]
    (miss,) = checks["unifi"].elsewhere
    assert (miss.text, miss.chosen) == (
        "show me the top bandwidth users on the network today",
        "grafana",
    )
    assert miss.nearest == "graph the network throughput of the router over the last week"
    assert homelab_check.own_route == 37
    assert homelab_check.description_phrases == 32


def test_each_route_says_from_what_similarity_it_takes_a_message(
    homelab_check: TableCheck,
) -> None:
    """The table's midpoint, moved per route by how alike its examples are: grafana's
    spread over dashboards, alerts and panels, proxmox's are the most alike."""
    assert homelab_check.half_in_scope_similarity == pytest.approx(0.4545, abs=1e-4)
    starts = {c.route: c.in_scope_from for c in homelab_check.route_checks}
    assert starts == pytest.approx(
        {"unifi": 0.4644, "proxmox": 0.4674, "grafana": 0.4361, "elastic": 0.4501}, abs=1e-4
    )
    text = report_text(homelab_check)
    assert "route    examples  own route  in scope from  elsewhere" in text
    assert "grafana        10          8           0.44  1 -> elastic, 1 -> proxmox" in text


def test_labelled_requests_are_decided_as_the_router_decides(homelab_check: TableCheck) -> None:
    """The same four figures `router-mesh bench quality` measured through the running
    router on this table and file (docs/benchmarks.md: 100 / 65.0 / 100 / 100 %)."""
    report = homelab_check.evaluation
    assert report is not None
    assert (report.in_scope, report.out_of_scope, report.multi_step) == (60, 20, 20)
    figures = {f.threshold: f for f in report.figures}
    assert list(figures) == [0.3, 0.5]  # the asked threshold and the mesh's own
    at_mesh = figures[0.5]
    assert (
        at_mesh.routed_accuracy,
        at_mesh.coverage,
        at_mesh.out_of_scope_escalated,
        at_mesh.multi_step_escalated,
    ) == (100.0, 65.0, 100.0, 100.0)
    assert (figures[0.3].routed_accuracy, figures[0.3].coverage) == (95.7, 73.3)
    rows = {r.text: r for r in report.rows}
    weather = rows["whats the weather like in denver this weekend"]
    assert (weather.decided, weather.reason) == ("cortex", "out_of_scope")
    split = rows["make sure the aps are all online, then spin up a test vm from template 9000"]
    assert (split.decided, split.reason) == ("cortex", "multi_step")


def test_the_text_report_lists_misses_with_their_words(homelab_check: TableCheck) -> None:
    text = report_text(homelab_check, limit=2)
    assert "Examples routed to their own route when left out: 37 of 40" in text
    assert "0.50    *          100.0 %             65.0 %" in text
    assert "In-scope requests escalated (examples in their words raise coverage), at 0.50:" in text
    assert "... 19 more (--json shows every one)" in text


def test_leave_one_out_judges_only_the_examples() -> None:
    raw = np.array([[1, 0], [0.28, 0.96], [0, 1], [-0.6, 0.8], [0.2, 0.98]], dtype=np.float32)
    index = ExampleIndex(
        routes=("a", "b"),
        vectors=raw / np.linalg.norm(raw, axis=1, keepdims=True),
        labels=np.array([0, 0, 1, 1, 1]),
        k=1,
        calibration=Calibration(),
        loo_accuracy=None,
        requests=np.array([True, True, True, True, False]),  # the last: a description phrase
    )
    judged = index.leave_one_out()
    assert [row for row, _ in judged] == [0, 1, 2, 3]
    # Row 1 is a near copy of route b's phrase (0.997): left out, it lands on b.
    assert [index.routes[f.route] for _, f in judged] == ["a", "b", "b", "b"]


def test_labelled_rows_default_their_kind_and_refuse_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    path.write_text(
        "\n".join(
            json.dumps(row)
            for row in (
                {"text": "show me connected clients", "route": "unifi"},
                {"text": "weather tomorrow", "route": "__escalate__"},
                {
                    "text": "a and b",
                    "route": "__escalate__",
                    "kind": "multi_step",
                    "routes": ["x_y"],
                },
            )
        )
        + "\n\n"
    )
    rows = read_labelled(path)
    assert [(r.kind, r.route_name, r.plan) for r in rows] == [
        ("in_scope", "unifi", ()),
        ("out_of_scope", "", ()),
        ("multi_step", "", ("x-y",)),
    ]
    for line, message in (
        ("{not json", "requests.jsonl:1: invalid JSON"),
        ('{"text": "a"}', "requests.jsonl:1: route: Field required"),
        ('{"text": "", "route": "unifi"}', "requests.jsonl:1: text: String should have at least"),
        ('{"text": "a", "route": "__escalate__", "kind": "in_scope"}', "needs a route"),
    ):
        path.write_text(line + "\n")
        with pytest.raises(LabelledError, match=message):
            read_labelled(path)
    path.write_text("\n")
    with pytest.raises(LabelledError, match="no requests"):
        read_labelled(path)


def test_the_command_reports_bad_input_with_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-table", "-f", str(HOMELAB), "--eval", str(tmp_path / "none.jsonl")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text(json.dumps({"text": "hello", "route": "jira"}) + "\n")
    args = ["check-table", "-f", str(HOMELAB), "--models-dir", str(MODELS), "--offline"]
    assert main([*args, "--eval", str(unknown)]) == 1
    assert "route(s) jira are not in the mesh's routes (elastic, grafana, proxmox, unifi)" in (
        capsys.readouterr().err
    )
    assert main([*args, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["mesh"] == "default/homelab"
    assert printed["evaluation"] is None
