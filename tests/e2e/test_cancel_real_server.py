"""Work the orchestrator gives up on is cancelled in the real model server: the cascade's
generative layer times out on ``router-mesh serve-model``'s llama.cpp server (the packaged
SmolLM2-135M, one thread) while the server is still reading the prompt; the closed
connection makes llama.cpp cancel the task and free its slot before the prompt is done.

llama.cpp looks at a waiting client's connection about once a second and drops a task
between two batches (512 tokens), so the judge prompt here is about the longest a layer
sends (eight candidates, each with its description and an example: over 800 tokens); on
2 cores reading it takes seconds, and the cancellation lands after the first batch."""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from routermesh.runtime.cache import MemoryCache
from routermesh.runtime.cascade import Cascade
from routermesh.runtime.contract.config import LayerConfig, ModelRef, RouterConfig
from routermesh.runtime.decision import Candidate, Reason, Verdict
from routermesh.runtime.generative import GenerativeLayer
from routermesh.runtime.metrics import RouterMetrics
from routermesh.runtime.model_server import server_command
from routermesh.runtime.packaged import PACKAGED, materialize
from tests.real_pod import LLAMA_SERVER, PACKAGED_DIR
from tests.support import free_port, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        LLAMA_SERVER is None,
        reason="llama-server is not built: run `bash scripts/build-llama-server.sh`",
    ),
]

ROUTES = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")
CANCELLED = re.compile(r"cancel task, id_task = (\d+)")
RELEASED = re.compile(r"task (\d+) \| stop processing: n_tokens = (\d+)")


def _config(port: int) -> RouterConfig:
    model = materialize(PACKAGED_DIR, ["smollm2-135m"])["smollm2-135m"]
    layer = LayerConfig(
        name="l1",
        engine="llamacpp",
        model=ModelRef(
            uri=model.resolve().as_uri(), sha256=PACKAGED["smollm2-135m"].sha256, path=model.name
        ),
        url=f"http://127.0.0.1:{port}",
        threshold=0.85,
        timeout_ms=300,
        candidates=8,
        context_tokens=8192,
    )
    routes = [
        {"name": name, "description": f"{name}: " + "manages servers, disks and backups " * 6}
        for name in ROUTES
    ]
    return RouterConfig.model_validate(
        {"mesh": {"name": "t"}, "routes": routes, "escalation": {}, "layers": [layer]}
    ).sealed()


class Server:
    """``serve-model``'s llama.cpp command for the layer, logging to a file."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.config = _config(self.port)
        self.log_file = tmp / "llama-server.log"
        command = server_command(
            self.config, "l1", PACKAGED_DIR, binary=LLAMA_SERVER, port=self.port, threads=1
        )
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(command.argv, stdout=log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == httpx.codes.OK
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path)
    try:
        assert wait_until(s.healthy, timeout=60), s.log()[-2000:]
        yield s
    finally:
        s.stop()


class Ranking:
    """Stands in for L0: abstains, ranking every route with an example for the judge."""

    name = "l0"

    async def classify(self, message: str) -> Verdict:
        ranked = tuple(
            Candidate(r, f"please ask {r} to look after volume {r} " * 4) for r in ROUTES
        )
        return Verdict(None, 0.0, reason=Reason.LOW_CONFIDENCE, candidates=ranked)

    async def ready(self) -> bool:
        return True

    async def warm(self) -> None:
        return None


def test_a_call_the_orchestrator_gave_up_on_is_cancelled_in_llama_cpp(server: Server) -> None:
    message = "the nightly backup of the storage array failed twice " * 7

    async def decide() -> tuple[str | None, int]:
        async with httpx.AsyncClient(trust_env=False) as client:
            layer = GenerativeLayer(server.config.layers[0], server.config, client)
            candidates = (await Ranking().classify(message)).candidates
            prompt = layer.prompt(message, candidates)
            tokens = await client.post(f"{server.url}/tokenize", json={"content": prompt})
            cascade = Cascade(server.config, [Ranking(), layer], MemoryCache(), RouterMetrics())
            decision = await cascade.decide(message)
            return decision.escalation_reason, len(tokens.json()["tokens"])

    reason, prompt_tokens = asyncio.run(decide())
    assert reason == "timeout"  # 300 ms: the server is still reading the prompt
    assert prompt_tokens > 512  # more than one batch to read

    assert wait_until(lambda: CANCELLED.search(server.log()) is not None, timeout=30), server.log()[
        -3000:
    ]
    task = CANCELLED.search(server.log()).group(1)  # type: ignore[union-attr]
    assert wait_until(lambda: f"task {task} | stop processing" in server.log(), timeout=30)
    released = dict(RELEASED.findall(server.log()))
    assert int(released[task]) < prompt_tokens  # stopped before the prompt was read
    slots = httpx.get(f"{server.url}/slots", timeout=10).json()
    assert [slot["is_processing"] for slot in slots] == [False]
