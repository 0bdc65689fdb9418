"""Fault injection on the real local stack: ``router-mesh serve-model`` llama.cpp servers
with the packaged SmolLM2-135M (L1) and Qwen2.5-Coder-0.5B (L2), ``router-mesh
orchestrator`` (API port + operations port, bearer token), a real redis-server as the
cache and an escalation endpoint. Each fault runs under a steady stream of /v1/route
requests from a background client; for each, every one of those requests must succeed
(they escalate or come from a cache), the fault's reason is metered, /readyz tells the
truth, and clearing the fault brings the stack back without restarting the orchestrator.

Faults: L1 killed mid-load, L1 hung (SIGSTOP: accepts connections, never answers), L2
answering HTTP 500 and then garbage, Redis killed and restarted, the escalation endpoint
down, an invalid config pushed live, the config directory removed.

The tests share one stack and run in file order (each clears its own fault)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from routermesh.operator.reconcile import probe_readiness
from routermesh.runtime.contract.config import (
    ApiConfig,
    CacheConfig,
    ModelRef,
    RouterConfig,
)
from routermesh.runtime.contract.readiness import ReadinessReport
from routermesh.runtime.packaged import PACKAGED, materialize
from tests.real_pod import LLAMA_SERVER, PACKAGED_DIR, PodProcesses
from tests.support import (
    FakeModelServer,
    FakeTarget,
    RedisProcess,
    free_port,
    homelab_rendered,
    needs_redis,
    wait_until,
)
from tests.unit.test_orchestrator import publish

pytestmark = [pytest.mark.e2e, needs_redis]

TOKEN = "fault-test-token-4f1c2a"  # noqa: S105 - a test credential
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MESSAGE_NUMBERS = itertools.count(1)
WORDS = ["restart", "vm", "dashboard", "logs", "wifi", "snapshot", "panel", "index", "port"]


class Stack:
    """The router pod as processes, plus Redis and an escalation endpoint."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.redis = RedisProcess(tmp)
        self.redis.start()
        self.target = FakeTarget()
        self.target.start()
        self.models = materialize(PACKAGED_DIR)
        self.ports = {"l1": free_port(), "l2": free_port()}
        self.api_port, self.ops_port = free_port(), free_port()
        self.config_dir = tmp / "config"
        (tmp / "token").write_text(TOKEN + "\n")
        self.config = self.build_config()
        publish(self.config_dir, self.config)
        self.pod = PodProcesses(tmp, self.config_dir, self.ports)
        for layer in ("l1", "l2"):
            self.pod.start_layer(layer)
        self.pod.start_orchestrator(self.api_port, self.ops_port)
        self.api = httpx.Client(
            base_url=f"http://127.0.0.1:{self.api_port}", timeout=60, trust_env=False, headers=AUTH
        )
        self.ops = httpx.Client(
            base_url=f"http://127.0.0.1:{self.ops_port}", timeout=60, trust_env=False
        )

    def build_config(self, **changes: Any) -> RouterConfig:
        config = homelab_rendered()
        files = {"l1": self.models["smollm2-135m"], "l2": self.models["qwen2.5-coder-0.5b"]}
        layers = tuple(
            layer.model_copy(
                update={
                    "url": f"http://127.0.0.1:{self.ports[layer.name]}",
                    "model": ModelRef(
                        uri=files[layer.name].resolve().as_uri(),
                        sha256=PACKAGED[
                            "smollm2-135m" if layer.name == "l1" else "qwen2.5-coder-0.5b"
                        ].sha256,
                        path=files[layer.name].name,
                    ),
                    # Every request goes through both model layers (L1 never routes at 1.0),
                    # so a fault in either is met by every request. Budgets for 2 busy cores.
                    "threshold": 1.0 if layer.name == "l1" else layer.threshold,
                    "timeout_ms": 3000 if layer.name == "l1" else 5000,
                    "agree_with": None,  # no L0 here
                    # On (they are off by default), judging all four routes without L0.
                    "enabled": True,
                    "candidates": 4,
                }
            )
            for layer in config.layers
            if layer.kind == "generative"
        )
        routes = tuple(
            r.model_copy(update={"target": f"{self.target.url}/mcp"}) for r in config.routes
        )
        escalation = config.escalation.model_copy(
            update={"credentials_file": None, "target": f"{self.target.url}/mcp"}
        )
        return config.model_copy(
            update={
                "layers": layers,
                "routes": routes,
                "escalation": escalation,
                "cache": CacheConfig(backend="redis", redis_url=self.redis.url),
                "api": ApiConfig(token_file=str(self.tmp / "token")),
                **changes,
            }
        ).sealed()

    def readyz(self) -> dict[str, Any]:
        response = self.ops.get("/readyz")
        body: dict[str, Any] = response.json()
        body["status"] = response.status_code
        return body

    def wait_ready(self, timeout: float = 240) -> dict[str, Any]:
        """Ready, and nothing degraded (Redis answering)."""

        def check() -> tuple[bool, dict[str, Any]]:
            body = self.readyz()
            return body["status"] == 200 and not body["degraded"], body

        return self.pod.wait_until_ready(check, timeout)

    def metric(self, name: str, **labels: str) -> float:
        total = 0.0
        for family in text_string_to_metric_families(self.ops.get("/metrics").text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += sample.value
        return total

    def explain(self, message: str) -> dict[str, Any]:
        response = self.api.post("/v1/route", json={"message": message, "explain": True})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def stop(self) -> None:
        for client in (self.api, self.ops):
            client.close()
        self.pod.stop()
        self.target.stop()
        self.redis.stop()


class Load:
    """Background clients sending /v1/route without pause; every answer is kept."""

    def __init__(self, stack: Stack, clients: int = 2, repeat_every: int = 3) -> None:
        self.stack = stack
        self.statuses: Counter[int] = Counter()
        self.layers: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.bad: list[str] = []
        self.sent = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.repeat_every = repeat_every
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _message(self) -> str:
        n = next(MESSAGE_NUMBERS)  # unique across the module: new messages miss the cache
        if n % self.repeat_every == 0:
            return "restart the access point in the living room"  # a repeat: cache
        return f"{WORDS[n % len(WORDS)]} {WORDS[(n // 3) % len(WORDS)]} number {n}"

    def _run(self) -> None:
        labels = set(self.stack.config.route_names)
        with httpx.Client(
            base_url=self.stack.api.base_url, timeout=60, trust_env=False, headers=AUTH
        ) as client:
            while not self._stop.is_set():
                try:
                    response = client.post("/v1/route", json={"message": self._message()})
                except httpx.HTTPError as error:
                    with self._lock:
                        self.bad.append(f"transport: {error!r}")
                    continue
                with self._lock:
                    self.sent += 1
                    self.statuses[response.status_code] += 1
                    if response.status_code != 200:
                        self.bad.append(f"{response.status_code}: {response.text[:200]}")
                        continue
                    body = response.json()
                    if body["route"] not in labels:
                        self.bad.append(f"route outside the labels: {body}")
                    self.layers[body["layer"]] += 1
                    self.reasons[str(body["escalation_reason"])] += 1

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def until(self, requests: int, timeout: float = 180) -> None:
        """Wait until ``requests`` more answers came in."""
        goal = self.sent + requests
        assert wait_until(lambda: self.sent >= goal, timeout=timeout, interval=0.1), (
            f"only {self.sent} of {goal} answers in {timeout} s"
        )

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=90)

    def assert_no_failure(self) -> None:
        assert self.bad == [], self.bad[:5]
        assert set(self.statuses) == {200}, self.statuses
        report = os.environ.get("ROUTER_MESH_FAULT_REPORT")
        if report:  # the outcome table of docs/reliability-and-security.md
            row = {
                "test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0],
                "requests": self.sent,
                "statuses": dict(self.statuses),
                "layers": dict(self.layers),
                "reasons": dict(self.reasons),
            }
            with Path(report).open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")


