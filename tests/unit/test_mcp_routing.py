"""Routes built from what MCP servers say they do, served through the orchestrator's API
with the real L0 (packaged encoder) and real MCP servers on loopback: discovered tools
as the only evidence, a changed tool list rebuilding the layers under a new route-table
version, a server down failing its requests open (escalation or fallback route) and
coming back, and a server whose tool description tries to steer routing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from routermesh.runtime.app import create_app
from routermesh.runtime.contract.config import (
    CONFIG_FILENAME,
    RouterConfig,
)
from routermesh.runtime.packaged import materialize
from routermesh.runtime.router import Router
from tests.mcp_servers import COMPUTE, NETWORK, STEERING, ServerThread, ToolServer, mcp_config, tool
from tests.support import wait_until

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / ".cache/models"


@pytest.fixture(scope="module")
def encoder_path() -> str:
    files = materialize(MODELS / "packaged", ["minilm-l6-onnx-int8", "minilm-l6-tokenizer"])
    return str(files["minilm-l6-onnx-int8"].parent.relative_to(MODELS))


def publish(directory: Path, config: RouterConfig) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILENAME).write_text(config.to_json())


@pytest.fixture
def servers() -> Iterator[dict[str, tuple[ToolServer, ServerThread]]]:
    network = ToolServer("network", [*NETWORK, STEERING])
    compute = ToolServer("compute", COMPUTE)
    running = {
        "network": (network, ServerThread(network.app()).start()),
        "compute": (compute, ServerThread(compute.app()).start()),
    }
    yield running
    for _, thread in running.values():
        thread.stop()


def route(client: TestClient, message: str) -> dict[str, Any]:
    answer: dict[str, Any] = client.post("/v1/route", json={"message": message}).json()
    return answer


def test_discovered_tools_are_the_routes_evidence_and_a_steering_description_is_data(
    encoder_path: str,
    servers: dict[str, tuple[ToolServer, ServerThread]],
    tmp_path: Path,
) -> None:
    urls = {name: thread.url for name, (_, thread) in servers.items()}
    config = mcp_config(encoder_path, urls)
    publish(tmp_path, config)
    with TestClient(create_app(Router(tmp_path, models_dir=MODELS, poll_seconds=0.05))) as client:
        assert wait_until(lambda: client.get("/readyz").status_code == 200, timeout=60)
        report = client.get("/readyz").json()["mcp"]
        assert report["network"]["tools"] == 6 and report["compute"]["tools"] == 5
        assert report["compute"]["tool_names"][:2] == ["start_vm", "snapshot_vm"]
        assert report["compute"]["available"] is True and report["compute"]["refreshed_at"]
        running = client.get("/v1/config").json()
        assert running["config_hash"] == config.config_hash
        assert running["route_table_version"] != config.route_table_version
        assert running["routes"][1]["tools"][1] == "snapshot_vm"

        assert route(client, "who is connected to the wifi right now")["route"] == "network"
        assert route(client, "take a snapshot of vm 104")["route"] == "compute"
        assert route(client, "migrate the build vm to node pve2")["route"] == "compute"
        weather = route(client, "what's the weather tomorrow in Lisbon")
        assert (weather["route"], weather["escalation_reason"]) == ("cortex", "out_of_scope")


def test_a_changed_tool_list_rebuilds_the_routes_under_a_new_version(
    encoder_path: str,
    servers: dict[str, tuple[ToolServer, ServerThread]],
    tmp_path: Path,
) -> None:
    urls = {name: thread.url for name, (_, thread) in servers.items()}
    publish(tmp_path, mcp_config(encoder_path, urls))
    compute, thread = servers["compute"]
    message = "renew the TLS certificate of the reverse proxy"
    with TestClient(create_app(Router(tmp_path, models_dir=MODELS, poll_seconds=0.05))) as client:
        assert wait_until(lambda: client.get("/readyz").status_code == 200, timeout=60)
        before = client.get("/v1/config").json()["route_table_version"]
        assert route(client, message)["route"] == "cortex"
        assert route(client, message)["cache_hit"] is True
        certificate = tool("renew_certificate", "Renew the TLS certificate of a proxy host.")

        def applied() -> bool:
            return client.get("/v1/config").json()["route_table_version"] != before

        for _ in range(100):  # announced until the router has read it (see test_mcp_watch)
            thread.run(lambda: compute.set_tools([*COMPUTE, certificate]))
            if wait_until(applied, timeout=0.5):
                break
        assert applied()
        answer = route(client, message)
        assert (answer["route"], answer["cache_hit"]) == ("compute", False)


def test_a_server_down_fails_its_requests_open_until_it_is_back(
    encoder_path: str,
    servers: dict[str, tuple[ToolServer, ServerThread]],
    tmp_path: Path,
) -> None:
    urls = {name: thread.url for name, (_, thread) in servers.items()}
    publish(tmp_path, mcp_config(encoder_path, urls, fallback={"compute": "network"}))
    network_thread = servers["network"][1]
    compute_thread = servers["compute"][1]
    with TestClient(create_app(Router(tmp_path, models_dir=MODELS, poll_seconds=0.05))) as client:
        assert wait_until(lambda: client.get("/readyz").status_code == 200, timeout=60)
        assert route(client, "list the clients on the wifi")["route"] == "network"

        network_thread.stop()
        assert wait_until(lambda: not client.get("/readyz").json()["mcp"]["network"]["available"])
        answer = route(client, "list the clients on the wifi")
        assert answer["route"] == "cortex"
        assert answer["escalation_reason"] == "target_unavailable"
        assert answer["unavailable"] == "network"
        assert client.get("/readyz").status_code == 200  # the router itself is fine

        compute_thread.stop()  # its fallback (network) is down too: it escalates
        assert wait_until(lambda: not client.get("/readyz").json()["mcp"]["compute"]["available"])
        assert route(client, "start vm 101")["escalation_reason"] == "target_unavailable"

        again = ServerThread(ToolServer("network", NETWORK).app(), port=network_thread.port)
        again.start()
        try:
            assert wait_until(lambda: client.get("/readyz").json()["mcp"]["network"]["available"])
            fallback = route(client, "start vm 101")  # compute still down: its fallback
            assert (fallback["route"], fallback["unavailable"]) == ("network", "compute")
            assert fallback["escalation_reason"] is None
            back = route(client, "list the clients on the wifi")
            assert (back["route"], back["unavailable"]) == ("network", None)
            metrics = client.get("/metrics").text
            assert 'router_target_unavailable_total{action="escalated",route="network"} 1.0' in (
                metrics
            )
            assert 'router_target_unavailable_total{action="fallback",route="compute"} 1.0' in (
                metrics
            )
            assert 'router_mcp_available{route="network"} 1.0' in metrics
            assert 'router_mcp_available{route="compute"} 0.0' in metrics
        finally:
            again.stop()
