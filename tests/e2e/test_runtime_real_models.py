"""The router pod as local processes, through its real entry points: two
``router-mesh serve-model`` llama.cpp servers with the packaged SmolLM2-135M (L1) and
Qwen2.5-Coder-0.5B (L2 stand-in), and ``router-mesh orchestrator`` over the seed's
homelab RouteTable, with a real redis-server as the decision cache. Real messages are
routed; the assertions are about behaviour (valid labels, fail-open, cache, metrics),
not about speed or a given accuracy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from routermesh.runtime.contract.config import CONFIG_FILENAME, CacheConfig, ModelRef, RouterConfig
from routermesh.runtime.packaged import PACKAGED, materialize
from tests.real_pod import LLAMA_SERVER, PACKAGED_DIR, PodProcesses
from tests.support import RedisProcess, free_port, homelab_rendered, needs_redis

pytestmark = [pytest.mark.e2e, needs_redis]


needs_llama_server = pytest.mark.skipif(
    LLAMA_SERVER is None,
    reason="llama-server is not built: run `bash scripts/build-llama-server.sh` "
    "(scripts/test.sh does)",
)


def local_config(models: dict[str, Path], ports: dict[str, int], redis_url: str) -> RouterConfig:
    """The seed sample with its layers on the packaged files (``file://`` URIs, as local
    mode writes them) and the model servers on free ports."""
    config = homelab_rendered()
    files = {"l1": models["smollm2-135m"], "l2": models["qwen2.5-coder-0.5b"]}
    shas = {"l1": PACKAGED["smollm2-135m"].sha256, "l2": PACKAGED["qwen2.5-coder-0.5b"].sha256}
    layers = tuple(
        layer.model_copy(
            update={
                "url": f"http://127.0.0.1:{ports[layer.name]}",
                "model": ModelRef(
                    uri=files[layer.name].resolve().as_uri(),
                    sha256=shas[layer.name],
                    path=files[layer.name].name,
                ),
                # Loaded CI machines with 2 cores: generous budgets; speed is a benchmark.
                "timeout_ms": 5000,
                "agree_with": None,  # no L0 here
                # On (they are off by default), judging all four routes without L0.
                "enabled": True,
                "candidates": 4,
            }
        )
        for layer in config.layers
        # The generative layers only: L0 runs in the orchestrator and has its own tests
        # (tests/unit/test_embedding.py; the whole cascade in tests/e2e/test_local_mode.py).
        if layer.kind == "generative"
    )
    escalation = config.escalation.model_copy(update={"credentials_file": None})
    return config.model_copy(
        update={
            "layers": layers,
            "escalation": escalation,
            "cache": CacheConfig(backend="redis", redis_url=redis_url),
        }
    ).sealed()


class Pod:
    """The three containers of the router pod, as processes."""

    def __init__(self, tmp: Path, redis_url: str) -> None:
        self.models = materialize(PACKAGED_DIR)
        self.ports = {"l1": free_port(), "l2": free_port(), "orchestrator": free_port()}
        self.config_dir = tmp / "config"
        self.config_dir.mkdir()
        self.config = local_config(self.models, self.ports, redis_url)
        (self.config_dir / CONFIG_FILENAME).write_text(self.config.to_json())
        self.pod = PodProcesses(tmp, self.config_dir, self.ports)
        for layer in ("l1", "l2"):
            self.pod.start_layer(layer)
        self.pod.start_orchestrator(self.ports["orchestrator"])
        self.url = f"http://127.0.0.1:{self.ports['orchestrator']}"
        self.http = httpx.Client(base_url=self.url, timeout=60, trust_env=False)

    def wait_ready(self, timeout: float = 240) -> dict[str, Any]:
        def check() -> tuple[bool, dict[str, Any]]:
            response = self.http.get("/readyz")
            return response.status_code == 200, response.json()

        return self.pod.wait_until_ready(check, timeout)

    def route(self, message: str) -> dict[str, Any]:
        response = self.http.post("/v1/route", json={"message": message})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def stop(self) -> None:
        self.http.close()
        self.pod.stop()


@pytest.fixture(scope="module")
def pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pod]:
    if LLAMA_SERVER is None:
        pytest.skip("llama-server is not built: run `bash scripts/build-llama-server.sh`")
    tmp = tmp_path_factory.mktemp("pod")
    redis = RedisProcess(tmp)
    redis.start()
    pod = Pod(tmp, redis.url)
    try:
        pod.wait_ready()
        yield pod
    finally:
        pod.stop()
        redis.stop()


MESSAGES = [
    "restart the access point in the living room",
    "which devices are connected to the guest wifi",
    "take a snapshot of vm 104",
    "start the ubuntu-dev virtual machine",
    "show me the cpu dashboard for the last hour",
    "why is the grafana panel empty",
    "search the logs for errors from nginx",
    "how many 500 errors did elasticsearch index yesterday",
]


@needs_llama_server
def test_real_models_route_real_messages_to_valid_labels(pod: Pod) -> None:
    labels = set(pod.config.route_names)
    answers = [pod.route(message) for message in MESSAGES]
    for answer in answers:
        assert answer["route"] in labels
        assert answer["layer"] in {"l1", "l2", "escalated"}
        assert 0.0 <= answer["confidence"] <= 1.0
        assert answer["config_hash"] == pod.config.config_hash
    metrics = pod.http.get("/metrics").text
    # The real servers answered every request in a shape the router reads: no transport,
    # HTTP or parse failure on either layer (an unsure or off-label answer is allowed).
    for reason in ("timeout", "connection_error", "http_error", "parse_error", "layer_error"):
        assert f'reason="{reason}"' not in metrics, metrics
    assert "router_decisions_total" in metrics


@needs_llama_server
def test_repeated_messages_come_from_the_redis_cache(pod: Pod) -> None:
    first = pod.route("list all DHCP leases on the main LAN")
    again = pod.route("List all DHCP leases on the main LAN ")
    # An escalation is cached when every layer answered (unsure, or a judge said "none" or
    # "several"), not after a failure.
    failures = {"timeout", "connection_error", "http_error", "parse_error", "layer_error"}
    if first["layer"] == "escalated" and first["escalation_reason"] in failures:
        pytest.fail(f"a model layer failed: {first}")
    assert (again["layer"], again["route"]) == ("cache", first["route"])
    assert again["confidence"] == pytest.approx(first["confidence"])


@needs_llama_server
def test_l1_killed_fails_open_to_l2_then_escalation(pod: Pod) -> None:
    pod.pod.kill("l1")
    answer = pod.route("open port 8443 and forward it to the nas")
    assert answer["layer"] in {"l2", "escalated"}
    metrics = pod.http.get("/metrics").text
    assert 'router_layer_errors_total{layer="l1",reason="connection_error"}' in metrics
    ready = pod.http.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["l1"] is False
