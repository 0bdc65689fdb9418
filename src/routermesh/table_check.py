"""``router-mesh check-table``: what L0 makes of a hand-written RouteTable, before it is
deployed.

A table of a description and ten examples per route routes the requests its examples
and descriptions cover and escalates the rest; what it covers depends on the words the
examples use. This check runs the mesh's L0 in-process (the same encoder, index and
calibration the orchestrator builds; the packaged encoder when the configured one cannot
be fetched), with no pod and no model servers, and reports:

- each route's examples judged as the calibration judges them (left out one at a time):
  an example that lands on another route is one the two routes' words do not tell apart;
- with ``--eval``, a file of labelled requests (:mod:`routermesh.labelled`): the four
  figures the benchmarks report (routed accuracy, in-scope coverage, out-of-scope and
  multi-step requests escalated) at several thresholds, decided by the cascade's own
  rule with L0 as the only layer, and the requests it escalated or misrouted.

Tools that routes' MCP servers list are discovered by the running router and are not
part of this check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from routermesh.labelled import LabelledRequest, read_labelled
from routermesh.local import LocalOptions, ensure_models, render
from routermesh.runtime.cascade import layer_decides, layer_outcome
from routermesh.runtime.contract.config import LayerConfig, RouterConfig
from routermesh.runtime.embedding import EmbeddingLayer
from routermesh.runtime.example_index import ExampleIndex, route_midpoints


class CheckError(Exception):
    """The check cannot run (no L0 in the mesh, an encoder that does not load, bad rows)."""


@dataclass(frozen=True)
class CheckOptions:
    files: list[Path]
    namespace: str = "default"
    mesh: str | None = None
    models_dir: Path = Path(".cache/models")
    offline: bool = False
    eval: Path | None = None
    thresholds: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7)


class Misrouted(BaseModel):
    """An example L0 sends to another route when it is left out of the index."""

    text: str
    route: str
    chosen: str
    nearest: str
    """The chosen route's evidence nearest to the example."""
    similarity: float


class RouteCheck(BaseModel):
    route: str
    examples: int
    own_route: int
    """Examples routed back to this route when left out."""
    elsewhere: list[Misrouted]
    in_scope_from: float | None = None
    """The best similarity to the route's evidence from which L0 takes a message as in
    scope (no words of the route's own): higher when the route's examples are alike."""


class Figures(BaseModel):
    """The benchmarks' four figures for one threshold (None: no row of that kind)."""

    threshold: float
    routed: int
    routed_accuracy: float | None
    coverage: float | None
    out_of_scope_escalated: float | None
    multi_step_escalated: float | None


class RowResult(BaseModel):
    text: str
    kind: str
    expected: str
    """The route an in-scope request belongs to; the escalation route otherwise."""
    route: str
    """L0's route for it (the escalation route for a multi-step split or out of scope)."""
    confidence: float
    decided: str
    """What the cascade does at the mesh's threshold with L0 alone."""
    reason: str | None


class EvalReport(BaseModel):
    path: str
    in_scope: int
    out_of_scope: int
    multi_step: int
    figures: list[Figures]
    rows: list[RowResult]


class TableCheck(BaseModel):
    mesh: str
    encoder: str
    head: bool = False
    """L0 answered with its trained head (its own threshold applies, where it has one)."""
    routes: int
    examples: int
    description_phrases: int
    threshold: float
    half_in_scope_similarity: float | None
    """The best similarity at which L0 thinks a message is as likely in scope as not."""
    route_checks: list[RouteCheck]
    evaluation: EvalReport | None = None

    @property
    def own_route(self) -> int:
        return sum(check.own_route for check in self.route_checks)


def check_table(options: CheckOptions) -> TableCheck:
    """Build the mesh's L0 as the orchestrator does and check it (see the module)."""
    config, layer_config = l0_config(options)
    labelled = None
    if options.eval is not None:
        labelled = read_labelled(options.eval)
        known_routes(labelled, config, options.eval)
    layer = EmbeddingLayer(layer_config, config, options.models_dir)
    return asyncio.run(_check(options, config, layer_config, layer, labelled))


def l0_config(options: CheckOptions) -> tuple[RouterConfig, LayerConfig]:
    local = LocalOptions(
        files=options.files,
        namespace=options.namespace,
        mesh=options.mesh,
        models_dir=options.models_dir,
        offline=options.offline,
    )
    rendered = render(local)
    l0 = next((x for x in rendered.layers if x.kind == "embedding" and x.enabled), None)
    if l0 is None:
        raise CheckError("the mesh has no enabled embedding layer (L0) to check")
    # Only L0 is checked: the generative layers' models are neither fetched nor started.
    only_l0 = rendered.model_copy(
        update={
            "layers": tuple(
                x if x.name == l0.name else x.model_copy(update={"enabled": False})
                for x in rendered.layers
            )
        }
    )
    config = ensure_models(only_l0, local)
    return config, next(x for x in config.layers if x.name == l0.name)


def known_routes(rows: Sequence[LabelledRequest], config: RouterConfig, path: Path) -> None:
    known = {route.name for route in config.routes} - {config.escalation.route}
    unknown = sorted(
        {row.route for row in rows if row.kind == "in_scope" and row.route_name not in known}
    )
    if unknown:
        raise CheckError(
            f"{path}: route(s) {', '.join(unknown)} are not in the mesh's routes "
            f"({', '.join(sorted(known))})"
        )


