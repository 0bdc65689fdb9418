"""The router as an MCP server, end to end over real HTTP: the orchestrator (real L0 over
two real MCP servers' discovered tools) served by uvicorn, an agent connecting with the
official SDK's client. The ``route`` tool and the session's tool selection, pre-selection
from ``tools/list``'s ``_meta``, ``tools/call`` proxied to the server that owns the
tool, a multi-step request offering both servers' tools, errors as tool errors, and the
API token guarding ``/mcp``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import mcp_types as types
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from routermesh.runtime.app import create_app
from routermesh.runtime.contract.config import CONFIG_FILENAME, ApiConfig
from routermesh.runtime.router import Router
from tests.mcp_servers import (
    COMPUTE,
    NETWORK,
    STEERING,
    ServerThread,
    homelab_servers,
)
from tests.support import wait_until

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / ".cache/models"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Two MCP servers, and the orchestrator routing over them with an API token."""
    servers = homelab_servers(MODELS)
    folder = tmp_path_factory.mktemp("gateway")
    token = folder / "token"
    token.write_text("agent-token\n")
    api = ApiConfig(token_file=str(token))
    config = servers.config.model_copy(update={"api": api}).sealed()
    (folder / CONFIG_FILENAME).write_text(config.to_json())
    router = ServerThread(create_app(Router(folder, models_dir=MODELS, poll_seconds=0.05))).start()
    base = f"http://127.0.0.1:{router.port}"
    assert wait_until(lambda: httpx.get(f"{base}/readyz").status_code == 200, timeout=60)
    yield {
        "url": f"{base}/mcp",
        "base": base,
        "network": servers.network,
        "compute": servers.compute,
    }
    router.stop()
    servers.stop()


@asynccontextmanager
async def agent(
    url: str, changed: asyncio.Event | None = None, **headers: str
) -> AsyncIterator[ClientSession]:
    async def on_message(message: object) -> None:
        if changed is not None and isinstance(message, types.ToolListChangedNotification):
            changed.set()

    http = httpx2.AsyncClient(headers={"Authorization": "Bearer agent-token", **headers})
    async with (
        http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write, read_timeout_seconds=30, message_handler=on_message) as s,
    ):
        await s.initialize()
        yield s


async def names(session: ClientSession, message: str | None = None) -> list[str]:
    params = (
        types.PaginatedRequestParams.model_validate({"_meta": {"routermesh.io/message": message}})
        if message
        else None
    )
    return [t.name for t in (await session.list_tools(params=params)).tools]


@pytest.mark.asyncio
async def test_route_selects_the_chosen_servers_tools_and_calls_reach_their_server(
    stack: dict[str, Any],
) -> None:
    changed = asyncio.Event()
    async with agent(stack["url"], changed) as session:
        everything = await names(session)
        assert everything[0] == "route" and len(everything) == 1 + 6 + 5
        assert "compute__snapshot_vm" in everything and "network__list_clients" in everything

        answer = await session.call_tool("route", {"message": "take a snapshot of vm 104"})
        decision = answer.structured_content
        assert decision is not None and not answer.is_error
        assert (decision["route"], decision["layer"]) == ("compute", "l0")
        assert decision["tools_from"] == ["compute"] and decision["confidence"] >= 0.5
        assert json.loads(answer.content[0].text)["route"] == "compute"  # type: ignore[union-attr]
        await asyncio.wait_for(changed.wait(), 10)
        assert await names(session) == ["route"] + [f"compute__{t['name']}" for t in COMPUTE]

        result = await session.call_tool("compute__snapshot_vm", {"vmid": "104"})
        assert not result.is_error
        assert result.content[0].text == "snapshot_vm done"  # type: ignore[union-attr]
        assert stack["compute"].calls[-1] == ("snapshot_vm", {"vmid": "104"})

        unknown = await session.call_tool("compute__format_disk", {})
        assert unknown.is_error
        assert "unknown tool 'compute__format_disk'" in unknown.content[0].text  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_tools_list_preselects_for_a_message_in_its_meta(stack: dict[str, Any]) -> None:
    async with agent(stack["url"]) as session:
        wifi = await names(session, "who is connected to the wifi right now")
        assert wifi == ["route"] + [f"network__{t['name']}" for t in [*NETWORK, STEERING]]
        both = await names(session, "check the network and spin up a test vm")
        assert {n.split("__")[0] for n in both[1:]} == {"network", "compute"}
        assert len(await names(session)) == 12  # no selection was made in this session


