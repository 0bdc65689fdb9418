"""The orchestrator's HTTP API (FastAPI, served by uvicorn on :8080).

Routing never answers 5xx for a routing failure: the cascade fails open to the
escalation route. The only 5xx answers are 503 while no valid config has ever
been loaded (``/readyz`` says so too, so a Service sends no traffic) and 502 from
``/v1/dispatch`` when the chosen target cannot be reached.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from routermesh.runtime.cascade import Decision
from routermesh.runtime.decision import Learning
from routermesh.runtime.dispatch import DispatchError, forward, response_headers, target_for
from routermesh.runtime.feedback import MAX_STORED_CHARS, FeedbackRecord
from routermesh.runtime.router import Router, RouterState

MAX_MESSAGE_CHARS = 32_768
"""Default cap on a message (the layers read at most 2,000 characters of it)."""

MAX_BODY_BYTES = 256 * 1024
"""Cap on a request body, checked before it is read (a message of 32,768 characters of
4-byte UTF-8 is 128 KiB): a huge body is refused with 413, never buffered."""


class _BodyTooLargeError(Exception):
    pass


class BodyLimit:
    """ASGI middleware: 413 for bodies over ``max_bytes``, by Content-Length or counted."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _BodyTooLargeError
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLargeError:
            if not started:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(
            status_code=413,
            content={"error": f"request body larger than {self.max_bytes} bytes"},
        )
        await response(scope, receive, send)


class RouteRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    message: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)
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
        description="Why the request goes to the escalation route (null when routed)."
    )
    trace: list[LayerTrace] | None = Field(
        default=None, description="Each asked layer's verdict, in order (only with `explain`)."
    )


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)
    expected_route: str = Field(min_length=1, max_length=63)
    decided_route: str | None = Field(default=None, max_length=63)


def _error(status: int, error: str, **details: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": error, **details})


def _problems(error: RequestValidationError | ValidationError) -> list[dict[str, str]]:
    # Field and reason only: the offending input is never echoed back (it may be huge).
    return [
        {"field": ".".join(str(p) for p in e["loc"] if p != "body") or "body", "problem": e["msg"]}
        for e in error.errors()
    ]


def _decision_headers(decision: Decision) -> dict[str, str]:
    return {
        "X-Router-Route": decision.route,
        "X-Router-Layer": decision.layer,
        "X-Router-Confidence": f"{decision.confidence:.4f}",
        "X-Router-Config-Hash": decision.config_hash,
    }


def create_app(router: Router, *, manage_router: bool = True) -> FastAPI:
    """The API over ``router``; with ``manage_router`` the app's lifespan starts and stops it."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if manage_router:
            await router.start()
        try:
            yield
        finally:
            if manage_router:
                await router.stop()

    app = FastAPI(
        title="router-mesh orchestrator",
        version="v1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.router = router
    app.add_middleware(BodyLimit)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        return _error(422, "invalid request", problems=_problems(error))

    def current() -> RouterState | JSONResponse:
        state = router.state
        if state is None:
            return _error(503, "no valid router config loaded", detail=router.last_error)
        return state

    async def route_response(
        state: RouterState, message: str, *, explain: bool = False, all_layers: bool = False
    ) -> tuple[Decision, RouteResponse]:
        decision = await state.cascade.decide(message, explain=explain, all_layers=all_layers)
        trace = (
            [
                LayerTrace(
                    layer=o.layer,
                    route=o.route,
                    confidence=round(o.confidence, 6),
                    reason=o.reason,
                    ms=round(o.seconds * 1000, 3),
                )
                for o in decision.trace
            ]
            if explain
            else None
        )
        return decision, RouteResponse(
            route=decision.route,
            target=target_for(state.config, decision.route),
            layer=decision.layer,
            confidence=round(decision.confidence, 6),
            latency_ms=round(decision.seconds * 1000, 3),
            config_hash=decision.config_hash,
            cache_hit=decision.cache_hit,
            escalation_reason=decision.escalation_reason,
            trace=trace,
        )

    @app.post("/v1/route", response_model=RouteResponse)
    async def route(request: RouteRequest) -> RouteResponse | JSONResponse:
        state = current()
        if isinstance(state, JSONResponse):
            return state
        _, answer = await route_response(
            state, request.message, explain=request.explain, all_layers=request.all_layers
        )
        return answer

    @app.post("/v1/dispatch", response_model=None)
    async def dispatch(request: Request) -> Response:
        body = await request.body()
        try:
            parsed = RouteRequest.model_validate_json(body)
        except ValidationError as error:
            return _error(422, "invalid request", problems=_problems(error))
        state = current()
        if isinstance(state, JSONResponse):
            return state
        decision, _ = await route_response(state, parsed.message)
        headers = _decision_headers(decision)
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
        record = FeedbackRecord(
            message=request.message[:MAX_STORED_CHARS],
            expected_route=request.expected_route,
            decided_route=request.decided_route,
            config_hash=state.config.config_hash,
            route_table_version=state.config.route_table_version,
        )
        stored = await router.feedback.add(record)
        router.metrics.feedback.labels(expected_route=request.expected_route).inc()
        return {"stored": stored, "expected_route": request.expected_route}

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
        ready = all(checks.values())
        state = router.state
        return JSONResponse(
            status_code=200 if ready else 503,
            content={
                "ready": ready,
                "checks": checks,
                "config_hash": state.config.config_hash if state else None,
                "config_error": router.last_error,
                "learned": {
                    layer.name: len(layer.learned)
                    for layer in (state.cascade.layers if state else ())
                    if isinstance(layer, Learning)
                },
            },
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(router.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/config", response_model=None)
    async def config() -> dict[str, Any] | JSONResponse:
        state = current()
        if isinstance(state, JSONResponse):
            return state
        return public_config(state)


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
                "thresholds": {
                    layer.name: config.threshold_for(layer.name, route.name) for layer in layers
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
                "threshold": layer.threshold,
                "timeout_ms": layer.timeout_ms,
                **(
                    {"index": getattr(running[layer.name], "stats", None)}
                    if layer.kind == "embedding" and layer.name in running
                    else {}
                ),
            }
            for layer in config.layers
        ],
        "cache": {
            "backend": config.cache.backend,
            "ttl_seconds": config.cache.ttl_seconds,
            "max_entries": config.cache.max_entries,
        },
    }
