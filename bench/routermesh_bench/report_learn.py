"""The feedback-loop section of docs/benchmarks.md, from ``<results>/learn/*/learn.json``
(``router-mesh bench learn``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} %"


def learn_section(results: Path, docs: Path) -> list[str]:
    runs = sorted((results / "learn").glob("*/learn.json"))
    if not runs:
        return []
    lines = [
        "## The feedback loop: escalations reported back",
        "",
        "`router-mesh bench learn`: the table's L0 in-process; after each batch of the "
        "stream, every in-scope request L0 escalated is reported with its route (as an agent "
        "reports the server the reasoning endpoint chose), every out-of-scope one with the "
        "escalation route (a request it handled itself), and L0 refreshes, as the "
        "orchestrator does every 30 s. Measured on rows the stream does not have.",
        "",
    ]
    for path in runs:
        run: dict[str, Any] = json.loads(path.read_text())
        lines += [
            f"### {path.parent.name}: {run['mesh']}",
            "",
            f"Stream {run['stream']} ({run['stream_rows']} requests, batches of "
            f"{run['batch']}, seed {run['seed']}); measured {run['eval']} "
            f"({run['eval_rows']} rows)"
            + ("" if run.get("report_out_of_scope", True) else "; in-scope reports alone")
            + (
                "; reports from an agent's tool calls through /mcp (in-scope requests whose "
                "route was offered)"
                if run.get("source") == "tool-calls"
                else ""
            )
            + (
                f"; the {'agent' if run.get('source') == 'tool-calls' else 'endpoint'} wrong "
                f"on {run['error_rate']:.0%} of its choices "
                f"({run['wrong']} reports)."
                if run.get("error_rate")
                else "."
            ),
            "",
            "| requests streamed | reported | routed accuracy | in-scope coverage "
            "| out-of-scope escalated | multi-step escalated |",
            "|---|---|---|---|---|---|",
        ]
        for step in run["steps"]:
            f = step["figures"]
            lines.append(
                f"| {step['streamed']} | {step['reported']} | {_pct(f['routed_accuracy'])} "
                f"| {_pct(f['coverage'])} | {_pct(f['out_of_scope_escalated'])} "
                f"| {_pct(f['multi_step_escalated'])} |"
            )
        lines.append("")
        image = path.parent / "learn.png"
        if image.is_file():
            lines += [f"![{path.parent.name}]({os.path.relpath(image, docs)})", ""]
    return lines