needs_llama_server = pytest.mark.skipif(
    LLAMA_SERVER is None,
    reason="llama-server is not built: run `bash scripts/build-llama-server.sh`",
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if LLAMA_SERVER is None:
        pytest.skip("llama-server is not built: run `bash scripts/build-llama-server.sh`")
    s = Stack(tmp_path_factory.mktemp("faults"))
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()


@needs_llama_server
def test_the_healthy_stack_serves_on_split_ports_behind_the_token(stack: Stack) -> None:
    with Load(stack) as load:
        load.until(6)
    load.assert_no_failure()
    assert stack.api.get("/readyz").status_code == 404  # health only on the ops port
    assert stack.ops.post("/v1/route", json={"message": "hi"}).status_code == 404
    anonymous = httpx.post(f"{stack.api.base_url}/v1/route", json={"message": "hi"})
    assert anonymous.status_code == 401
    trace = stack.explain("take a snapshot of vm 104")["trace"]
    assert [step["layer"] for step in trace][:2] == ["l1", "l2"]
    assert trace[0]["reason"] in (None, "low_confidence", "off_label")


@needs_llama_server
def test_l1_killed_mid_load(stack: Stack) -> None:
    errors_before = stack.metric("router_layer_errors_total", layer="l1")
    with Load(stack) as load:
        load.until(3)
        stack.pod.kill("l1")
        load.until(12)
        ready = stack.readyz()
        assert ready["status"] == 503 and ready["checks"]["l1"] is False
        assert ready["checks"]["l2"] is True
        stack.pod.start_layer("l1")  # the fault clears: the server comes back on its port
        stack.wait_ready()
        load.until(3)
    load.assert_no_failure()
    connection_errors = stack.metric(
        "router_layer_errors_total", layer="l1", reason="connection_error"
    )
    assert connection_errors >= 1
    assert stack.metric("router_layer_errors_total", layer="l1") > errors_before
    trace = stack.explain("start the ubuntu-dev virtual machine")["trace"]
    assert trace[0]["layer"] == "l1" and trace[0]["reason"] != "connection_error"


@needs_llama_server
def test_l1_hung_accepting_but_never_answering(stack: Stack) -> None:
    before = stack.metric("router_layer_errors_total", layer="l1", reason="timeout")
    overloaded = stack.metric("router_layer_skipped_total", layer="l1", reason="overload")
    process = stack.pod.processes["l1"]
    with Load(stack) as load:
        load.until(2)
        process.send_signal(signal.SIGSTOP)
        try:
            load.until(12)
            ready = stack.readyz()  # answers (bounded health checks), and says l1 is down
            assert ready["status"] == 503 and ready["checks"]["l1"] is False
            # One request holds L1's only slot until its timeout; the others skip L1 at
            # once (overload) instead of queueing behind it.
            assert wait_until(
                lambda: (
                    stack.metric("router_layer_errors_total", layer="l1", reason="timeout") > before
                ),
                timeout=30,
            )
        finally:
            process.send_signal(signal.SIGCONT)
        stack.wait_ready()
        load.until(3)
    load.assert_no_failure()
    assert stack.metric("router_layer_skipped_total", layer="l1", reason="overload") > overloaded
    trace = stack.explain("show me the cpu dashboard for the last hour")["trace"]
    assert trace[0]["reason"] != "timeout"


@needs_llama_server
@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [({"status": 500}, "http_error"), ({"raw": '{"choices": 7}'}, "parse_error")],
    ids=["http-500", "garbage"],
)
def test_l2_answering_500_or_garbage(stack: Stack, behaviour: dict[str, Any], reason: str) -> None:
    before = stack.metric("router_layer_errors_total", layer="l2", reason=reason)
    stack.pod.kill("l2")
    # Seen gone (here by a probe; the orchestrator also checks every 2 s by itself).
    assert wait_until(lambda: stack.readyz()["checks"]["l2"] is False, timeout=30)
    broken = FakeModelServer(port=stack.ports["l2"])
    for key, value in behaviour.items():
        setattr(broken.default, key, value)
    broken.start()
    try:
        with Load(stack) as load:
            load.until(12)
        load.assert_no_failure()
        # The last layer's failure is the escalation's reason, on the answer and metered.
        assert load.reasons[reason] >= 1, load.reasons
        assert stack.metric("router_escalations_total", reason=reason) >= 1
        assert stack.metric("router_layer_errors_total", layer="l2", reason=reason) > before
        # Healthy by /health but answering nonsense, warm-up included: a server back on
        # its port counts only once warm, so this one is not ready, and /readyz says why.
        assert wait_until(
            lambda: stack.readyz()["problems"].get("l2", "").startswith("warm-up failed")
        )
        assert stack.readyz()["checks"]["l2"] is False
    finally:
        broken.stop()
    stack.pod.start_layer("l2")
    stack.wait_ready()
    trace = stack.explain("why is the grafana panel empty")["trace"]
    l2 = next(step for step in trace if step["layer"] == "l2")
    assert l2["reason"] not in ("http_error", "parse_error")


