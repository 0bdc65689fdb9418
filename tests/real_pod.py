"""The router pod's containers as local processes, through their real entry points:
``router-mesh serve-model`` (llama.cpp with the packaged models) per generative layer and
``router-mesh orchestrator``; each process logs to ``<tmp>/logs/<name>.log``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.support import llama_server

REPO = Path(__file__).resolve().parents[1]
PACKAGED_DIR = REPO / ".cache/models/packaged"
CLI = [sys.executable, "-m", "routermesh.cli"]
LLAMA_SERVER = llama_server()


class PodProcesses:
    def __init__(self, tmp: Path, config_dir: Path, ports: dict[str, int]) -> None:
        self.config_dir = config_dir
        self.ports = ports
        self.logs = tmp / "logs"
        self.logs.mkdir(exist_ok=True)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str]) -> None:
        log = (self.logs / f"{name}.log").open("ab")
        env = {**os.environ, "ROUTER_MESH_LLAMA_SERVER": str(LLAMA_SERVER)}
        self.processes[name] = subprocess.Popen(
            [*CLI, *args], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO
        )

    def start_layer(self, layer: str) -> None:
        self.start(
            layer,
            [
                "serve-model",
                "--layer",
                layer,
                "--config-dir",
                str(self.config_dir),
                "--models-dir",
                str(PACKAGED_DIR),
                "--port",
                str(self.ports[layer]),
                "--threads",
                "1",
            ],
        )

    def start_orchestrator(self, port: int, ops_port: int | None = None) -> None:
        ops = ["--ops-port", str(ops_port)] if ops_port is not None else []
        self.start(
            "orchestrator",
            [
                "orchestrator",
                "--config-dir",
                str(self.config_dir),
                "--models-dir",
                str(PACKAGED_DIR),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                *ops,
                "--poll-seconds",
                "0.2",
            ],
        )

    def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        process.kill()  # SIGKILL: serve-model execs llama-server, so this is the server
        process.wait(timeout=20)

    def wait_until_ready(
        self, readyz: Callable[[], tuple[bool, dict[str, Any]]], timeout: float = 240
    ) -> dict[str, Any]:
        """Poll ``readyz`` (ready?, body) until ready; fail at once if a process exits."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise AssertionError(f"{name} exited: {self.log(name)[-2000:]}")
            try:
                ready, last = readyz()
                if ready:
                    return last
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"not ready after {timeout} s: {last}")

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)  # a stopped process cannot terminate
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
