"""Feedback intake: how a report becomes a stored record and how the records export.

Reports come from ``POST /v1/feedback``; for escalated requests sent through
``/v1/dispatch``, from the reasoning endpoint's answer: naming the route the request
belongs to in the ``X-Router-Expected-Route`` header reports it without a second call,
so the feedback loop runs without the agent taking part; and, with
``api.learnFromToolCalls``, from the tools an agent called through ``/mcp`` after an
unsure answer (:mod:`routermesh.runtime.mcp_feedback`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

import httpx

from routermesh.runtime.cascade import Decision
from routermesh.runtime.feedback import MAX_STORED_CHARS, FeedbackRecord, FeedbackSource
from routermesh.runtime.router import Router, RouterState

log = logging.getLogger("routermesh.feedback")

EXPECTED_ROUTE_HEADER = "X-Router-Expected-Route"
"""Header of a dispatched answer naming the route the request belongs to (a server's
name, or the escalation route for a request no server takes)."""
MAX_ROUTE_CHARS = 63
"""A route name is a DNS label: what is logged of a name the config does not have."""


async def record_feedback(
    router: Router,
    state: RouterState,
    message: str,
    expected: str,
    decided: str | None,
    *,
    source: FeedbackSource,
    plan: tuple[str, ...] | None = None,
    measured: bool = True,
) -> tuple[FeedbackRecord, str]:
    """Store one report with what each layer said when the message was decided (while
    still cached: the outcome adaptive thresholds measure; not with ``measured`` False);
    a missing ``decided`` or ``plan`` is the cached decision's. Returns the record and the
    store that kept it."""
    needed = measured or decided is None or plan is None
    cached = await state.cascade.recall(message) if needed else None
    record = FeedbackRecord(
        message=message[:MAX_STORED_CHARS],
        expected_route=expected,
        decided_route=decided or (cached.route if cached else None),
        plan=plan if plan is not None else (cached.plan if cached else ()),
        config_hash=state.config.config_hash,
        route_table_version=state.config.route_table_version,
        source=source,
        verdicts=cached.verdicts if cached and measured else (),
    )
    stored = await router.feedback.add(record)
    router.metrics.feedback.labels(expected_route=expected).inc()
    return record, stored


async def feedback_from_answer(
    router: Router, state: RouterState, message: str, decision: Decision, headers: httpx.Headers
) -> FeedbackRecord | None:
    """The report a dispatched answer carries, stored; None when it carries none or
    names a route the running config does not have (logged, never learned)."""
    named = headers.get(EXPECTED_ROUTE_HEADER)
    if named is None:
        return None
    expected = named.strip()
    if expected not in state.config.route_names:
        log.warning(
            "a target's answer named an unknown route: not recorded",
            extra={
                "event": "target_feedback_refused",
                "route": decision.route,
                "expected_route": expected[:MAX_ROUTE_CHARS],
            },
        )
        return None
    try:
        record, stored = await record_feedback(
            router, state, message, expected, decision.route, source="answer", plan=decision.plan
        )
    except Exception as error:  # the answer goes back to the caller whatever happens here
        log.error(
            "feedback from a target's answer could not be stored",
            extra={"event": "target_feedback_error", "route": decision.route, "error": repr(error)},
        )
        return None
    log.info(
        "feedback from a target's answer",
        extra={
            "event": "target_feedback",
            "route": decision.route,
            "expected_route": expected,
            "misroute": record.misroute,
            "stored": stored,
        },
    )
    return record


async def feedback_from_tool_call(
    router: Router, message: str, route: str, decision: Decision
) -> FeedbackRecord | None:
    """Store what an agent's tool calls said of an escalated request: ``route`` was its
    server. None when the router has no config or the running one lacks the route (a
    reload in between); never raises (the agent's calls are long answered)."""
    state = router.state
    if state is None or route not in state.config.route_names:
        log.warning(
            "an agent's tool call named a route the running config lacks (or none is "
            "loaded): not recorded",
            extra={"event": "mcp_feedback_refused", "expected_route": route[:MAX_ROUTE_CHARS]},
        )
        return None
    try:
        record, stored = await record_feedback(
            router,
            state,
            message,
            route,
            decision.route,
            source="tool_call",
            plan=decision.plan,
            measured=False,
        )
    except Exception as error:
        log.error(
            "feedback from an agent's tool call could not be stored",
            extra={"event": "mcp_feedback_error", "expected_route": route, "error": repr(error)},
        )
        return None
    log.info(
        "feedback from an agent's tool call",
        extra={
            "event": "mcp_feedback",
            "route": decision.route,
            "expected_route": route,
            "reason": decision.escalation_reason,
            "stored": stored,
        },
    )
    return record


def export_lines(records: Iterable[FeedbackRecord], escalation: str, misroutes: bool) -> str:
    """The records as JSONL, ``text``/``route`` first (a RouteTable's ``examplesFrom``
    takes the rows as they are): the ones L0 learns, or with ``misroutes`` False all."""
    lines = [
        json.dumps(
            {
                "text": r.message,
                "route": r.expected_route,
                "decided_route": r.decided_route,
                "source": r.source,
                "plan": list(r.plan),
                "verdicts": [list(v) for v in r.verdicts],
                "route_table_version": r.route_table_version,
                "received_at": r.received_at,
            },
            ensure_ascii=False,
        )
        for r in records
        if not misroutes or r.learnable(escalation)
    ]
    return "".join(f"{line}\n" for line in lines)
