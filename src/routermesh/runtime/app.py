"""The orchestrator's HTTP API (FastAPI, served by uvicorn on :8080).

Routing never answers 5xx for a routing failure: the cascade fails open to the
escalation route, and so does a bug anywhere else on the decision path
(:mod:`routermesh.runtime.failopen`). The only 5xx answers are 503 while no valid config
has ever been loaded (``/readyz`` says so too, so a Service sends no traffic) and 502
from ``/v1/dispatch`` when the chosen target cannot be reached.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from routermesh.runtime.cascade import Decision
from routermesh.runtime.contract.config import ApiConfig
from routermesh.runtime.contract.readiness import ReadinessReport
from routermesh.runtime.decision import Learning
from routermesh.runtime.discovery import read_token
from routermesh.runtime.dispatch import (
    DispatchError,
    decision_headers,
    forward,
    response_headers,
    target_for,
)
from routermesh.runtime.edge import (
    MCP_PATH,
    BearerAuth,
    BodyLimit,
    PortSplit,
    RequestId,
    body_limit,
)
from routermesh.runtime.embedding import EmbeddingLayer
from routermesh.runtime.failopen import Stage, internal_error
from routermesh.runtime.feedback import MAX_FEEDBACK
from routermesh.runtime.feedback_intake import (
    export_lines,
    feedback_from_answer,
    feedback_from_tool_call,
    record_feedback,
)
from routermesh.runtime.mcp_dispatch import relay, resolve
from routermesh.runtime.mcp_feedback import ToolCallFeedback
from routermesh.runtime.mcp_gateway import Gateway
from routermesh.runtime.router import Router, RouterState


class RouteRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    # The length cap is the config's (api.max_message_chars), checked per request: 413.
    message: str = Field(min_length=1)
    explain: bool = Field(
        default=False,
        description="Answer with each layer's verdict (`trace`); runs the layers even when "
        "the cache knows the message, and leaves the cache as it is.",
    )
    all_layers: bool = Field(
        default=False,
        description="With `explain`: ask every enabled layer, also those after the deciding "
        "one (calibration and benchmarks). The decision does not change.",
    )


class LayerTrace(BaseModel):
    layer: str
    route: str | None = Field(description="The layer's top route (null when it abstained).")
    confidence: float
    reason: str | None = Field(description="Why it abstained (null when it answered).")
    cause: str | None = Field(
        default=None,
        description="Why the layer said the message escalates (out_of_scope, multi_step).",
    )
    plan: list[str] = Field(default_factory=list, description="Routes of a multi-step request.")
    out_of_scope: float | None = Field(
        default=None, description="The layer's probability that no route handles the message."
    )
    head: bool = Field(
        default=False,
        description="L0: its trained artifact answered, a head or an encoder tuned on the "
        "table (false: the base encoder, which serves while it trains).",
    )
    ms: float


class RouteResponse(BaseModel):
    route: str
    target: str | None
    layer: str = Field(description="cache, l1, l2 or escalated")
    confidence: float
    latency_ms: float
    config_hash: str
    cache_hit: bool
    escalation_reason: str | None = Field(
        description="Why the request goes to the escalation route (null when routed): "
        "out_of_scope, multi_step, low_confidence, a layer failure, or cached."
    )
    plan: list[str] = Field(
        default_factory=list,
        description="For a multi-step request: the routes it needs, in order (what the "
        "escalation endpoint has to coordinate).",
    )
    unavailable: str | None = Field(
        default=None,
        description="The route the layers chose when its MCP server did not answer: the "
        "request went to its fallback route or escalated (reason target_unavailable).",
    )
    trace: list[LayerTrace] | None = Field(
        default=None, description="Each asked layer's verdict, in order (only with `explain`)."
    )


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1)
    expected_route: str = Field(min_length=1, max_length=63)
    decided_route: str | None = Field(default=None, max_length=63)
    plan: list[Annotated[str, Field(min_length=1, max_length=63)]] | None = Field(
        default=None,
        max_length=16,
        description="The decision's plan, as the route answer gave it (default: the cached "
        "decision's, which is gone once the cache expires or L0 learns).",
    )


def _error(status: int, error: str, **details: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": error, **details})


def _problems(error: RequestValidationError | ValidationError) -> list[dict[str, str]]:
    # Field and reason only: the offending input is never echoed back (it may be huge).
    return [
        {"field": ".".join(str(p) for p in e["loc"] if p != "body") or "body", "problem": e["msg"]}
        for e in error.errors()
    ]


def _undecodable(error: ValueError) -> dict[str, str]:
    if isinstance(error, UnicodeDecodeError):
        return {"field": "body", "problem": "the body is not valid UTF-8"}
    return {"field": "body", "problem": "the body cannot be decoded as JSON"}


def _answer(state: RouterState, decision: Decision, explain: bool) -> RouteResponse:
    trace = (
        [
            LayerTrace(
                layer=o.layer,
                route=o.route,
                confidence=round(o.confidence, 6),
                reason=o.reason,
                cause=o.cause,
                plan=list(o.plan),
                out_of_scope=None if o.out_of_scope is None else round(o.out_of_scope, 6),
                head=o.head,
                ms=round(o.seconds * 1000, 3),
            )
            for o in decision.trace
        ]
        if explain
        else None
    )
    return RouteResponse(
        route=decision.route,
        target=target_for(state.config, decision.route),
        layer=decision.layer,
        confidence=round(decision.confidence, 6),
        latency_ms=round(decision.seconds * 1000, 3),
        config_hash=decision.config_hash,
        cache_hit=decision.cache_hit,
        escalation_reason=decision.escalation_reason,
        plan=list(decision.plan),
        unavailable=decision.unavailable,
        trace=trace,
    )


def _escalated_answer(state: RouterState, decision: Decision, explain: bool) -> RouteResponse:
    """The answer of a failed-open request, from plain values only: the regular answer's
    building may be what failed."""
    return RouteResponse(
        route=decision.route,
        target=state.config.escalation.target,
        layer=decision.layer,
        confidence=0.0,
        latency_ms=round(decision.seconds * 1000, 3),
        config_hash=decision.config_hash,
        cache_hit=False,
        escalation_reason=decision.escalation_reason,
        plan=[],
        trace=[] if explain else None,
    )


async def _route_response(
    router: Router,
    state: RouterState,
    message: str,
    *,
    explain: bool = False,
    all_layers: bool = False,
) -> tuple[Decision, RouteResponse]:
    """Decide and build the answer; a bug on the way fails open (never a 500)."""
    started = time.perf_counter()
    stage: Stage = "decide"
    try:
        decision = router.serve(
            await state.cascade.decide(message, explain=explain, all_layers=all_layers)
        )
        stage = "respond"
        return decision, _answer(state, decision, explain)
    except Exception:
        decision = internal_error(state.config, router.metrics, stage, started)
        return decision, _escalated_answer(state, decision, explain)


def _lifespan(
    router: Router, manage_router: bool, gateway: Gateway
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if manage_router:
            await router.start()
        try:
            async with gateway.manager.run():
                yield
        finally:
            if gateway.feedback is not None:
                await gateway.feedback.close()
            if manage_router:
                await router.stop()

    return lifespan


def _too_long(
    state: RouterState, message: str, rejected: Callable[[int], None]
) -> JSONResponse | None:
    """413 for a message over the config's ``api.max_message_chars`` (None: it fits)."""
    limit = state.config.api.max_message_chars
    if len(message) <= limit:
        return None
    rejected(413)
    return _error(413, f"message longer than {limit} characters", max_message_chars=limit)