async def _check(
    options: CheckOptions,
    config: RouterConfig,
    layer_config: LayerConfig,
    layer: EmbeddingLayer,
    labelled: list[LabelledRequest] | None,
) -> TableCheck:
    await layer.prepare()
    index = layer.index
    if index is None:
        raise CheckError(f"L0 could not be built: {layer.error}")
    calibration = layer.stats.get("calibration", {})
    head = index.artifact is not None
    return TableCheck(
        mesh=f"{config.mesh.namespace}/{config.mesh.name}",
        encoder=layer_config.head.path if head and layer_config.head else layer_config.model.path,
        head=head,
        routes=len(config.routes),
        examples=int(layer.stats.get("examples", 0)),
        description_phrases=int(layer.stats.get("description_phrases", 0)),
        threshold=config.threshold_for(layer.name, config.escalation.route, head=head),
        half_in_scope_similarity=calibration.get("half_in_scope_similarity"),
        route_checks=_route_checks(index, config.escalation.route),
        evaluation=(
            await evaluate(
                options.eval,
                options.thresholds,
                config=config,
                layer_config=layer_config,
                layer=layer,
                labelled=labelled,
                head=head,
            )
            if labelled is not None and options.eval is not None
            else None
        ),
    )


def _route_checks(index: ExampleIndex, escalation: str) -> list[RouteCheck]:
    judged = index.leave_one_out()
    midpoints = route_midpoints(index)
    checks = []
    for number, route in enumerate(index.routes):
        mine = [(row, features) for row, features in judged if index.labels[row] == number]
        if route == escalation and not mine:
            continue  # the escalation route has examples only when a table gives it some
        elsewhere = [
            _misrouted(index, row, features.route)
            for row, features in mine
            if features.route != number
        ]
        checks.append(
            RouteCheck(
                route=route,
                examples=len(mine),
                own_route=len(mine) - len(elsewhere),
                elsewhere=elsewhere,
                in_scope_from=midpoints.get(route),
            )
        )
    return checks


def _misrouted(index: ExampleIndex, row: int, chosen: int) -> Misrouted:
    sims = index.vectors @ index.vectors[row]
    sims[row] = -np.inf
    rows = index.groups.rows(chosen)
    nearest = int(rows[np.argmax(sims[rows])])
    return Misrouted(
        text=index.texts[row],
        route=index.routes[int(index.labels[row])],
        chosen=index.routes[chosen],
        nearest=index.texts[nearest],
        similarity=round(float(sims[nearest]), 3),
    )


async def evaluate(
    path: Path,
    asked: Sequence[float],
    *,
    config: RouterConfig,
    layer_config: LayerConfig,
    layer: EmbeddingLayer,
    labelled: list[LabelledRequest],
    head: bool,
) -> EvalReport:
    escalation = config.escalation.route
    outcomes = [
        layer_outcome(layer.name, await layer.classify(row.text), layer_config, 0.0)
        for row in labelled
    ]
    expected = [row.route_name if row.kind == "in_scope" else escalation for row in labelled]
    at_mesh = config.threshold_for(layer.name, escalation, head=head)
    thresholds = sorted({*asked, at_mesh})
    figures = []
    decided_at_mesh: list[tuple[str, str | None]] = []
    for threshold in thresholds:
        at = _with_threshold(config, layer.name, threshold, head=head)
        decided = []
        for outcome in outcomes:
            decision = layer_decides(at, outcome)
            # L0 is the last layer here: what it leaves undecided escalates.
            decided.append(
                (decision[0], decision[2].value if decision[2] else None)
                if decision is not None
                else (escalation, "low_confidence")
            )
        figures.append(
            figures_at(threshold, labelled, expected, [d for d, _ in decided], escalation)
        )
        if threshold == at_mesh:
            decided_at_mesh = decided
    rows = [
        RowResult(
            text=row.text,
            kind=row.kind,
            expected=gold,
            route=outcome.route or escalation,
            confidence=round(outcome.confidence, 3),
            decided=route,
            reason=reason,
        )
        for row, gold, outcome, (route, reason) in zip(
            labelled, expected, outcomes, decided_at_mesh, strict=True
        )
    ]
    return EvalReport(
        path=str(path),
        in_scope=sum(row.kind == "in_scope" for row in labelled),
        out_of_scope=sum(row.kind == "out_of_scope" for row in labelled),
        multi_step=sum(row.kind == "multi_step" for row in labelled),
        figures=figures,
        rows=rows,
    )


def _with_threshold(
    config: RouterConfig, layer: str, threshold: float, *, head: bool
) -> RouterConfig:
    """``config`` with ``layer``'s threshold set, or its trained head's when the head
    answers and has its own."""

    def moved(x: LayerConfig) -> LayerConfig:
        if head and x.head is not None and x.head.threshold is not None:
            return x.model_copy(update={"head": x.head.model_copy(update={"threshold": threshold})})
        return x.model_copy(update={"threshold": threshold})

    return config.model_copy(
        update={"layers": tuple(moved(x) if x.name == layer else x for x in config.layers)}
    )


def figures_at(
    threshold: float,
    labelled: Sequence[LabelledRequest],
    expected: Sequence[str],
    decided: Sequence[str],
    escalation: str,
) -> Figures:
    routed = [
        (gold, route) for gold, route in zip(expected, decided, strict=True) if route != escalation
    ]

    def share(kind: str, *, routed_locally: bool) -> float | None:
        rows = [route for row, route in zip(labelled, decided, strict=True) if row.kind == kind]
        if not rows:
            return None
        hits = sum((route != escalation) == routed_locally for route in rows)
        return round(100 * hits / len(rows), 1)

    return Figures(
        threshold=threshold,
        routed=len(routed),
        routed_accuracy=(
            round(100 * sum(gold == route for gold, route in routed) / len(routed), 1)
            if routed
            else None
        ),
        coverage=share("in_scope", routed_locally=True),
        out_of_scope_escalated=share("out_of_scope", routed_locally=False),
        multi_step_escalated=share("multi_step", routed_locally=False),
    )
