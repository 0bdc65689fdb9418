"""``router-mesh bench learn``: how L0's figures move as escalations come back as feedback.

A hand-written table of ten examples per route escalates the requests its words do not
cover. The agent sends those to the reasoning endpoint, which picks a server; when the
agent reports that choice (``POST /v1/feedback {"message", "expected_route"}``), L0
learns the request as an example at its next refresh. This replays that loop in-process
with the router's own L0 (the same encoder, index, calibration and ``learn()`` the
orchestrator runs every 30 s):

1. the table's L0 is measured on ``--eval`` (the four figures at the mesh's threshold);
2. the next ``--batch`` requests of ``--stream`` (in the file's order) are routed; every
   in-scope one that L0 escalates is reported with its labelled route, and every
   out-of-scope one with the escalation route, as the agent reports what the reasoning
   endpoint did (it is taken to be right: these figures are an upper bound for an
   endpoint that errs). Nothing else is reported (a multi-step request has no single
   server, and a misroute nobody notices is not reported); ``--no-report-out-of-scope``
   reports the in-scope ones alone. L0 learns what the router learns: an out-of-scope
   request escalated as multi-step is reported, but a confirmed multi-step escalation
   is an outcome, not an example;
3. L0 learns, and the loop goes on from 1 until the stream is spent.

``--from tool-calls`` replays the other source of reports instead: an agent on the
router's ``/mcp`` with ``api.learnFromToolCalls``. There an escalated request offers the
tools of the routes L0 ranked highest (three), and what the agent does with them is the
report: an in-scope request escalated without a plan whose route is among the offered
ones is reported with it (the agent called that server's tools); any other (its route
not offered, out of scope, a multi-step escalation) is not (no tool called, or several
servers' tools, which teach nothing). ``--error-rate`` then makes the agent call the
best other offered route's tools instead.

``--error-rate P`` makes the reasoning endpoint wrong on a share ``P`` of its choices,
spread evenly over the reports (a seeded draw leaves a stream of a few dozen reports
with none or twice as many), and the way it would be wrong: an in-scope request comes
back with the best route L0 ranked that is not the right one (a route near it), an
out-of-scope one with L0's best server (one that does not handle it).

Without ``--stream`` the ``--eval`` file is split seeded in two: one half is the traffic
(shuffled), the other is measured. Rows of the measured file whose text is also in the
stream are dropped from it (a learned copy of a measured request would measure nothing).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from routermesh.labelled import LabelledRequest, read_labelled
from routermesh.runtime.cascade import layer_decides, layer_outcome
from routermesh.runtime.contract.config import LayerConfig, RouterConfig
from routermesh.runtime.embedding import MAX_LEARNED, EmbeddingLayer
from routermesh.runtime.feedback import FeedbackRecord
from routermesh.runtime.mcp_gateway import MAX_CANDIDATES
from routermesh.table_check import CheckOptions, Figures, evaluate, known_routes, l0_config


class LearnError(ValueError):
    pass


@dataclass(frozen=True)
class LearnOptions:
    files: list[Path]
    eval: Path
    stream: Path | None = None
    namespace: str = "default"
    mesh: str | None = None
    batch: int = 20
    seed: int = 0
    models_dir: Path = Path(".cache/models")
    offline: bool = False
    report_out_of_scope: bool = True
    """Report escalated out-of-scope requests with the escalation route too (the router
    learns them as examples of that route)."""
    error_rate: float = 0.0
    """Share of the reports the reasoning endpoint gets wrong (spread evenly)."""
    source: ReportSource = "endpoint"
    """Who reports: the reasoning endpoint (every escalation) or an agent's tool calls
    through /mcp (escalations whose route was offered)."""


ReportSource = Literal["endpoint", "tool-calls"]


class LearnStep(BaseModel):
    streamed: int
    """Requests of the stream routed so far."""
    reported: int
    """Of those, escalated requests reported (with their route, or the escalation route)."""
    learned: int
    """Examples L0 holds from the reports."""
    figures: Figures


class LearnRun(BaseModel):
    mesh: str
    eval: str
    stream: str
    eval_rows: int
    stream_rows: int
    dropped: int
    """Measured rows left out because the stream has the same text."""
    batch: int
    seed: int
    report_out_of_scope: bool
    source: ReportSource = "endpoint"
    error_rate: float = 0.0
    wrong: int = 0
    """Reports that named a wrong route (``error_rate``)."""
    steps: list[LearnStep]


def split_rows(
    rows: Sequence[LabelledRequest], seed: int
) -> tuple[list[LabelledRequest], list[LabelledRequest]]:
    """A seeded half of ``rows`` as the stream, the rest to measure; each kind split on
    its own so both halves keep the file's mix."""
    rng = random.Random(seed)  # noqa: S311 - sampling, not secrets
    stream: list[LabelledRequest] = []
    measured: list[LabelledRequest] = []
    for kind in ("in_scope", "out_of_scope", "multi_step"):
        of_kind = [row for row in rows if row.kind == kind]
        rng.shuffle(of_kind)
        half = len(of_kind) // 2
        stream += of_kind[:half]
        measured += of_kind[half:]
    rng.shuffle(stream)
    return stream, measured