def _add_edge(app: FastAPI, router: Router, ops_port: int | None) -> Callable[[int], None]:
    """Middleware and error handlers of the HTTP edge; returns the refusal counter."""

    def api_config() -> ApiConfig:
        state = router.state
        return state.config.api if state is not None else ApiConfig()

    def rejected(status: int) -> None:
        router.metrics.rejected_requests.labels(status=str(status)).inc()

    # Outermost last: request ID, port split, authentication, then the body cap.
    app.add_middleware(
        BodyLimit,
        max_bytes=lambda: body_limit(api_config().max_message_chars),
        on_refused=lambda: rejected(413),
    )
    app.add_middleware(
        BearerAuth,
        token_file=lambda: api_config().token_file,
        on_failure=lambda reason: router.metrics.auth_failures.labels(reason=reason).inc(),
    )
    app.add_middleware(PortSplit, ops_port=ops_port)
    app.add_middleware(RequestId)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        rejected(422)
        return _error(422, "invalid request", problems=_problems(error))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        # FastAPI's own refusals (an unknown path, a wrong method) in the API's shape.
        if error.status_code == 400 and isinstance(error.__cause__, ValueError):
            # A body FastAPI could not decode (bytes that are not UTF-8) is bad input like
            # invalid JSON: 422 as documented, as /v1/dispatch's own parsing answers.
            rejected(422)
            return _error(422, "invalid request", problems=[_undecodable(error.__cause__)])
        if error.status_code < 500:
            rejected(error.status_code)
        return JSONResponse(
            status_code=error.status_code,
            content={"error": str(error.detail)},
            headers=error.headers,
        )

    return rejected


