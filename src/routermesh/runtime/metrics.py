"""Prometheus metrics of the router, on one registry per app (tests get their own).

Names are the design's: ``router_decisions_total{route,layer}``,
``router_cache_hits_total``, ``router_latency_seconds{layer}``,
``router_escalations_total{reason}``, ``router_layer_errors_total{layer,reason}``,
``router_config_info{hash}``; plus cache backend errors, config reload failures,
feedback, the layers the cascade skipped and the requests in flight to each model
server, the routes' MCP servers (tools, availability, refreshes, health checks), and
``router_latency_p95_seconds``, the p95 over a sliding window that the HPA reads as a
Pods metric.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.035,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.0,
)


class LatencyWindow:
    """Latencies of the last ``seconds``; ``percentile`` over them (nearest rank)."""

    def __init__(
        self,
        seconds: float = 60.0,
        max_samples: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._seconds = seconds
        self._clock = clock
        self._samples: deque[tuple[float, float]] = deque(maxlen=max_samples)

    def observe(self, value: float) -> None:
        self._samples.append((self._clock(), value))

    def percentile(self, q: float) -> float:
        """The ``q`` quantile (0..1) of the window; 0.0 when it is empty."""
        horizon = self._clock() - self._seconds
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()
        if not self._samples:
            return 0.0
        values = sorted(v for _, v in self._samples)
        rank = max(1, math.ceil(q * len(values)))
        return values[rank - 1]


class RouterMetrics:
    def __init__(
        self, registry: CollectorRegistry | None = None, window: LatencyWindow | None = None
    ) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.decisions = Counter(
            "router_decisions_total",
            "Routing decisions by route and deciding layer.",
            ["route", "layer"],
            registry=r,
        )
        self.cache_hits = Counter("router_cache_hits_total", "Decision cache hits.", registry=r)
        self.cache_misses = Counter(
            "router_cache_misses_total", "Decision cache misses.", registry=r
        )
        self.coalesced = Counter(
            "router_coalesced_total",
            "Cache misses answered by a decision of the same message already in progress.",
            registry=r,
        )
        self.cache_errors = Counter(
            "router_cache_errors_total",
            "Cache backend failures (the router falls back to its in-process cache).",
            ["backend", "operation"],
            registry=r,
        )
        self.latency = Histogram(
            "router_latency_seconds",
            "Routing latency by deciding layer.",
            ["layer"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.escalations = Counter(
            "router_escalations_total",
            "Requests escalated to L3, by reason.",
            ["reason"],
            registry=r,
        )
        self.layer_errors = Counter(
            "router_layer_errors_total",
            "Layer failures that failed open, by layer and reason.",
            ["layer", "reason"],
            registry=r,
        )
        self.layer_skipped = Counter(
            "router_layer_skipped_total",
            "Layers the cascade did not ask, by layer and reason (unreachable_threshold: its "
            "answer could not decide; overload: its model server's slots were busy; budget: "
            "earlier layers spent the request's time).",
            ["layer", "reason"],
            registry=r,
        )
        self.layer_in_flight = Gauge(
            "router_layer_in_flight",
            "Requests in flight to a layer's model server (at most its max_in_flight), by layer.",
            ["layer"],
            registry=r,
        )
        self.layers_budget = Gauge(
            "router_layers_budget_seconds",
            "Most time a request spends in the layers before it escalates (the largest layer "
            "timeout of the running config); router_latency_seconds{layer='escalated'} "
            "measures what escalations take.",
            registry=r,
        )
        self.internal_errors = Counter(
            "router_internal_errors_total",
            "Requests whose decision path raised outside the layers (a bug), answered with "
            "the escalation route, by stage (decide, respond).",
            ["stage"],
            registry=r,
        )
        self.model_server_outages = Counter(
            "router_model_server_outages_total",
            "Times a ready layer lost its model server (health check failed or unreachable); "
            "it counts as ready again once the server is back and warm, by layer.",
            ["layer"],
            registry=r,
        )
        self.config_info = Gauge(
            "router_config_info",
            "The config the router runs (value 1, hash label).",
            ["hash"],
            registry=r,
        )
        self.config_reload_errors = Counter(
            "router_config_reload_errors_total", "Rejected config reloads.", registry=r
        )
        self.feedback = Counter(
            "router_feedback_total",
            "Feedback reports (misroutes and confirmations), by expected route.",
            ["expected_route"],
            registry=r,
        )
        self.learned_examples = Gauge(
            "router_learned_examples",
            "Reports a layer uses as examples (the feedback loop: misroutes and requests "
            "reported with the escalation route), by layer.",
            ["layer"],
            registry=r,
        )
        self.learning_refreshes = Counter(
            "router_learning_refreshes_total",
            "Times a layer rebuilt itself with new feedback examples, by layer.",
            ["layer"],
            registry=r,
        )
        self.adaptive_threshold = Gauge(
            "router_adaptive_threshold",
            "A layer's threshold as moved by feedback outcomes (adaptive layers), by layer.",
            ["layer"],
            registry=r,
        )
        self.adaptive_samples = Gauge(
            "router_adaptive_samples",
            "Feedback outcomes an adaptive layer's threshold is fitted on, by layer.",
            ["layer"],
            registry=r,
        )
        self.threshold_updates = Counter(
            "router_threshold_updates_total",
            "Adaptive threshold changes, by layer and outcome (adapted, rolled_back).",
            ["layer", "outcome"],
            registry=r,
        )
        self.head_loaded = Gauge(
            "router_head_loaded",
            "1 while a layer routes with its trained head, 0 while it waits for it (base "
            "encoder serving), by layer.",
            ["layer"],
            registry=r,
        )
        self.dispatch_errors = Counter(
            "router_dispatch_errors_total",
            "Dispatches whose target could not be reached (answered 502), by route.",
            ["route"],
            registry=r,
        )
        self.auth_failures = Counter(
            "router_auth_failures_total",
            "API requests refused by authentication, by reason (missing, invalid, "
            "token_unavailable).",
            ["reason"],
            registry=r,
        )
        self.rejected_requests = Counter(
            "router_rejected_requests_total",
            "API requests refused before routing, by status (413, 422).",
            ["status"],
            registry=r,
        )
        self.mcp_tools = Gauge(
            "router_mcp_tools",
            "Tools discovered on each route's MCP server (the list in use).",
            ["route"],
            registry=r,
        )
        self.mcp_available = Gauge(
            "router_mcp_available",
            "1 while a route's MCP server answers, 0 while its requests fail open.",
            ["route"],
            registry=r,
        )
        self.mcp_refreshes = Counter(
            "router_mcp_tool_refreshes_total",
            "tools/list refreshes of each route's MCP server, by outcome (ok, error).",
            ["route", "outcome"],
            registry=r,
        )
        self.mcp_checks = Counter(
            "router_mcp_health_checks_total",
            "Connections and pings of each route's MCP server, by outcome (ok, error).",
            ["route", "outcome"],
            registry=r,
        )
        self.mcp_feedback = Counter(
            "router_mcp_feedback_total",
            "Requests /mcp escalated with candidate tools, by how they ended (api."
            "learnFromToolCalls): reported (one route's tools called), refused (not "
            "stored), several_routes, no_call, switched_off, dropped.",
            ["outcome"],
            registry=r,
        )
        self.mcp_list_changed = Counter(
            "router_mcp_list_changed_total",
            "tools/list_changed notifications received, by route.",
            ["route"],
            registry=r,
        )
        self.target_unavailable = Counter(
            "router_target_unavailable_total",
            "Decisions for a route whose MCP server was unavailable, by route and what "
            "was done instead (fallback, escalated).",
            ["route", "action"],
            registry=r,
        )
        self.window = window or LatencyWindow()
        self.p95 = Gauge(
            "router_latency_p95_seconds",
            "p95 routing latency over the last minute (the HPA's Pods metric); a request "
            "shed by a busy layer counts as the layers' whole time budget.",
            registry=r,
        )
        self.p95.set_function(lambda: self.window.percentile(0.95))

    def observe_latency(self, layer: str, seconds: float, pressure: float | None = None) -> None:
        """The decision's latency; ``pressure``, for a request that skipped a busy layer,
        is what the HPA's window records instead when it is longer (the histogram keeps
        the real time)."""
        self.latency.labels(layer=layer).observe(seconds)
        self.window.observe(seconds if pressure is None else max(seconds, pressure))

    def set_config(self, config_hash: str) -> None:
        """Report ``config_hash`` as the one running (exactly one series at value 1)."""
        self.config_info.clear()
        self.config_info.labels(hash=config_hash).set(1)
