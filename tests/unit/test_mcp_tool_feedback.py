"""Learning from an agent's tool calls through /mcp (``api.learnFromToolCalls``), end to
end over real HTTP: the orchestrator (real L0 over two real MCP servers' discovered
tools) served by uvicorn, an agent on the official SDK's client. An unsure request whose
agent then calls one offered server's tools is recorded as that server's and L0 learns
it; calls to two servers teach nothing; switching the setting off stops it live."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from routermesh.runtime.app import create_app
from routermesh.runtime.contract.config import CONFIG_FILENAME, ApiConfig, RouterConfig
from routermesh.runtime.router import Router
from tests.mcp_servers import ServerThread, homelab_servers
from tests.support import wait_until
from tests.unit.test_mcp_gateway import agent, names

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / ".cache/models"

UNSURE = "the build runner guest is hung, kill it"
"""Escalated by L0 on these two servers' tools (low confidence), with compute offered."""
MIXED = "is the media box slow because of the network or its host"
"""Escalated too, with both servers offered."""
LISTED = "bounce the wedged backup guest"
"""Escalated with compute offered, selected by a ``tools/list`` that names it."""
OFF = "why is everything slow today"
"""Escalated with compute offered, asked once the setting is off (far from ``UNSURE``,
which L0 has learned by then)."""


def _write(folder: Path, config: RouterConfig, learn: bool) -> str:
    api = ApiConfig(token_file=str(folder / "token"), learn_from_tool_calls=learn)
    sealed = config.model_copy(update={"api": api}).sealed()
    (folder / CONFIG_FILENAME).write_text(sealed.to_json())
    return sealed.config_hash


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    servers = homelab_servers(MODELS)
    folder = tmp_path_factory.mktemp("tool-feedback")
    (folder / "token").write_text("agent-token\n")
    config = servers.config
    _write(folder, config, learn=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ROUTER_MESH_LEARN_SECONDS", "0.1")
        router = Router(folder, models_dir=MODELS, poll_seconds=0.05)
        server = ServerThread(create_app(router)).start()
        base = f"http://127.0.0.1:{server.port}"
        assert wait_until(lambda: httpx.get(f"{base}/readyz").status_code == 200, timeout=60)
        yield {"base": base, "folder": folder, "config": config}
        server.stop()
        servers.stop()


def _get(stack: dict[str, Any], path: str) -> httpx.Response:
    return httpx.get(f"{stack['base']}{path}", headers={"Authorization": "Bearer agent-token"})


def _post_route(stack: dict[str, Any], message: str) -> dict[str, Any]:
    answer = httpx.post(
        f"{stack['base']}/v1/route",
        json={"message": message},
        headers={"Authorization": "Bearer agent-token"},
    )
    assert answer.status_code == 200
    body: dict[str, Any] = answer.json()
    return body


def _reports(stack: dict[str, Any]) -> list[dict[str, Any]]:
    answer = _get(stack, "/v1/feedback?misroutes=false")
    assert answer.status_code == 200
    return [json.loads(line) for line in answer.text.splitlines()]


def _outcomes(stack: dict[str, Any]) -> dict[str, float]:
    found = {}
    for line in httpx.get(f"{stack['base']}/metrics").text.splitlines():
        if line.startswith("router_mcp_feedback_total{"):
            labels, value = line.rsplit(" ", 1)
            found[labels.split('"')[1]] = float(value)
    return found


async def _unsure_then_call(stack: dict[str, Any], message: str, *tools: str) -> dict[str, Any]:
    """``message`` routed through /mcp, then ``tools`` called, then another request (which
    settles the first)."""
    async with agent(f"{stack['base']}/mcp") as session:
        answer = await session.call_tool("route", {"message": message})
        decision = answer.structured_content
        assert decision is not None
        for name in tools:
            result = await session.call_tool(name, {})
            assert not result.is_error, result
        settled = await session.call_tool("route", {"message": "take a snapshot of vm 104"})
        assert settled.structured_content is not None
        assert settled.structured_content["route"] == "compute"
        return decision


@pytest.mark.asyncio
async def test_the_one_server_an_agent_used_after_an_unsure_answer_is_learned(
    stack: dict[str, Any],
) -> None:
    assert _get(stack, "/v1/config").json()["api"]["learn_from_tool_calls"] is True
    decision = await _unsure_then_call(stack, UNSURE, "compute__start_vm")
    assert (decision["route"], decision["escalation_reason"]) == ("cortex", "out_of_scope")
    assert "compute" in decision["tools_from"]
    assert wait_until(lambda: any(r["text"] == UNSURE for r in _reports(stack)), timeout=10)
    (report,) = [r for r in _reports(stack) if r["text"] == UNSURE]
    assert (report["route"], report["decided_route"], report["source"]) == (
        "compute",
        "cortex",
        "tool_call",
    )
    assert report["verdicts"] == []  # not an outcome for adaptive thresholds
    assert wait_until(lambda: _outcomes(stack).get("reported") == 1.0)
    # L0 learns it at its next refresh: the request now routes to the server the agent used
    # (the cache key carries a digest of what L0 learned: no cached escalation answers)
    assert wait_until(lambda: _post_route(stack, UNSURE)["route"] == "compute", timeout=30)


@pytest.mark.asyncio
async def test_a_tools_list_selection_is_followed_like_a_route_answer(
    stack: dict[str, Any],
) -> None:
    before = _outcomes(stack).get("reported", 0.0)
    async with agent(f"{stack['base']}/mcp") as session:
        listed = await names(session, LISTED)
        # Unsure: the tools of the routes L0 ranked highest (both servers), not one route's.
        assert {name.split("__")[0] for name in listed[1:]} == {"network", "compute"}
        assert not (await session.call_tool("compute__start_vm", {})).is_error
        await names(session, "take a snapshot of vm 104")  # the next request settles it
    assert wait_until(lambda: _outcomes(stack).get("reported", 0.0) == before + 1.0)
    assert wait_until(lambda: any(r["text"] == LISTED for r in _reports(stack)), timeout=10)
    (report,) = [r for r in _reports(stack) if r["text"] == LISTED]
    assert (report["route"], report["decided_route"], report["source"]) == (
        "compute",
        "cortex",
        "tool_call",
    )


@pytest.mark.asyncio
async def test_calls_to_two_servers_teach_nothing(stack: dict[str, Any]) -> None:
    before = _outcomes(stack)
    decision = await _unsure_then_call(
        stack, MIXED, "network__list_clients", "compute__storage_usage"
    )
    assert decision["route"] == "cortex" and set(decision["tools_from"]) == {"network", "compute"}
    # counted as the second route call settles it, before that call is answered
    after = _outcomes(stack)
    assert after.get("several_routes", 0.0) - before.get("several_routes", 0.0) == 1.0
    assert after.get("reported", 0.0) == before.get("reported", 0.0)
    assert [r for r in _reports(stack) if r["text"] == MIXED] == []


@pytest.mark.asyncio
async def test_switched_off_live_nothing_is_followed(stack: dict[str, Any]) -> None:
    new_hash = _write(stack["folder"], stack["config"], learn=False)
    assert wait_until(lambda: _get(stack, "/v1/config").json()["config_hash"] == new_hash)
    assert _get(stack, "/v1/config").json()["api"]["learn_from_tool_calls"] is False
    before = _outcomes(stack)
    decision = await _unsure_then_call(stack, OFF, "compute__start_vm")
    assert decision["route"] == "cortex" and "compute" in decision["tools_from"]
    assert [r for r in _reports(stack) if r["text"] == OFF] == []
    assert _outcomes(stack) == before