@needs_llama_server
def test_redis_killed_and_restarted(stack: Stack) -> None:
    port = stack.redis.port
    errors_before = stack.metric("router_cache_errors_total")
    with Load(stack) as load:
        load.until(3)
        stack.redis.process.kill()  # type: ignore[union-attr]
        stack.redis.process.wait()  # type: ignore[union-attr]
        stack.redis.process = None
        load.until(12)
        ready = stack.readyz()
        assert ready["status"] == 200 and ready["degraded"] == ["cache"]
        stack.redis = RedisProcess(stack.tmp, port=port)
        stack.redis.start()
        stack.wait_ready()  # degraded clears once Redis answers again
        load.until(6)
    load.assert_no_failure()
    assert stack.metric("router_cache_errors_total") > errors_before
    assert load.layers["cache"] >= 1  # repeats answered from the in-process fallback or Redis
    # Decisions reach the restarted Redis again (it started empty): a fresh message's
    # decision is written when it is made (a failure's for failureTtlSeconds, 5 s). The
    # first command on a connection pooled before the restart may fail (metered; Redis is
    # tried again after a second), so fresh messages are sent until one is written.
    fresh = (f"after the restart: list the vlans {n}" for n in itertools.count())

    def written() -> bool:
        answer = stack.api.post("/v1/route", json={"message": next(fresh)})
        assert answer.status_code == 200
        return len(stack.redis.client().keys("*")) > 0

    assert wait_until(written, timeout=10, interval=0.5)


