"""A route's MCP server watched for real: the SDK's server on loopback, the router's
:class:`ServerWatch` and :class:`Discovery` against it. Discovery (handshake, every page,
the bearer token), ``tools/list_changed``, a server going down and coming back, an
oversized list, a malformed one, a failing one (the last good list stays)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from routermesh.runtime.contract.config import McpConfig
from routermesh.runtime.mcp_watch import ServerWatch
from routermesh.runtime.metrics import RouterMetrics
from tests.mcp_servers import ServerThread, ToolServer, raw_tools_app, tool

NETWORK = [
    tool("list_clients", "List the clients connected to the Wi-Fi and the LAN.", site="Site"),
    tool("block_client", "Block a client device from the network.", mac="MAC address"),
    tool("restart_device", "Restart an access point or a switch.", device="Device name"),
    tool("create_vlan", "Create a VLAN with an id and a subnet.", vlan="VLAN id"),
    tool("wifi_networks", "List the Wi-Fi networks (SSIDs) and their settings."),
]


async def until(predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
    """Wait for ``predicate`` (an observable state), polling the event loop."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def settings(**changes: object) -> McpConfig:
    base = {"refresh_seconds": 86_400.0, "ping_seconds": 1.0, "timeout_ms": 2_000}
    return McpConfig.model_validate(base | changes)


@pytest_asyncio.fixture
async def network() -> AsyncIterator[tuple[ToolServer, ServerThread]]:
    server = ToolServer("network", NETWORK, page_size=2)
    thread = await asyncio.to_thread(ServerThread(server.app()).start)
    yield server, thread
    await asyncio.to_thread(thread.stop)


def watch_of(url: str, config: McpConfig, changes: list[int] | None = None) -> ServerWatch:
    seen = changes if changes is not None else []
    return ServerWatch("network", url, config, RouterMetrics(), on_tools=lambda: seen.append(1))


@pytest.mark.asyncio
async def test_every_page_is_listed_with_the_bearer_token_and_the_tools_are_clean(
    network: tuple[ToolServer, ServerThread], tmp_path: Path
) -> None:
    server, thread = network
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    changes: list[int] = []
    watch = ServerWatch(
        "network",
        thread.url,
        settings(credentials_file=str(token)),
        RouterMetrics(),
        on_tools=lambda: changes.append(1),
        token=lambda: token.read_text().strip(),
    )
    watch.start()
    try:
        assert await until(lambda: len(watch.status.tools) == 5)
        assert [t.name for t in watch.status.tools] == [
            "list_clients",
            "block_client",
            "restart_device",
            "create_vlan",
            "wifi_networks",
        ]
        assert server.list_calls == 3  # pages of 2, 2 and 1
        assert watch.status.tools[0].description == (
            "List the clients connected to the Wi-Fi and the LAN."
        )
        assert watch.status.tools[0].parameters == ("site: Site",)
        assert watch.status.server == "network 1.0.0"
        assert server.authorizations == ["Bearer s3cret"]
        assert watch.status.available and watch.status.last_error is None
        assert changes == [1]
    finally:
        await watch.stop()


@pytest.mark.asyncio
async def test_list_changed_rereads_the_tools_at_once(
    network: tuple[ToolServer, ServerThread],
) -> None:
    server, thread = network
    watch = watch_of(thread.url, settings(health=False))
    watch.start()
    try:
        assert await until(lambda: len(watch.status.tools) == 5)
        new = [*NETWORK, tool("speed_test", "Run an internet speed test.")]
        # The notice rides the session's event stream, which opens after the handshake:
        # announce until the watch has read the new list (a refresh is a day away).
        for _ in range(100):
            await asyncio.to_thread(thread.run, lambda: server.set_tools(new))
            if await until(lambda: len(watch.status.tools) == 6, timeout=0.3):
                break
        assert [t.name for t in watch.status.tools][-1] == "speed_test"
    finally:
        await watch.stop()


@pytest.mark.asyncio
async def test_a_server_that_goes_down_makes_its_route_unavailable_until_it_is_back(
    network: tuple[ToolServer, ServerThread],
) -> None:
    thread = network[1]
    metrics = RouterMetrics()
    watch = ServerWatch(
        "network", thread.url, settings(failures_to_unavailable=2), metrics, on_tools=lambda: None
    )
    watch.start()
    try:
        assert await until(lambda: len(watch.status.tools) == 5)
        await asyncio.to_thread(thread.stop)
        assert await until(lambda: not watch.status.available)
        assert watch.status.failures >= 2 and watch.status.last_error
        assert len(watch.status.tools) == 5  # the last good list stays
        assert metrics.mcp_available.labels(route="network")._value.get() == 0
        again = ServerThread(ToolServer("network", NETWORK).app(), port=thread.port)
        await asyncio.to_thread(again.start)
        try:
            assert await until(lambda: watch.status.available)
            assert metrics.mcp_available.labels(route="network")._value.get() == 1
        finally:
            await asyncio.to_thread(again.stop)
    finally:
        await watch.stop()


