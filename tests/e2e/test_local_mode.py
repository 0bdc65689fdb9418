"""``router-mesh local`` on the seed sample, as a user runs it: the hub is unreachable (a
closed HF_ENDPOINT), so the packaged models stand in; real llama.cpp servers and the
orchestrator start as children; real messages are routed over HTTP; a threshold edited
in the YAML reloads live without restarting a model server; SIGTERM stops everything and
leaves no child process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support import consecutive_free_ports, free_port, llama_server, wait_until

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
    samples = tmp_path / "homelab"
    shutil.copytree(REPO / "samples/homelab", samples)
    port = consecutive_free_ports(3)
    env = {
        **os.environ,
        "ROUTER_MESH_LLAMA_SERVER": str(LLAMA_SERVER),
        "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}",  # nothing listens: unreachable
    }
    stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        local = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "routermesh.cli",
                "local",
                "-f",
                str(samples),
                "--port",
                str(port),
                "--models-dir",
                str(REPO / ".cache/models"),
                "--state-dir",
                str(tmp_path / "state"),
                "--threads",
                "1",
            ],
            stdout=out,
            stderr=err,
            env=env,
            cwd=REPO,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        ready = wait_until(
            lambda: "ready at" in stdout.read_text() or local.poll() is not None, timeout=400
        )
        assert ready and local.poll() is None, stderr.read_text()[-3000:]
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
