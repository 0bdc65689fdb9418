"""Serving around a route whose MCP server does not answer.

Availability changes by the second and is not part of a decision: a cached decision
stays right about which route a request belongs to, so the cache keeps it, and the
redirect is applied when the decision is served. A decision for an unavailable route
goes to the route's fallback route when that one is available, else to the escalation
route with reason ``target_unavailable``; ``unavailable`` names the route it was for.
Either way the request is answered (fail open) and the redirect is metered and logged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

from routermesh.runtime.cascade import Decision
from routermesh.runtime.contract.config import RouterConfig
from routermesh.runtime.decision import Reason
from routermesh.runtime.logs import DECISION_LOGGER
from routermesh.runtime.metrics import RouterMetrics

log = logging.getLogger(DECISION_LOGGER)


def redirect(
    decision: Decision,
    config: RouterConfig,
    unavailable: Mapping[str, str | None],
    metrics: RouterMetrics,
) -> Decision:
    """``decision``, or where it goes while its route's server does not answer
    (``unavailable``: route -> its fallback route, None for the escalation route)."""
    route = decision.route
    if route not in unavailable:
        return decision
    fallback = unavailable[route]
    escalation = config.escalation.route
    if fallback is not None and fallback != escalation and fallback not in unavailable:
        metrics.target_unavailable.labels(route=route, action="fallback").inc()
        redirected = replace(decision, route=fallback, unavailable=route)
    else:
        metrics.target_unavailable.labels(route=route, action="escalated").inc()
        metrics.escalations.labels(reason=Reason.TARGET_UNAVAILABLE).inc()
        redirected = replace(
            decision,
            route=escalation,
            escalation_reason=Reason.TARGET_UNAVAILABLE,
            unavailable=route,
        )
    log.info(
        "route unavailable: request redirected",
        extra={
            "event": "target_unavailable",
            "route": route,
            "to": redirected.route,
            "escalation_reason": redirected.escalation_reason,
        },
    )
    return redirected