def _add_mcp(app: FastAPI, router: Router, gateway: Gateway) -> None:
    """MCP for agents, under the API's authentication: the router as an MCP server
    (``/mcp``, runtime/mcp_gateway.py) and MCP sessions relayed to the routed server
    (``/v1/dispatch/mcp``, runtime/mcp_dispatch.py)."""
    app.router.routes.append(
        Route(MCP_PATH, endpoint=gateway.app, methods=["GET", "POST", "DELETE"])
    )

    @app.api_route("/v1/dispatch/mcp", methods=["GET", "POST", "DELETE"], response_model=None)
    async def dispatch_mcp(request: Request) -> Response:
        state = router.state
        if state is None:
            return _error(503, "no valid router config loaded", detail=router.last_error)
        body = await request.body()

        async def decide(message: str) -> Decision:
            return await _decide_for_agent(router, state, message)

        upstream = await resolve(request, state.config, decide, body)
        if isinstance(upstream, Response):
            return upstream
        answer = await relay(
            router.dispatch_client, request, upstream, lambda route: mcp_token(state, route)
        )
        if answer.status_code == 502:
            router.metrics.dispatch_errors.labels(route=upstream.route).inc()
        return answer


def mcp_token(state: RouterState, route: str) -> str | None:
    """The bearer token of ``route``'s MCP server, read from its Secret file now."""
    for candidate in state.config.routes:
        if candidate.name == route and candidate.mcp is not None:
            return read_token(candidate.mcp.credentials_file)
    return None


async def _decide_for_agent(router: Router, state: RouterState, message: str) -> Decision:
    """A message an MCP agent sent, decided as ``/v1/route`` decides (cut to the API's
    message cap rather than refused: MCP has no 413)."""
    limit = state.config.api.max_message_chars
    decision, _ = await _route_response(router, state, message[:limit])
    return decision


def _gateway(router: Router) -> Gateway:
    """The router as an MCP server, deciding the way ``/v1/route`` does."""

    async def decide_for_agent(message: str) -> tuple[Decision, str] | None:
        state = router.state
        if state is None:
            return None
        return await _decide_for_agent(router, state, message), state.config.escalation.route

    def learning() -> bool:
        state = router.state
        return state is not None and state.config.api.learn_from_tool_calls

    async def report(message: str, route: str, decision: Decision) -> bool:
        return await feedback_from_tool_call(router, message, route, decision) is not None

    def outcome(name: str) -> None:
        router.metrics.mcp_feedback.labels(outcome=name).inc()

    return Gateway(router.discovery, decide_for_agent, ToolCallFeedback(learning, report, outcome))


