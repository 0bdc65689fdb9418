"""``router-mesh local`` as a user runs it: the hub is unreachable (a closed HF_ENDPOINT),
so the packaged models stand in; real llama.cpp servers and the orchestrator start as
children; real messages are routed over HTTP; a threshold edited in the YAML reloads
live without restarting a model server; SIGTERM stops everything and leaves no child
process. A table at the API's limits (64 routes x 50 examples) gets ready with both
generative layers on: their prompts are bounded, whatever the table."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support import (
    consecutive_free_ports,
    free_port,
    homelab_with_generative,
    llama_server,
    start_local,
    wait_local_ready,
    wait_until,
)

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


LLAMA_SERVER = llama_server()


def _children(pid: int) -> set[int]:
    """All descendants of ``pid`` (from /proc)."""
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        try:
            text = Path(f"/proc/{current}/task/{current}/children").read_text()
        except OSError:
            continue
        for child in map(int, text.split()):
            found.add(child)
            frontier.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(LLAMA_SERVER is None, reason="llama-server is not built (scripts/test.sh)")
def test_local_mode_routes_reloads_live_and_stops_cleanly(tmp_path: Path) -> None:
    samples = homelab_with_generative(tmp_path / "homelab")
    port = consecutive_free_ports(3)
    local, stdout, stderr = start_local(samples, port, tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_local_ready(local, stdout, stderr, timeout=400)
        assert f"ready at {url}" in stdout.read_text()
        log = stderr.read_text()
        assert '"event": "packaged_model", "layer": "l1"' in log
        assert "cannot be reached" in log

        with httpx.Client(base_url=url, timeout=60, trust_env=False) as client:
            assert client.get("/readyz").status_code == 200
            labels = {"unifi", "proxmox", "grafana", "elastic", "cortex"}
            for message in ("take a snapshot of vm 104", "why is the grafana panel empty"):
                answer = client.post("/v1/route", json={"message": message}).json()
                assert answer["route"] in labels
                assert answer["layer"] in {"l0", "l1", "l2", "escalated"}
            explained = client.post(
                "/v1/route",
                json={"message": "take a snapshot of vm 104", "explain": True, "all_layers": True},
            ).json()
            # L0 (the packaged MiniLM encoder in the orchestrator) first, then both servers.
            assert [t["layer"] for t in explained["trace"]] == ["l0", "l1", "l2"]
            assert explained["trace"][0]["route"] == "proxmox"

            before = client.get("/v1/config").json()
            servers = _children(local.pid)
            yaml_path = samples / "routermesh.yaml"
            yaml_path.write_text(yaml_path.read_text().replace("threshold: 0.85", "threshold: 0.3"))
            assert wait_until(
                lambda: client.get("/v1/config").json()["layers"][1]["threshold"] == 0.3,
                timeout=60,
            )
            after = client.get("/v1/config").json()
            assert after["config_hash"] != before["config_hash"]
            assert _children(local.pid) >= servers  # same model servers: no restart

        descendants = _children(local.pid)
        assert len(descendants) >= 3
        local.send_signal(signal.SIGTERM)
        assert local.wait(timeout=60) == 0
        assert wait_until(lambda: not any(_alive(pid) for pid in descendants), timeout=30)
    finally:
        if local.poll() is None:
            local.kill()
            local.wait()


def _largest_table(folder: Path) -> Path:
    """64 routes of 50 examples each (the API's limits), long descriptions and examples."""
    folder.mkdir(parents=True)
    services = [f"svc{i:02d}" for i in range(64)]
    routes = [
        {
            "name": name,
            "description": f"Service {name} of the lab: "
            + ", ".join(f"{name} task {t} and its reports" for t in range(12)),
            "examples": [
                f"please run task {j} on {name} for the team and send the results to the "
                f"{name} channel, then attach the logs of the last run of task {j} " + "x" * 60
                for j in range(50)
            ],
            "target": {"url": f"http://{name}.mcp.svc:8000/mcp"},
        }
        for name in services
    ]
    table = {
        "apiVersion": "routermesh.io/v1alpha1",
        "kind": "RouteTable",
        "metadata": {"name": "largest"},
        "spec": {"routes": routes},
    }
    mesh = {
        "apiVersion": "routermesh.io/v1alpha1",
        "kind": "RouterMesh",
        "metadata": {"name": "largest"},
        "spec": {
            "routeTables": {"names": ["largest"]},
            # Generous timeouts: the test asserts that the judges answer, not how fast.
            "layers": {
                "l1": {"enabled": True, "timeoutMs": 30000},
                "l2": {"enabled": True, "timeoutMs": 30000},
            },
        },
    }
    (folder / "mesh.yaml").write_text(yaml.safe_dump_all([mesh, table], sort_keys=False))
    return folder


@pytest.mark.skipif(LLAMA_SERVER is None, reason="llama-server is not built (scripts/test.sh)")
def test_a_table_of_64_routes_by_50_examples_gets_ready_with_every_layer(tmp_path: Path) -> None:
    files = _largest_table(tmp_path / "largest")
    port = consecutive_free_ports(3)
    local, stdout, stderr = start_local(files, port, tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_local_ready(local, stdout, stderr, timeout=600)
        with httpx.Client(base_url=url, timeout=120, trust_env=False) as client:
            readiness = client.get("/readyz")
            assert readiness.status_code == 200, readiness.text
            body = readiness.json()
            assert body["checks"] == {"config": True, "l0": True, "l1": True, "l2": True}
            assert body["problems"] == {}
            explained = client.post(
                "/v1/route",
                json={"message": "run task 7 on svc42 please", "explain": True, "all_layers": True},
            ).json()
            trace = {t["layer"]: t for t in explained["trace"]}
            assert trace["l0"]["route"] == "svc42"
            # Both judges answered a prompt with three candidates and their examples.
            for layer in ("l1", "l2"):
                assert trace[layer]["reason"] is None or trace[layer]["reason"] == "disagreement"
                assert trace[layer]["route"] is not None, trace
        assert "exceeds the available context size" not in stderr.read_text()
    finally:
        local.send_signal(signal.SIGTERM)
        try:
            local.wait(timeout=60)
        except subprocess.TimeoutExpired:
            local.kill()
            local.wait()


def _command_line(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def test_workers_share_the_port_and_each_keeps_its_own_cache(tmp_path: Path) -> None:
    port = free_port()
    # samples/homelab as shipped: L0 only, so no model server is started.
    local, stdout, stderr = start_local(REPO / "samples/homelab", port, tmp_path, "--workers", "2")
    try:
        wait_local_ready(local, stdout, stderr, timeout=300)
        workers = [
            pid
            for pid in _children(local.pid)
            if {"orchestrator", "--reuse-port"} <= set(_command_line(pid))
        ]
        assert len(workers) == 2
        answers = []
        for _ in range(31):
            # A new connection per request: the kernel picks a worker per connection.
            with httpx.Client(timeout=30.0, trust_env=False) as client:
                response = client.post(
                    f"http://127.0.0.1:{port}/v1/route",
                    json={"message": "show me connected clients"},
                )
            assert response.status_code == 200
            answers.append(response.json())
        assert {a["route"] for a in answers} == {"unifi"}
        # Each worker decides the message once and then answers it from its own cache (all
        # 31 connections landing on one worker has odds of 2^-30).
        assert sum(not a["cache_hit"] for a in answers) == 2
    finally:
        local.send_signal(signal.SIGTERM)
        local.wait(timeout=60)
    assert not any(_alive(pid) for pid in workers)
