"""``router-mesh bench mcp-servers``: the tool-routing benchmark's servers as real MCP
servers, all in one process.

Each server of ``bench/data/tools/servers.json`` (BFCL's functions grouped into tool
servers, see ``bench/data/tools/README.md``) is the official SDK's low-level
``mcp.server.Server`` over streamable HTTP at ``/<name>/mcp``: its ``tools/list``
answers the server's tools (name, description, an input schema ``{"type": "object"}``)
and ``tools/call`` answers a short text. One ``StreamableHTTPSessionManager`` per server,
all entered in the Starlette app's lifespan (mounted apps' lifespans do not run).

    router-mesh bench mcp-servers --servers bench/data/tools/servers.json --port 9300

The bench RouteTables of ``router-mesh bench mcp-table`` point at these URLs, and
``router-mesh bench quality --also "router-mesh bench mcp-servers ..."`` starts them
beside the router.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

log = logging.getLogger("routermesh_bench")

SERVER_VERSION = "1.0.0"
INPUT_SCHEMA: dict[str, Any] = {"type": "object"}

LOOPBACK = TransportSecuritySettings(
    enable_dns_rebinding_protection=True,
    allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
    allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
)


class ServersError(ValueError):
    pass


@dataclass(frozen=True)
class ToolServerSpec:
    """One server of ``servers.json``."""

    name: str
    description: str
    in_table: bool
    tools: tuple[dict[str, str], ...]


def read_servers(path: Path, *, in_table_only: bool = False) -> list[ToolServerSpec]:
    """The servers of a ``servers.json`` (a list of ``{name, description, in_table,
    tools: [{name, description}]}``); ServersError when malformed."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ServersError(f"{path}: {error}") from None
    if not isinstance(data, list):
        raise ServersError(f"{path}: expected a JSON list of servers")
    servers: list[ToolServerSpec] = []
    seen: set[str] = set()
    for number, entry in enumerate(data, start=1):
        name = entry.get("name") if isinstance(entry, dict) else None
        tools = entry.get("tools") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name or not isinstance(tools, list):
            raise ServersError(f"{path}: server {number}: expected name and tools")
        if name in seen:
            raise ServersError(f"{path}: server {name!r} appears twice")
        seen.add(name)
        clean: list[dict[str, str]] = []
        for tool in tools:
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                raise ServersError(f"{path}: server {name!r}: a tool without a name")
            clean.append({"name": tool["name"], "description": str(tool.get("description", ""))})
        spec = ToolServerSpec(
            name=name,
            description=str(entry.get("description", "")),
            in_table=bool(entry.get("in_table", True)),
            tools=tuple(clean),
        )
        if spec.in_table or not in_table_only:
            servers.append(spec)
    return servers


def tool_list(spec: ToolServerSpec) -> list[dict[str, Any]]:
    """The server's ``tools/list`` entries (wire keys)."""
    return [
        {"name": t["name"], "description": t["description"], "inputSchema": dict(INPUT_SCHEMA)}
        for t in spec.tools
    ]


def call_text(server: str, tool: str, arguments: dict[str, Any] | None) -> str:
    """What ``tools/call`` answers: a short text saying what was called."""
    given = ", ".join(sorted(arguments or {})) or "no arguments"
    return f"{server}: {tool} done ({given})"


def build_server(spec: ToolServerSpec) -> Server:
    """The SDK's low-level server for one spec."""
    tools = [types.Tool.model_validate(t) for t in tool_list(spec)]
    names = {t.name for t in tools}

    async def list_tools(
        ctx: ServerRequestContext, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools)

    async def call_tool(
        ctx: ServerRequestContext, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        if params.name not in names:
            text = f"{spec.name}: no tool {params.name!r}"
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=text)], is_error=True
            )
        text = call_text(spec.name, params.name, params.arguments)
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)])

    return Server(
        f"bench-{spec.name}",
        version=SERVER_VERSION,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


def app(specs: Sequence[ToolServerSpec]) -> Starlette:
    """One Starlette app serving every spec at ``/<name>/mcp`` (and ``GET /healthz``)."""
    managers = {
        spec.name: StreamableHTTPSessionManager(
            app=build_server(spec), stateless=False, json_response=False, security_settings=LOOPBACK
        )
        for spec in specs
    }

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for manager in managers.values():
                await stack.enter_async_context(manager.run())
            yield

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"servers": {s.name: len(s.tools) for s in specs}})

    routes = [
        Route(f"/{name}/mcp", endpoint=StreamableHTTPASGIApp(manager))
        for name, manager in managers.items()
    ]
    routes.append(Route("/healthz", endpoint=healthz, methods=["GET"]))
    return Starlette(routes=routes, lifespan=lifespan)


def serve(path: Path, *, host: str, port: int, in_table_only: bool = False) -> None:
    import uvicorn  # noqa: PLC0415 - only when serving

    specs = read_servers(path, in_table_only=in_table_only)
    log.warning(
        "serving %d MCP servers (%d tools) at http://%s:%d/<name>/mcp",
        len(specs),
        sum(len(s.tools) for s in specs),
        host,
        port,
    )
    uvicorn.run(app(specs), host=host, port=port, log_level="warning")
