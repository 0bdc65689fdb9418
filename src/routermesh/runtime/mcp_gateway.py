"""The router as an MCP server (``/mcp`` on the API port): one connection for an agent,
and only the tools a request needs.

An agent connects once (streamable HTTP, the official SDK's server) and gets:

- a ``route`` tool: the routing decision for a message (route, confidence, deciding
  layer, escalation reason, plan) and, as a side effect, the session's *tool selection*:
  the tools of the chosen route, of the routes of a multi-step plan, or of the few routes
  L0 ranked highest when the router is not sure. The session is told
  ``tools/list_changed``, and its next ``tools/list`` holds ``route`` and the selection;
- ``tools/list`` with a message in the request's ``_meta`` (``routermesh.io/message``):
  the selection for that message at once, without a ``route`` call;
- without either, ``tools/list`` holds ``route`` and every discovered tool;
- ``tools/call`` of a listed tool, proxied to the MCP server that owns it over the
  router's session with that server (the router's credentials, not the agent's); with
  ``api.learnFromToolCalls`` the route whose tools an agent called after an unsure
  ``route`` answer (or an unsure ``tools/list`` selection for a message) is fed back as
  the request's route (:mod:`routermesh.runtime.mcp_feedback`).

Tools are listed as ``<route>__<tool>`` (two servers may name a tool the same). A call
for a route whose server does not answer, or for an unknown tool, is a tool error the
agent can read, never a protocol failure.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings

from routermesh import __version__
from routermesh.runtime.cascade import Decision
from routermesh.runtime.discovery import Discovery
from routermesh.runtime.mcp_feedback import ToolCallFeedback

log = logging.getLogger("routermesh.mcp")

ROUTE_TOOL = "route"
SEPARATOR = "__"
MESSAGE_META = "routermesh.io/message"
MAX_CANDIDATES = 3
"""Routes whose tools an unsure decision offers."""
CALL_TIMEOUT_SECONDS = 120.0
MAX_SESSIONS = 10_000
"""Sessions whose selection is kept (the least recently routed is forgotten first)."""

_ROUTE_TOOL = types.Tool(
    name=ROUTE_TOOL,
    title="Route a request",
    description=(
        "Decide which tool server handles a user request, with the router's confidence, "
        "and select that server's tools for this session (tools/list then lists them)."
    ),
    input_schema={
        "type": "object",
        "properties": {"message": {"type": "string", "description": "The user's request."}},
        "required": ["message"],
    },
)


@dataclass(frozen=True)
class Selection:
    """The routes whose tools a session sees, and the decision that chose them."""

    routes: tuple[str, ...]
    decision: dict[str, Any]
    decided: Decision
    escalation: str


def selected_routes(decision: Decision, escalation: str) -> tuple[str, ...]:
    """Whose tools a decision offers: its route; a multi-step plan's routes; else the
    routes the first ranking layer put highest (none for a cached escalation)."""
    if decision.route != escalation:
        return (decision.route,)
    if decision.plan:
        return decision.plan
    for outcome in decision.trace:
        if outcome.candidates:
            return tuple(c.route for c in outcome.candidates[:MAX_CANDIDATES])
    return ()


def decision_summary(decision: Decision, routes: tuple[str, ...]) -> dict[str, Any]:
    return {
        "route": decision.route,
        "confidence": round(decision.confidence, 4),
        "layer": decision.layer,
        "escalation_reason": decision.escalation_reason,
        "plan": list(decision.plan),
        "unavailable": decision.unavailable,
        "tools_from": list(routes),
    }


class _Server(Server):
    """The SDK's server, announcing ``tools.listChanged`` (a ``route`` call changes the
    session's tool list)."""

    def create_initialization_options(self, *args: Any, **kwargs: Any) -> Any:
        from mcp.server import NotificationOptions  # noqa: PLC0415

        if not args and "notification_options" not in kwargs:
            kwargs["notification_options"] = NotificationOptions(tools_changed=True)
        return super().create_initialization_options(*args, **kwargs)


