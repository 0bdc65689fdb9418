"""``router-mesh bench learn``: the feedback loop replayed with the router's own L0."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from routermesh.cli import main
from routermesh.labelled import LabelledRequest
from routermesh_bench.learn import LearnError, LearnOptions, LearnRun, learn_curve, split_rows
from routermesh_bench.report import write_report

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / ".cache/models"
HOMELAB = REPO / "samples/homelab"


def _jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_the_split_keeps_each_kind_on_both_sides_and_is_seeded() -> None:
    rows = [
        *(LabelledRequest(text=f"in {i}", route="unifi", kind="in_scope") for i in range(6)),
        *(
            LabelledRequest(text=f"out {i}", route="__escalate__", kind="out_of_scope")
            for i in range(4)
        ),
        *(
            LabelledRequest(
                text=f"multi {i}", route="__escalate__", kind="multi_step", routes=("a", "b")
            )
            for i in range(2)
        ),
    ]
    stream, measured = split_rows(rows, seed=3)
    assert [
        sum(r.kind == k for r in stream) for k in ("in_scope", "out_of_scope", "multi_step")
    ] == [
        3,
        2,
        1,
    ]
    assert {r.text for r in stream}.isdisjoint({r.text for r in measured})
    assert len(measured) == 6
    again, _ = split_rows(rows, seed=3)
    assert [r.text for r in again] == [r.text for r in stream]


def test_a_reported_escalation_is_learned_and_routes_its_near_copy(tmp_path: Path) -> None:
    """L0 escalates "turn on band steering for HomeNet" on samples/homelab (its words are in
    no example). Once the request comes back as feedback with its route, a near copy of it
    routes to unifi; what was routed is not reported, and what was out of scope is
    reported by default (off in the first run)."""
    stream = _jsonl(
        tmp_path / "stream.jsonl",
        [
            {"text": "turn on band steering for HomeNet", "route": "unifi"},
            {"text": "take a snapshot of vm 104 before I upgrade it", "route": "proxmox"},
            {"text": "what's the weather tomorrow", "route": "__escalate__"},
        ],
    )
    measured = _jsonl(
        tmp_path / "eval.jsonl",
        [
            {"text": "Turn on band steering for HomeNet.", "route": "unifi"},
            {"text": "will it rain in denver tomorrow", "route": "__escalate__"},
            # the stream's own text is not measured (a learned copy would measure nothing)
            {"text": "Take a snapshot of VM 104 before  I upgrade it", "route": "proxmox"},
        ],
    )

    def replay(**changes: Any) -> LearnRun:
        options = {"files": [HOMELAB], "eval": measured, "stream": stream, "batch": 2}
        return learn_curve(
            LearnOptions(**{**options, "models_dir": MODELS, "offline": True, **changes})
        )

    run = replay(report_out_of_scope=False)
    assert (run.eval_rows, run.stream_rows, run.dropped) == (2, 3, 1)
    # the stream in its order, two requests per refresh, the last batch short
    before, after, last = run.steps
    assert (before.streamed, before.reported, before.learned) == (0, 0, 0)
    assert (before.figures.coverage, before.figures.out_of_scope_escalated) == (0.0, 100.0)
    assert (after.streamed, after.reported, after.learned) == (2, 1, 1)
    assert after.figures.coverage == 100.0
    assert after.figures.routed_accuracy == 100.0
    assert after.figures.out_of_scope_escalated == 100.0
    assert (last.streamed, last.reported, last.learned) == (3, 1, 1)
    # by default the escalated out-of-scope request comes back with the escalation route
    with_out_of_scope = replay()
    assert [(s.reported, s.learned) for s in with_out_of_scope.steps] == [(0, 0), (1, 1), (2, 2)]
    # an agent's tool calls through /mcp: the in-scope request's route was offered and is
    # reported; nobody calls a tool for the weather, so it is not
    from_tools = replay(source="tool-calls")
    assert from_tools.source == "tool-calls"
    assert [(s.reported, s.learned) for s in from_tools.steps] == [(0, 0), (1, 1), (1, 1)]
    assert from_tools.steps[-1].figures.coverage == 100.0
    # An endpoint wrong every time: band steering comes back as grafana (L0's runner-up),
    # and its near copy is routed there.
    wrong = replay(error_rate=1.0)
    assert wrong.wrong == 2 and wrong.error_rate == 1.0
    assert (wrong.steps[-1].figures.coverage, wrong.steps[-1].figures.routed_accuracy) == (
        100.0,
        0.0,
    )
    with pytest.raises(LearnError, match="--error-rate must be between 0 and 1"):
        learn_curve(LearnOptions(files=[HOMELAB], eval=measured, error_rate=1.5))


def test_the_command_writes_the_curve_and_its_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        {"text": "turn on band steering for HomeNet", "route": "unifi"},
        {"text": "enable band steering on HomeNet", "route": "unifi"},
        {"text": "what's the weather tomorrow", "route": "__escalate__"},
        {"text": "tell me a joke", "route": "__escalate__"},
    ]
    measured = _jsonl(tmp_path / "eval.jsonl", rows)
    out = tmp_path / "learn/homelab"
    args = ["bench", "learn", "-f", str(HOMELAB), "--eval", str(measured), "--offline"]
    code = main([*args, "--models-dir", str(MODELS), "--batch", "1", "--out", str(out)])
    assert code == 0
    result = json.loads((out / "learn.json").read_text())
    # one in-scope and one out-of-scope row streamed, one request per refresh
    assert [step["streamed"] for step in result["steps"]] == [0, 1, 2]
    assert (result["stream_rows"], result["eval_rows"]) == (2, 2)
    assert (out / "learn.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "after     2 requests" in capsys.readouterr().out
    page = write_report(tmp_path, tmp_path / "docs/benchmarks.md").read_text()
    assert "## The feedback loop: escalations reported back" in page
    assert "| 0 | 0 |" in page  # the first row: nothing streamed, nothing reported
    assert "![homelab](../learn/homelab/learn.png)" in page


def test_bad_input_gets_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "learn", "-f", str(HOMELAB), "--eval", "nope.jsonl"]) == 2
    assert "bench learn: no such file or folder: nope.jsonl" in capsys.readouterr().err
    measured = _jsonl(tmp_path / "eval.jsonl", [{"text": "hello", "route": "unifi"}])
    with pytest.raises(LearnError, match="--batch must be at least 1"):
        learn_curve(LearnOptions(files=[HOMELAB], eval=measured, batch=0, models_dir=MODELS))
    # one row: its half is empty, nothing to stream
    code = main(["bench", "learn", "-f", str(HOMELAB), "--eval", str(measured), "--offline"])
    assert code == 1
    assert "nothing to stream" in capsys.readouterr().err
    # the stream has every measured row: nothing would be measured
    code = main(
        ["bench", "learn", "-f", str(HOMELAB), "--eval", str(measured), "--stream", str(measured)]
    )
    assert code == 1
    assert "nothing left to measure: all 1 rows" in capsys.readouterr().err
    code = main(["bench", "learn", "-f", "nope/", "--eval", str(measured)])
    assert code == 2
    assert "bench learn: no such file or folder: nope/" in capsys.readouterr().err


def test_a_route_the_mesh_does_not_have_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A label the table does not know would be reported and silently never learned."""
    stream = _jsonl(tmp_path / "stream.jsonl", [{"text": "restart the printer", "route": "cups"}])
    measured = _jsonl(tmp_path / "eval.jsonl", [{"text": "hello there", "route": "unifi"}])
    args = ["bench", "learn", "-f", str(HOMELAB), "--eval", str(measured), "--stream", str(stream)]
    code = main([*args, "--models-dir", str(MODELS), "--offline", "--out", str(tmp_path / "o")])
    assert code == 1
    err = capsys.readouterr().err
    assert "route(s) cups are not in the mesh's routes (elastic, grafana, proxmox, unifi)" in err
    assert not (tmp_path / "o").exists()