def create_app(
    router: Router, *, manage_router: bool = True, ops_port: int | None = None
) -> FastAPI:
    """The API over ``router``; with ``manage_router`` the app's lifespan starts and stops it.

    With ``ops_port``, health and metrics answer only on that port and the API only on
    the others (the server listens on both), so each can be exposed on its own.
    """

    gateway = _gateway(router)
    app = FastAPI(
        title="router-mesh orchestrator",
        version="v1",
        lifespan=_lifespan(router, manage_router, gateway),
        docs_url=None,
        redoc_url=None,
    )
    app.state.router = router

    rejected = _add_edge(app, router, ops_port)
    _add_mcp(app, router, gateway)

    def too_long(state: RouterState, message: str) -> JSONResponse | None:
        return _too_long(state, message, rejected)

    def current() -> RouterState | JSONResponse:
        state = router.state
        if state is None:
            return _error(503, "no valid router config loaded", detail=router.last_error)
        return state

    @app.post("/v1/route", response_model=RouteResponse)
    async def route(request: RouteRequest) -> RouteResponse | JSONResponse:
        state = current()
        if isinstance(state, JSONResponse):
            return state
        refused = too_long(state, request.message)
        if refused is not None:
            return refused
        _, answer = await _route_response(
            router, state, request.message, explain=request.explain, all_layers=request.all_layers
        )
        return answer

    @app.post("/v1/dispatch", response_model=None)
    async def dispatch(request: Request) -> Response:
        body = await request.body()
        try:
            parsed = RouteRequest.model_validate_json(body)
        except ValidationError as error:
            rejected(422)
            return _error(422, "invalid request", problems=_problems(error))
        state = current()
        if isinstance(state, JSONResponse):
            return state
        refused = too_long(state, parsed.message)
        if refused is not None:
            return refused
        decision, _ = await _route_response(router, state, parsed.message)
        headers = decision_headers(decision)
        result = await forward(
            router.dispatch_client, state.config, decision.route, body, dict(request.headers)
        )
        if isinstance(result, DispatchError):
            router.metrics.dispatch_errors.labels(route=decision.route).inc()
            return JSONResponse(
                status_code=502,
                headers=headers,
                content={"error": result.error, "target": result.target, "route": decision.route},
            )
        if decision.route == state.config.escalation.route and result.is_success:
            # Only the reasoning endpoint teaches this way: it holds the mesh's credential,
            # while a route's server may be anyone's. The answer does not wait for it.
            router.background(
                feedback_from_answer(router, state, parsed.message, decision, result.headers)
            )
        return Response(
            content=result.content,
            status_code=result.status_code,
            headers={**response_headers(result), **headers},
        )

    @app.post("/v1/feedback", status_code=202, response_model=None)
    async def feedback(request: FeedbackRequest) -> dict[str, Any] | JSONResponse:
        state = current()
        if isinstance(state, JSONResponse):
            return state
        refused = too_long(state, request.message)
        if refused is not None:
            return refused
        labels = state.config.route_names
        if request.expected_route not in labels:
            return _error(
                422,
                "invalid request",
                problems=[
                    {
                        "field": "expected_route",
                        "problem": f"unknown route; expected one of {', '.join(labels)}",
                    }
                ],
            )
        record, stored = await record_feedback(
            router,
            state,
            request.message,
            request.expected_route,
            request.decided_route,
            source="api",
            plan=None if request.plan is None else tuple(request.plan),
        )
        return {
            "stored": stored,
            "expected_route": request.expected_route,
            "misroute": record.misroute,
            "example": record.learnable(state.config.escalation.route),
            "measured": bool(record.verdicts),
        }

    @app.get("/v1/feedback", response_model=None)
    async def feedback_export(
        limit: Annotated[int, Query(ge=1, le=MAX_FEEDBACK)] = 1000,
        misroutes: bool = True,
    ) -> Response:
        """The newest reports as JSONL, newest first: ``text``/``route`` rows a RouteTable's
        ``examplesFrom`` file takes as they are (the next config learns them for good, and
        a trained head trains on them), with ``decided_route``, the layers' ``verdicts``
        and ``received_at`` for calibration (``bench calibrate`` style fits). By default
        the reports L0 learns; ``misroutes=false`` adds the confirmed server routes."""
        state = current()
        if isinstance(state, JSONResponse):
            return state  # which reports L0 learns depends on the config's escalation route
        records = await router.feedback.recent(limit)
        return Response(
            content=export_lines(records, state.config.escalation.route, misroutes),
            media_type="application/x-ndjson",
        )

    _add_operations(app, router, current)
    return app