class Gateway:
    """The ``/mcp`` endpoint over ``discovery``'s servers; ``decide`` routes a message the
    way ``/v1/route`` does (cache, cascade, availability)."""

    def __init__(
        self,
        discovery: Discovery,
        decide: Callable[[str], Awaitable[tuple[Decision, str] | None]],
        feedback: ToolCallFeedback | None = None,
    ) -> None:
        self._discovery = discovery
        self._decide = decide
        self.feedback = feedback
        self._selections: OrderedDict[str, Selection] = OrderedDict()
        self.server = _Server(
            "router-mesh", version=__version__, on_list_tools=self._list, on_call_tool=self._call
        )
        # Authentication is the API's bearer token (the API's middleware guards /mcp); the
        # Host header is a Service name in a cluster, so no DNS-rebinding allow-list.
        self.manager = StreamableHTTPSessionManager(
            app=self.server,
            security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        self.app = StreamableHTTPASGIApp(self.manager)

    def _tools(self, routes: tuple[str, ...] | None) -> list[types.Tool]:
        tools = [_ROUTE_TOOL]
        names = routes if routes is not None else self._discovery.routes()
        for route in names:
            watch = self._discovery.watch(route)
            if watch is None:
                continue
            for definition in watch.status.definitions:
                try:
                    tools.append(
                        types.Tool.model_validate(
                            {**definition, "name": f"{route}{SEPARATOR}{definition['name']}"}
                        )
                    )
                except ValueError:
                    continue  # a name too long once prefixed: not offered
        return tools

    async def _list(
        self, ctx: ServerRequestContext, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        meta = params.meta if params is not None else None
        message = dict(meta).get(MESSAGE_META) if meta is not None else None
        key = _session_key(ctx)
        if isinstance(message, str) and message.strip():
            if key and self.feedback is not None:
                self.feedback.settle(key)  # a new request: the open one is over
            selection = await self._select(message)
            if selection is not None and key and self.feedback is not None:
                # Followed as a route call's selection is: the tools an agent then calls
                # say which server the request was. The session's own selection (what a
                # plain tools/list holds) stays as it was.
                self.feedback.routed(
                    key, message, selection.decided, selection.routes, selection.escalation
                )
            return types.ListToolsResult(tools=self._tools(selection.routes if selection else ()))
        chosen = self._selections.get(key) if key else None
        return types.ListToolsResult(tools=self._tools(chosen.routes if chosen else None))

    async def _select(self, message: str) -> Selection | None:
        decided = await self._decide(message)
        if decided is None:
            return None
        decision, escalation = decided
        routes = selected_routes(decision, escalation)
        return Selection(
            routes=routes,
            decision=decision_summary(decision, routes),
            decided=replace(decision, trace=()),  # kept per session: no candidates' texts
            escalation=escalation,
        )

    async def _call(
        self, ctx: ServerRequestContext, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        arguments = dict(params.arguments or {})
        if params.name == ROUTE_TOOL:
            return await self._route(ctx, arguments)
        route, _, tool = params.name.partition(SEPARATOR)
        watch = self._discovery.watch(route) if tool else None
        if watch is None or all(d.get("name") != tool for d in watch.status.definitions):
            return _error(f"unknown tool {params.name!r}: list the tools again")
        key = _session_key(ctx)
        pending = self.feedback.open(key) if key and self.feedback is not None else None
        try:
            result = await watch.call_tool(tool, arguments, CALL_TIMEOUT_SECONDS)
        except Exception as error:  # the agent reads why; the router goes on
            log.warning(
                "proxied MCP tool call failed",
                extra={"event": "mcp_proxy_error", "route": route, "error": type(error).__name__},
            )
            return _error(f"the MCP server of route {route!r} did not answer: {error}")
        if self.feedback is not None:
            self.feedback.called(pending, route)
        return result

    async def _route(
        self, ctx: ServerRequestContext, arguments: dict[str, Any]
    ) -> types.CallToolResult:
        message = arguments.get("message")
        if not isinstance(message, str) or not message.strip():
            return _error("route needs a non-empty string 'message'")
        selection = await self._select(message)
        if selection is None:
            return _error("the router has no config loaded yet")
        key = _session_key(ctx)
        if key:
            self._selections[key] = selection
            self._selections.move_to_end(key)
            while len(self._selections) > MAX_SESSIONS:
                self._selections.popitem(last=False)
            if self.feedback is not None:
                self.feedback.routed(
                    key, message, selection.decided, selection.routes, selection.escalation
                )
            await ctx.session.send_tool_list_changed()
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=json.dumps(selection.decision))],
            structured_content=selection.decision,
        )


def _session_key(ctx: ServerRequestContext) -> str | None:
    """The agent's MCP session (its ``Mcp-Session-Id``): selections are per session."""
    request = ctx.request
    return request.headers.get("mcp-session-id") if request is not None else None


def _error(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)
