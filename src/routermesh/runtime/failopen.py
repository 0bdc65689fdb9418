"""Failing open on a bug in the decision path itself.

The layers fail open on their own (an abstention with a reason, see
:mod:`routermesh.runtime.cascade`); this covers the rest of the path a request takes:
the cache lookup and store, the cascade's own code, the plan and the answer's building.
Whatever raises there, the request gets the escalation route with
``escalation_reason: internal_error`` instead of a 500: a user never sees a routing
error, while the traceback in the log and ``router_internal_errors_total{stage}`` show
the operator the bug.
"""

from __future__ import annotations

import logging
import time
import traceback
from typing import Literal

from routermesh.runtime.cascade import Decision
from routermesh.runtime.contract.config import RouterConfig
from routermesh.runtime.decision import Reason
from routermesh.runtime.logs import DECISION_LOGGER
from routermesh.runtime.metrics import RouterMetrics

log = logging.getLogger(DECISION_LOGGER)

Stage = Literal["decide", "respond"]
"""Where the path broke: deciding (cache, cascade) or building the answer."""


def internal_error(
    config: RouterConfig, metrics: RouterMetrics, stage: Stage, started: float
) -> Decision:
    """The escalation for a request whose decision path raised. Call it inside the
    ``except`` block: the traceback logged is the exception being handled."""
    seconds = time.perf_counter() - started
    decision = Decision(
        route=config.escalation.route,
        layer="escalated",
        confidence=0.0,
        config_hash=config.config_hash,
        escalation_reason=Reason.INTERNAL_ERROR,
        seconds=seconds,
    )
    # Counted like every other escalation too, so dashboards of escalations see it.
    metrics.internal_errors.labels(stage=stage).inc()
    metrics.decisions.labels(route=decision.route, layer=decision.layer).inc()
    metrics.escalations.labels(reason=Reason.INTERNAL_ERROR).inc()
    metrics.observe_latency(decision.layer, seconds)
    log.error(
        "decision path failed: the request escalates",
        exc_info=True,
        extra={
            "event": "decision_internal_error",
            "stage": stage,
            "route": decision.route,
            "escalation_reason": Reason.INTERNAL_ERROR,
            "config_hash": config.config_hash,
            # The JSON log line carries only the exception's name and text otherwise.
            "traceback": traceback.format_exc(),
        },
    )
    return decision