@pytest.mark.asyncio
async def test_a_multi_step_request_offers_every_planned_servers_tools(
    stack: dict[str, Any],
) -> None:
    async with agent(stack["url"]) as session:
        answer = await session.call_tool("route", {"message": "check network and spin up test VM"})
        decision = answer.structured_content
        assert decision is not None
        assert (decision["route"], decision["escalation_reason"]) == ("cortex", "multi_step")
        assert decision["plan"] == ["network", "compute"] == decision["tools_from"]


def test_the_mcp_endpoint_needs_the_api_token(stack: dict[str, Any]) -> None:
    hello = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    refused = httpx.post(stack["url"], json=hello)
    assert refused.status_code == 401


@pytest.mark.asyncio
async def test_an_mcp_session_is_relayed_to_the_server_its_request_routes_to(
    stack: dict[str, Any],
) -> None:
    url = f"{stack['base']}/v1/dispatch/mcp?message=take a snapshot of vm 104"
    async with agent(url) as session:
        tools = [t.name for t in (await session.list_tools()).tools]
        assert tools == [t["name"] for t in COMPUTE]
        result = await session.call_tool("migrate_vm", {"node": "pve2"})
        assert result.content[0].text == "migrate_vm done"  # type: ignore[union-attr]
        assert stack["compute"].calls[-1] == ("migrate_vm", {"node": "pve2"})
    # The same over the router with a route header, by hand: the session id names its route.
    hello = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "0"},
        },
    }
    headers = {
        "Authorization": "Bearer agent-token",
        "Accept": "application/json, text/event-stream",
        "X-Router-Message": "restart the office access point",
    }
    answer = httpx.post(f"{stack['base']}/v1/dispatch/mcp", json=hello, headers=headers)
    assert answer.status_code == 200
    assert answer.headers["x-router-route"] == "network"
    assert answer.headers["x-router-layer"] == "l0"
    assert answer.headers["mcp-session-id"].startswith("network~")
    gone = httpx.post(
        f"{stack['base']}/v1/dispatch/mcp",
        json={"jsonrpc": "2.0", "id": 2, "method": "ping"},
        headers={**headers, "Mcp-Session-Id": "no-route-here"},
    )
    assert gone.status_code == 404


@pytest.mark.asyncio
async def test_a_request_not_routed_to_an_mcp_server_is_a_json_rpc_error_with_the_decision(
    stack: dict[str, Any],
) -> None:
    hello = {"jsonrpc": "2.0", "id": 7, "method": "initialize", "params": {}}
    answer = httpx.post(
        f"{stack['base']}/v1/dispatch/mcp",
        json=hello,
        headers={
            "Authorization": "Bearer agent-token",
            "X-Router-Message": "what's the weather tomorrow in Lisbon",
        },
    )
    body = answer.json()
    assert (body["id"], body["error"]["code"]) == (7, -32001)
    assert body["error"]["data"]["route"] == "cortex"
    assert body["error"]["data"]["escalation_reason"] == "out_of_scope"
    assert answer.headers["x-router-escalation-reason"] == "out_of_scope"
    missing = httpx.post(
        f"{stack['base']}/v1/dispatch/mcp",
        json=hello,
        headers={"Authorization": "Bearer agent-token"},
    )
    assert missing.status_code == 422
