"""Dispatch over MCP: an MCP session relayed to the server a request was routed to.

``/v1/dispatch/mcp`` speaks streamable HTTP on both sides. The first request of a
session (``initialize``) carries the user's request, in the ``X-Router-Message`` header
or the ``message`` query parameter, or a route chosen already (``X-Router-Route``); the
router decides (cache, cascade, availability, as ``/v1/route``) and relays the JSON-RPC
body to that route's MCP server. The server's ``Mcp-Session-Id`` comes back as
``<route>~<id>``, so every later request of the session (POST, the GET event stream,
DELETE) names its route itself: it goes to the same server with the server's own id,
whichever router replica receives it, and is never routed again. Responses are relayed as
they stream (SSE or JSON), with the decision in ``X-Router-*`` headers.

A request the router does not route to an MCP server (escalated, multi-step, a route
without ``mcp``) is answered with a JSON-RPC error whose ``data`` holds the decision, so
the agent can escalate instead; an unreachable server is a 502, as for ``/v1/dispatch``.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from routermesh.runtime.cascade import Decision
from routermesh.runtime.contract.config import RouterConfig
from routermesh.runtime.dispatch import decision_headers

SESSION_HEADER = "mcp-session-id"
SESSION_SEPARATOR = "~"
RELAYED_REQUEST_HEADERS = (
    "content-type",
    "accept",
    "mcp-protocol-version",
    "last-event-id",
)
RELAYED_RESPONSE_HEADERS = ("content-type", "mcp-protocol-version", "cache-control")
NOT_ROUTED = -32001
"""JSON-RPC error code of a session the router does not send to an MCP server."""
_ROUTE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class Upstream:
    route: str
    url: str
    session: str | None
    decision: Decision | None = None


def split_session(value: str | None) -> tuple[str, str] | None:
    """``<route>~<server's id>`` as (route, id); None for anything else."""
    if not value or SESSION_SEPARATOR not in value:
        return None
    route, _, upstream = value.partition(SESSION_SEPARATOR)
    return (route, upstream) if _ROUTE.match(route) and upstream else None


def mcp_target(config: RouterConfig, route: str) -> str | None:
    for candidate in config.routes:
        if candidate.name == route and candidate.mcp is not None:
            return candidate.target
    return None


def _headers(decision: Decision | None, route: str) -> dict[str, str]:
    """The decision's headers; a session's later requests name their route only."""
    if decision is None:
        return {"X-Router-Route": route, "X-Router-Layer": "session"}
    return decision_headers(decision)


def not_routed(decision: Decision, request_id: object) -> JSONResponse:
    """The JSON-RPC answer for a session the router does not relay: why, and the decision."""
    data = {
        "route": decision.route,
        "escalation_reason": decision.escalation_reason,
        "plan": list(decision.plan),
        "confidence": round(decision.confidence, 4),
    }
    return JSONResponse(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "error": {
                "code": NOT_ROUTED,
                "message": f"not routed to an MCP server: {decision.route} "
                f"({decision.escalation_reason or 'no MCP target'})",
                "data": data,
            },
        },
        headers=decision_headers(decision),
    )


async def relay(
    client: httpx.AsyncClient,
    request: Request,
    upstream: Upstream,
    token: Callable[[str], str | None],
) -> Response:
    """Relay ``request`` to ``upstream`` and its answer back as it streams."""
    body = await request.body()
    headers = {k: v for k, v in request.headers.items() if k.lower() in RELAYED_REQUEST_HEADERS}
    if upstream.session:
        headers[SESSION_HEADER] = upstream.session
    credential = token(upstream.route)
    if credential:
        headers["authorization"] = f"Bearer {credential}"
    # No read timeout: an event stream idles for as long as the session lives.
    outgoing = client.build_request(
        request.method,
        upstream.url,
        content=body,
        headers=headers,
        timeout=httpx.Timeout(10.0, read=None),
    )
    try:
        answer = await client.send(outgoing, stream=True)
    except httpx.HTTPError as error:
        return JSONResponse(
            {
                "error": f"MCP server of route {upstream.route!r} is unreachable: "
                f"{type(error).__name__}",
                "route": upstream.route,
            },
            status_code=502,
            headers=_headers(upstream.decision, upstream.route),
        )
    relayed = {k: v for k, v in answer.headers.items() if k.lower() in RELAYED_RESPONSE_HEADERS}
    session = answer.headers.get(SESSION_HEADER)
    if session:
        relayed[SESSION_HEADER] = f"{upstream.route}{SESSION_SEPARATOR}{session}"
    relayed.update(_headers(upstream.decision, upstream.route))

    async def chunks() -> AsyncIterator[bytes]:
        async for chunk in answer.aiter_raw():
            yield chunk

    return StreamingResponse(
        chunks(),
        status_code=answer.status_code,
        headers=relayed,
        background=BackgroundTask(answer.aclose),
    )


async def resolve(
    request: Request,
    config: RouterConfig,
    decide: Callable[[str], Awaitable[Decision]],
    body: bytes,
) -> Upstream | Response:
    """Where a request of an MCP session goes: its session's route, a pinned route, or
    the decision for its message; or the answer that says why it goes nowhere."""
    named = _named(request, config)
    if named is not None:
        return named
    message = request.headers.get("x-router-message") or request.query_params.get("message")
    if not message:
        return JSONResponse(
            {
                "error": "a new MCP session needs the request to route: the X-Router-Message "
                "header or the message query parameter (or X-Router-Route)"
            },
            status_code=422,
        )
    decision = await decide(message)
    url = mcp_target(config, decision.route)
    if url is None:
        return not_routed(decision, _request_id(body))
    return Upstream(route=decision.route, url=url, session=None, decision=decision)


def _named(request: Request, config: RouterConfig) -> Upstream | Response | None:
    """The upstream a request names itself (its session, or ``X-Router-Route``)."""
    session = request.headers.get(SESSION_HEADER)
    if session is not None:
        pinned = split_session(session)
        url = mcp_target(config, pinned[0]) if pinned else None
        if pinned is None or url is None:
            return JSONResponse({"error": "unknown MCP session id"}, status_code=404)
        return Upstream(route=pinned[0], url=url, session=pinned[1])
    chosen = request.headers.get("x-router-route")
    if not chosen:
        return None
    url = mcp_target(config, chosen)
    if url is None:
        return JSONResponse(
            {"error": f"route {chosen!r} is not an MCP route of this mesh"}, status_code=404
        )
    return Upstream(route=chosen, url=url, session=None)


def _request_id(body: bytes) -> object:
    try:
        message = json.loads(body)
    except ValueError:
        return None
    return message.get("id") if isinstance(message, dict) else None