@pytest.mark.asyncio
async def test_a_server_that_never_answers_is_unavailable_after_its_failures() -> None:
    watch = watch_of("http://127.0.0.1:9/mcp", settings(failures_to_unavailable=2))
    watch.start()
    try:
        assert await until(lambda: not watch.status.available)
        assert watch.settled.is_set() and watch.status.tools == ()
        assert "ConnectError" in (watch.status.last_error or "")
    finally:
        await watch.stop()


@pytest.mark.asyncio
async def test_an_oversized_list_is_cut_to_the_caps_and_says_so() -> None:
    many = [tool(f"tool_{i:03d}", f"Tool number {i} does a thing.") for i in range(120)]
    server = ToolServer("big", many, page_size=40)
    thread = await asyncio.to_thread(ServerThread(server.app()).start)
    watch = watch_of(thread.url, settings(max_tools=10, health=False))
    wordy = [tool(f"wordy_{i}", "word " * 400) for i in range(10)]
    wordy_server = ToolServer("wordy", wordy)
    wordy_thread = await asyncio.to_thread(ServerThread(wordy_server.app()).start)
    wordy_watch = watch_of(wordy_thread.url, settings(max_text_bytes=3_000, health=False))
    watch.start()
    wordy_watch.start()
    try:
        assert await until(lambda: watch.status.refreshed_at is not None)
        assert [t.name for t in watch.status.tools] == [f"tool_{i:03d}" for i in range(10)]
        assert server.list_calls == 2  # stops reading once well past the cap
        assert watch.status.notes == (
            "70 tools over maxTools (10) dropped",
            "stopped reading after 2 pages; the server lists more",
        )
        assert await until(lambda: wordy_watch.status.refreshed_at is not None)
        kept = wordy_watch.status.tools
        assert len(kept) == 2  # 1,024 characters of description each, 3,000 bytes in all
        assert all(len(t.description) <= 1024 for t in kept)
        assert wordy_watch.status.notes == ("8 tools over maxTextBytes (3000) dropped",)
    finally:
        await watch.stop()
        await wordy_watch.stop()
        await asyncio.to_thread(thread.stop)
        await asyncio.to_thread(wordy_thread.stop)


@pytest.mark.asyncio
async def test_a_malformed_list_is_an_error_and_the_server_stays_available() -> None:
    thread = await asyncio.to_thread(
        ServerThread(raw_tools_app(lambda: {"tools": "not a list"})).start
    )
    watch = watch_of(thread.url, settings())
    watch.start()
    try:
        assert await until(lambda: watch.status.last_error is not None)
        assert watch.status.last_error.startswith("tools/list failed: ValidationError")
        assert watch.status.tools == ()
        assert watch.status.server == "raw 0"
        # Pings still answer: a bad list is not a server down.
        await asyncio.sleep(0)
        assert await until(lambda: watch.status.attempts == 1 and watch.status.available)
    finally:
        await watch.stop()
        await asyncio.to_thread(thread.stop)


@pytest.mark.asyncio
async def test_a_tool_listed_twice_is_kept_once() -> None:
    good = {
        "name": "list_clients",
        "description": "List clients.",
        "inputSchema": {"type": "object"},
    }
    thread = await asyncio.to_thread(
        ServerThread(raw_tools_app(lambda: {"tools": [good, good]})).start
    )
    watch = watch_of(thread.url, settings(health=False))
    watch.start()
    try:
        assert await until(lambda: watch.status.refreshed_at is not None)
        assert [t.name for t in watch.status.tools] == ["list_clients"]
        assert watch.status.notes == ("1 duplicate tool names skipped",)
    finally:
        await watch.stop()
        await asyncio.to_thread(thread.stop)


@pytest.mark.asyncio
async def test_a_failing_refresh_keeps_the_last_good_list(
    network: tuple[ToolServer, ServerThread],
) -> None:
    server, thread = network
    watch = watch_of(thread.url, settings(health=False))
    watch.start()
    try:
        assert await until(lambda: len(watch.status.tools) == 5)
        server.fail_list = True
        for _ in range(100):
            await asyncio.to_thread(thread.run, lambda: server.set_tools([]))
            if await until(lambda: watch.status.last_error is not None, timeout=0.3):
                break
        assert (watch.status.last_error or "").startswith("tools/list failed")
        assert len(watch.status.tools) == 5
    finally:
        await watch.stop()