def learn_curve(options: LearnOptions) -> LearnRun:
    if options.batch < 1:
        raise LearnError(f"--batch must be at least 1, got {options.batch}")
    if not 0.0 <= options.error_rate <= 1.0:
        raise LearnError(f"--error-rate must be between 0 and 1, got {options.error_rate}")
    rows = read_labelled(options.eval)
    if options.stream is None:
        stream, measured = split_rows(rows, options.seed)
    else:
        stream = read_labelled(options.stream)
        measured = rows
    streamed_texts = {_flat(row.text) for row in stream}
    kept = [row for row in measured if _flat(row.text) not in streamed_texts]
    if not stream:
        raise LearnError(
            f"nothing to stream: {options.stream or options.eval} gives no request "
            "(without --stream, --eval needs at least two rows of a kind to split)"
        )
    if not kept:
        raise LearnError(
            f"nothing left to measure: all {len(measured)} rows of {options.eval} are also in "
            "the stream"
        )
    config, layer_config = l0_config(
        CheckOptions(
            files=options.files,
            namespace=options.namespace,
            mesh=options.mesh,
            models_dir=options.models_dir,
            offline=options.offline,
        )
    )
    known_routes(stream, config, options.stream or options.eval)
    known_routes(kept, config, options.eval)
    steps, wrong = asyncio.run(_replay(options, config, layer_config, stream, kept))
    return LearnRun(
        mesh=f"{config.mesh.namespace}/{config.mesh.name}",
        eval=str(options.eval),
        stream=str(options.stream or f"{options.eval} (seeded half)"),
        eval_rows=len(kept),
        stream_rows=len(stream),
        dropped=len(measured) - len(kept),
        batch=options.batch,
        seed=options.seed,
        report_out_of_scope=options.report_out_of_scope,
        source=options.source,
        error_rate=options.error_rate,
        wrong=wrong,
        steps=steps,
    )


async def _replay(
    options: LearnOptions,
    config: RouterConfig,
    layer_config: LayerConfig,
    stream: list[LabelledRequest],
    measured: list[LabelledRequest],
) -> tuple[list[LearnStep], int]:
    escalation = config.escalation.route
    reports: list[FeedbackRecord] = []
    wrong = 0

    async def feedback(limit: int) -> list[tuple[str, str]]:
        # newest first, as the store answers, and only what the router learns
        newest = list(reversed(reports))[:limit]
        return [(r.message, r.expected_route) for r in newest if r.learnable(escalation)]

    layer = EmbeddingLayer(layer_config, config, options.models_dir, feedback=feedback)
    await layer.prepare()
    if layer.index is None:
        raise LearnError(f"L0 could not be built: {layer.error}")
    steps: list[LearnStep] = []
    done = 0
    while True:
        report = await evaluate(
            options.eval,
            (),
            config=config,
            layer_config=layer_config,
            layer=layer,
            labelled=measured,
            head=layer.index.artifact is not None,
        )
        steps.append(
            LearnStep(
                streamed=done,
                reported=len(reports),
                learned=len(layer.learned),
                figures=report.figures[0],  # none asked: the mesh's threshold alone
            )
        )
        if done >= len(stream):
            return steps, wrong
        for row in stream[done : done + options.batch]:
            if row.kind == "multi_step" or (
                row.kind == "out_of_scope" and not options.report_out_of_scope
            ):
                continue
            verdict = await layer.classify(row.text)
            decision = layer_decides(config, layer_outcome(layer.name, verdict, layer_config, 0.0))
            if decision is None or decision[0] == escalation:
                right = row.route_name if row.kind == "in_scope" else escalation
                ranked = [c.route for c in verdict.candidates]
                if options.source == "tool-calls":
                    ranked = ranked[:MAX_CANDIDATES]
                    if row.kind != "in_scope" or verdict.plan or right not in ranked:
                        continue  # no tool of the request's route offered, or no one route
                route = right
                made = len(reports)
                if int((made + 1) * options.error_rate) > int(made * options.error_rate):
                    route = _mistaken(right, ranked, escalation)
                    wrong += route != right
                reports.append(
                    FeedbackRecord(
                        message=row.text,
                        expected_route=route,
                        decided_route=escalation,
                        plan=verdict.plan,
                        config_hash="bench",
                        route_table_version="bench",
                        source="tool_call" if options.source == "tool-calls" else "answer",
                    )
                )
        done = min(done + options.batch, len(stream))
        await layer.learn()
        learned = {text for text, _ in layer.learned}
        # the layer reads the newest MAX_LEARNED reports, as from the store
        newest = await feedback(MAX_LEARNED)
        missing = [text for text, _ in newest if " ".join(text.split()) not in learned]
        if missing:
            # learn() keeps the old index on any failure (and logs why): say so here rather
            # than measure a layer that did not learn.
            raise LearnError(f"L0 did not learn {len(missing)} reported request(s): {missing[0]!r}")


def _mistaken(right: str, ranked: Sequence[str], escalation: str) -> str:
    """What an endpoint that errs would choose instead of ``right``: the best route L0
    ranked that is another server (``right`` when there is none)."""
    return next((r for r in ranked if r not in (right, escalation)), right)


def _flat(text: str) -> str:
    return " ".join(text.lower().split())
