"""``samples/mcp`` as the README runs it: ``router-mesh local`` starts the two sample MCP
servers beside the router (``--also``), the routes' evidence is the servers' tools alone,
the seed's requests are decided from it, the router as an MCP server hands an agent only
the chosen server's tools, a server that stops answering makes its requests fail open
and comes back, and SIGTERM stops the servers with the router."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support import free_port, start_local, wait_local_ready, wait_until

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def _pid_of(command: str) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"sample-mcp" in argv and command.encode() in argv:
            return int(entry.name)
    return None


def _sample(folder: Path, ports: dict[str, int]) -> Path:
    """samples/mcp with the servers on ``ports`` and quick health checks."""
    folder.mkdir(parents=True)
    (folder / "routermesh.yaml").write_text((REPO / "samples/mcp/routermesh.yaml").read_text())
    table = yaml.safe_load((REPO / "samples/mcp/routetable.yaml").read_text())
    for route in table["spec"]["routes"]:
        route["target"]["url"] = f"http://127.0.0.1:{ports[route['name']]}/mcp"
        route["target"]["mcp"] = {"pingSeconds": 1, "timeoutMs": 500}
    (folder / "routetable.yaml").write_text(yaml.safe_dump(table, sort_keys=False))
    return folder


def test_the_mcp_sample_routes_by_discovered_tools_and_fails_open(tmp_path: Path) -> None:
    ports = {"network": free_port(), "compute": free_port()}
    files = _sample(tmp_path / "mcp", ports)
    port = free_port()
    also = [
        f"router-mesh sample-mcp {name} --port {ports[name]}" for name in ("network", "compute")
    ]
    local, stdout, stderr = start_local(files, port, tmp_path, "--also", also[0], "--also", also[1])
    try:
        wait_local_ready(local, stdout, stderr, timeout=300)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            report = client.get("/readyz").json()["mcp"]
            assert (report["network"]["tools"], report["compute"]["tools"]) == (9, 9)
            assert report["network"]["server"] == "homelab-network 1.0.0"

            def route(message: str) -> dict[str, object]:
                answer: dict[str, object] = client.post(
                    "/v1/route", json={"message": message}
                ).json()
                return answer

            assert route("show me connected clients")["route"] == "network"
            assert route("take a snapshot of vm 104")["route"] == "compute"
            multi = route("check network and spin up test VM")
            assert (multi["route"], multi["escalation_reason"]) == ("cortex", "multi_step")
            assert multi["plan"] == ["network", "compute"]

            compute = _pid_of(str(ports["compute"]))
            assert compute is not None
            os.kill(compute, signal.SIGSTOP)  # hung: it accepts, never answers
            try:
                assert wait_until(
                    lambda: not client.get("/readyz").json()["mcp"]["compute"]["available"],
                    timeout=30,
                )
                down = route("start vm 101")
                assert (down["route"], down["escalation_reason"], down["unavailable"]) == (
                    "cortex",
                    "target_unavailable",
                    "compute",
                )
            finally:
                os.kill(compute, signal.SIGCONT)
            assert wait_until(
                lambda: client.get("/readyz").json()["mcp"]["compute"]["available"], timeout=30
            )
            assert route("start vm 101")["route"] == "compute"
        servers = [_pid_of(str(ports[name])) for name in ("network", "compute")]
        local.send_signal(signal.SIGTERM)
        assert local.wait(timeout=60) == 0
        assert all(pid is not None for pid in servers)
        assert wait_until(lambda: all(_pid_of(str(p)) is None for p in ports.values()), 30)
    finally:
        if local.poll() is None:
            local.kill()
            local.wait()