@needs_llama_server
def test_the_escalation_endpoint_down(stack: Stack) -> None:
    stack.target.stop()
    try:
        with Load(stack) as load:
            load.until(12)
        load.assert_no_failure()  # routing never needs the endpoint
        assert stack.readyz()["status"] == 200
        escalate = "plan a migration across all four systems and write a report"
        response = stack.api.post("/v1/dispatch", json={"message": escalate})
        assert response.status_code == 502
        assert response.json()["target"].endswith("/mcp")
        assert stack.metric("router_dispatch_errors_total") >= 1
    finally:
        stack.target.start()
    response = stack.api.post("/v1/dispatch", json={"message": "list the wifi clients"})
    assert response.status_code == 200 and response.headers["x-router-route"]


def _operator_probe(stack: Stack) -> ReadinessReport | None:
    """The operator's own probe (the one that sets ConfigApplied) against this pod."""
    pod = {"metadata": {"name": "router-0"}, "status": {"podIP": "127.0.0.1"}}
    return asyncio.run(probe_readiness([pod, {"status": {}}], port=stack.ops_port))[0]


@needs_llama_server
def test_the_operator_probe_reads_the_real_orchestrator(stack: Stack) -> None:
    report = _operator_probe(stack)
    assert report is not None
    assert report.ready is True
    assert report.config_hash == stack.config.config_hash
    assert report.checks == {"config": True, "l1": True, "l2": True}  # no L0 in this stack
    assert report.config_error is None and report.degraded == []
    # No pod IP yet, or nothing listening: no report, never an exception.
    pods = [{"status": {}}, {"status": {"podIP": "127.0.0.1"}}]
    assert asyncio.run(probe_readiness(pods, port=free_port())) == [None, None]


@needs_llama_server
def test_an_invalid_config_pushed_live(stack: Stack) -> None:
    running = stack.config.config_hash
    errors_before = stack.metric("router_config_reload_errors_total")
    with Load(stack) as load:
        load.until(2)
        publish(stack.config_dir, '{"schema_version": 1, "mesh": {"name": 7}}')
        assert wait_until(lambda: stack.readyz()["config_error"] is not None, timeout=20)
        probed = _operator_probe(stack)
        assert probed is not None and probed.config_hash == running
        assert probed.config_error is not None and "mesh.name" in probed.config_error
        load.until(12)
        ready = stack.readyz()
        assert ready["status"] == 200 and ready["config_hash"] == running
        assert stack.metric("router_config_reload_errors_total") > errors_before
        fixed = stack.build_config(
            cache=CacheConfig(backend="redis", redis_url=stack.redis.url, ttl_seconds=600)
        )
        publish(stack.config_dir, fixed)
        assert wait_until(lambda: stack.readyz()["config_hash"] == fixed.config_hash, timeout=20)
        assert stack.readyz()["config_error"] is None
        load.until(3)
    load.assert_no_failure()
    stack.config = fixed


@needs_llama_server
def test_the_config_directory_removed(stack: Stack) -> None:
    running = stack.config.config_hash
    saved = stack.tmp / "config-saved"
    with Load(stack) as load:
        load.until(2)
        shutil.move(stack.config_dir, saved)
        assert wait_until(lambda: stack.readyz()["config_error"] is not None, timeout=20)
        load.until(12)
        ready = stack.readyz()
        assert ready["config_hash"] == running and "config" in ready["config_error"].lower()
        shutil.move(saved, stack.config_dir)
        assert wait_until(lambda: stack.readyz()["config_error"] is None, timeout=20)
        load.until(2)
    load.assert_no_failure()
    assert stack.readyz()["config_hash"] == running
    assert TOKEN not in stack.pod.log("orchestrator")  # the token never reaches a log