def _add_operations(
    app: FastAPI, router: Router, current: Callable[[], RouterState | JSONResponse]
) -> None:
    """Health, readiness, metrics and the public config view."""

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", response_model=None)
    async def readyz() -> JSONResponse:
        checks = await router.readiness()
        state = router.state
        report = ReadinessReport.model_validate(
            {
                "ready": all(checks.values()),
                "checks": checks,
                "degraded": await router.degraded(),
                "config_hash": state.config.config_hash if state else None,
                "config_error": router.last_error,
                "problems": router.problems(),
                "learned": {
                    layer.name: len(layer.learned)
                    for layer in (state.cascade.layers if state else ())
                    if isinstance(layer, Learning)
                },
                "thresholds": {name: s.report() for name, s in router.adaptive.items()},
                "heads": {
                    layer.name: layer.stats["head"]
                    for layer in (state.cascade.layers if state else ())
                    if isinstance(layer, EmbeddingLayer) and "head" in layer.stats
                },
                "mcp": router.discovery.report(),
            }
        )
        return JSONResponse(
            status_code=200 if report.ready else 503, content=report.model_dump(mode="json")
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(router.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/config", response_model=None)
    async def config() -> dict[str, Any] | JSONResponse:
        state = current()
        if isinstance(state, JSONResponse):
            return state
        # The config that runs, and why a newer one does not (as /readyz says).
        return {**public_config(state), "config_error": router.last_error}


def public_config(state: RouterState) -> dict[str, Any]:
    """What ``GET /v1/config`` shows: hashes, routes, targets, thresholds; never a secret
    (no Redis URL, no credential file content)."""
    config = state.config
    layers = [layer for layer in config.layers if layer.enabled]
    running = {layer.name: layer for layer in state.cascade.layers}
    return {
        "config_hash": config.config_hash,
        "route_table_version": config.route_table_version,
        "mesh": config.mesh.model_dump(),
        "routes": [
            {
                "name": route.name,
                "description": route.description,
                "target": route.target,
                "examples": len(route.examples),
                "tools": [tool.name for tool in route.tools],
                **(
                    {
                        "mcp": route.mcp.model_dump(mode="json", exclude={"credentials_file"})
                        | {"credentials": route.mcp.credentials_file is not None}
                    }
                    if route.mcp is not None
                    else {}
                ),
                "thresholds": {
                    layer.name: config.threshold_for(
                        layer.name, route.name, state.cascade.adapted.get(layer.name)
                    )
                    for layer in layers
                },
                "source": route.source,
            }
            for route in config.routes
        ],
        "escalation": {
            "route": config.escalation.route,
            "target": config.escalation.target,
            "timeout_ms": config.escalation.timeout_ms,
            "credentials": config.escalation.credentials_file is not None,
        },
        "layers": [
            {
                "name": layer.name,
                "kind": layer.kind,
                "enabled": layer.enabled,
                "engine": layer.engine,
                "model": layer.model.path,
                "threshold": state.cascade.adapted.get(layer.name, layer.threshold),
                "configured_threshold": layer.threshold,
                "timeout_ms": layer.timeout_ms,
                **(
                    {"head_threshold": layer.head.threshold}
                    if layer.head is not None and layer.head.threshold is not None
                    else {}
                ),
                **(
                    {"index": getattr(running[layer.name], "stats", None)}
                    if layer.kind == "embedding" and layer.name in running
                    else {}
                ),
            }
            for layer in config.layers
        ],
        "api": {
            "authentication": config.api.token_file is not None,
            "max_message_chars": config.api.max_message_chars,
            "learn_from_tool_calls": config.api.learn_from_tool_calls,
        },
        "cache": {
            "backend": config.cache.backend,
            "ttl_seconds": config.cache.ttl_seconds,
            "max_entries": config.cache.max_entries,
        },
    }
