"""The orchestrator API end to end over real HTTP, with deterministic fake model servers
(uvicorn on loopback, answering by script), a fake MCP target and a real redis-server:
each layer deciding, every fail-open reason, thresholds and per-route overrides,
multi-token labels, the cache, Redis outage and recovery, live reload (valid, invalid,
directory removed), dispatch, feedback, health, metrics and decision logs."""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from routermesh.runtime import router as router_module
from routermesh.runtime.app import create_app
from routermesh.runtime.contract.config import (
    CONFIG_FILENAME,
    CacheConfig,
    ExamplesSource,
    RouterConfig,
)
from routermesh.runtime.generative import WARM_MESSAGE
from routermesh.runtime.logs import JsonFormatter
from routermesh.runtime.router import Router
from tests.support import (
    Behaviour,
    FakeModelServer,
    FakeTarget,
    RedisProcess,
    homelab_rendered,
    layer_of,
    needs_redis,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]
SURE = {" proxmox": 0.95, " grafana": 0.05}
UNSURE = {" proxmox": 0.5, " grafana": 0.5}


def homelab_config(
    l1: FakeModelServer,
    l2: FakeModelServer,
    target: FakeTarget,
    *,
    cache: CacheConfig | None = None,
    l1_threshold: float = 0.85,
) -> RouterConfig:
    """The seed sample rendered, pointed at the fakes (timeouts shortened for the tests)."""
    config = homelab_rendered()
    routes = tuple(
        r.model_copy(
            update={
                "target": f"{target.url}/mcp",
                "thresholds": {"l1": 0.99} if r.name == "grafana" else {},
            }
        )
        for r in config.routes
    )
    # The generative layers only (enabled, judging all four routes at once without L0's
    # ranking): these tests script their model servers (L0 has its own).
    judging = {"enabled": True, "candidates": 4, "agree_with": None}
    # The layers' time budget is the largest timeout: L2 still has 2 s after L1 timed out.
    layers = (
        layer_of(config, "l1").model_copy(
            update={**judging, "url": l1.url, "threshold": l1_threshold, "timeout_ms": 2000}
        ),
        layer_of(config, "l2").model_copy(update={**judging, "url": l2.url, "timeout_ms": 4000}),
    )
    escalation = config.escalation.model_copy(
        update={"target": f"{target.url}/mcp", "credentials_file": None}
    )
    return config.model_copy(
        update={
            "routes": routes,
            "layers": layers,
            "escalation": escalation,
            "cache": cache or CacheConfig(),
        }
    ).sealed()


def publish(directory: Path, config: RouterConfig | str) -> None:
    """Write the config as the kubelet does: a new folder, then swap the ``..data`` link."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = directory / f"..{time.monotonic_ns()}"
    stamp.mkdir()
    text = config if isinstance(config, str) else config.to_json()
    (stamp / CONFIG_FILENAME).write_text(text)
    link = directory / "..data_tmp"
    link.symlink_to(stamp.name)
    link.replace(directory / "..data")
    if not (directory / CONFIG_FILENAME).is_symlink():
        (directory / CONFIG_FILENAME).symlink_to(f"..data/{CONFIG_FILENAME}")


class Stack:
    def __init__(self, tmp: Path, cache: CacheConfig | None = None) -> None:
        self.l1, self.l2, self.target = FakeModelServer(), FakeModelServer(), FakeTarget()
        for server in (self.l1, self.l2, self.target):
            server.start()
        self.dir = tmp / "config"
        self.models = tmp / "models"
        self.config = homelab_config(self.l1, self.l2, self.target, cache=cache)
        publish(self.dir, self.config)
        self.router = Router(self.dir, models_dir=self.models, poll_seconds=0.05)
        self.client = TestClient(create_app(self.router))
        self.client.__enter__()
        # Each layer warms its prompt prefix once after a config load; start from a clean slate.
        assert wait_until(lambda: WARM_MESSAGE in self.l1.seen and WARM_MESSAGE in self.l2.seen)
        self.l1.seen.clear()
        self.l2.seen.clear()

    def route(self, message: str) -> dict[str, Any]:
        response = self.client.post("/v1/route", json={"message": message})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def metric(self, name: str, **labels: str) -> float:
        text = self.client.get("/metrics").text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        return 0.0

    def close(self) -> None:
        self.client.__exit__(None, None, None)
        for server in (self.l1, self.l2, self.target):
            server.stop()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path)
    yield s
    s.close()


def test_l1_routes_a_confident_message_with_target_and_hash(stack: Stack) -> None:
    stack.l1.answer("start vm 104", SURE)
    body = stack.route("start vm 104")
    assert body["route"] == "proxmox" and body["layer"] == "l1"
    assert body["confidence"] == pytest.approx(0.95)
    assert body["target"] == f"{stack.target.url}/mcp"
    assert body["config_hash"] == stack.config.config_hash
    assert body["latency_ms"] > 0 and body["cache_hit"] is False
    assert body["escalation_reason"] is None
    assert stack.l2.seen == []
    assert stack.metric("router_decisions_total", route="proxmox", layer="l1") == 1
    assert stack.metric("router_latency_seconds_count", layer="l1") == 1


def test_l2_decides_what_l1_is_unsure_of(stack: Stack) -> None:
    stack.l1.answer("snapshot the vm", UNSURE)
    stack.l2.answer("snapshot the vm", {" proxmox": 0.8, " unifi": 0.2})
    body = stack.route("snapshot the vm")
    assert (body["route"], body["layer"]) == ("proxmox", "l2")
    assert body["confidence"] == pytest.approx(0.8)
    assert stack.metric("router_decisions_total", route="proxmox", layer="l2") == 1


def test_unsure_everywhere_escalates_and_the_escalation_is_cached(stack: Stack) -> None:
    stack.l1.answer("plan my weekend", UNSURE)
    stack.l2.answer("plan my weekend", UNSURE)
    body = stack.route("plan my weekend")
    assert (body["route"], body["layer"]) == ("cortex", "escalated")
    assert body["escalation_reason"] == "low_confidence"
    assert body["target"] == f"{stack.target.url}/mcp"
    again = stack.route("  Plan my   WEEKEND ")
    assert (again["route"], again["layer"], again["cache_hit"]) == ("cortex", "cache", True)
    assert again["escalation_reason"] == "cached"
    assert stack.l1.seen == ["plan my weekend"]  # the cache answered the second time
    assert stack.metric("router_escalations_total", reason="low_confidence") == 1
    assert stack.metric("router_cache_hits_total") == 1


def test_explain_traces_every_asked_layer_and_leaves_the_cache_alone(stack: Stack) -> None:
    stack.l1.answer("start vm 104", SURE)
    stack.l2.answer("start vm 104", {" proxmox": 0.7, " unifi": 0.3})
    assert stack.route("start vm 104")["layer"] == "l1"  # now cached
    hits = stack.metric("router_cache_hits_total")
    misses = stack.metric("router_cache_misses_total")

    body = stack.client.post("/v1/route", json={"message": "start vm 104", "explain": True}).json()
    assert (body["route"], body["layer"], body["cache_hit"]) == ("proxmox", "l1", False)
    assert [t["layer"] for t in body["trace"]] == ["l1"]
    assert body["trace"][0]["route"] == "proxmox"
    assert body["trace"][0]["confidence"] == pytest.approx(0.95)
    assert body["trace"][0]["reason"] is None and body["trace"][0]["ms"] > 0

    every = stack.client.post(
        "/v1/route", json={"message": "start vm 104", "explain": True, "all_layers": True}
    ).json()
    assert (every["route"], every["layer"]) == ("proxmox", "l1")  # the decision is the same
    assert [(t["layer"], t["route"]) for t in every["trace"]] == [
        ("l1", "proxmox"),
        ("l2", "proxmox"),
    ]
    assert every["trace"][1]["confidence"] == pytest.approx(0.7)
    assert stack.metric("router_cache_hits_total") == hits
    assert stack.metric("router_cache_misses_total") == misses
    assert stack.route("start vm 104")["layer"] == "cache"
    assert stack.route("plain")["trace"] is None


def test_explain_does_not_cache_an_escalation(stack: Stack) -> None:
    stack.l1.answer("plan my weekend", UNSURE)
    stack.l2.answer("plan my weekend", UNSURE)
    explained = stack.client.post(
        "/v1/route", json={"message": "plan my weekend", "explain": True}
    ).json()
    assert explained["layer"] == "escalated"
    assert [t["reason"] for t in explained["trace"]] == [None, None]
    assert stack.route("plan my weekend")["cache_hit"] is False


def test_a_layer_calibration_rescales_its_confidence_before_the_threshold(
    stack: Stack,
) -> None:
    l1 = layer_of(stack.config, "l1").model_copy(update={"calibration": (1.0, -3.0)})
    layers = tuple(l1 if layer.name == "l1" else layer for layer in stack.config.layers)
    publish(stack.dir, stack.config.model_copy(update={"layers": layers}).sealed())
    assert wait_until(
        lambda: stack.client.get("/v1/config").json()["config_hash"] != stack.config.config_hash
    )
    stack.l1.answer("start vm 104", SURE)  # 0.95 -> sigmoid(logit(0.95) - 3) = 0.49
    stack.l2.answer("start vm 104", {" proxmox": 0.8, " unifi": 0.2})
    body = stack.client.post("/v1/route", json={"message": "start vm 104", "explain": True})
    answer = body.json()
    assert answer["trace"][0]["confidence"] == pytest.approx(0.4861, abs=1e-3)
    assert (answer["route"], answer["layer"]) == ("proxmox", "l2")


def test_per_route_threshold_override_applies(stack: Stack) -> None:
    # grafana needs 0.99 from L1 (override); 0.95 is enough for proxmox (layer 0.85).
    stack.l1.answer("cpu graph", {" grafana": 0.95, " proxmox": 0.05})
    stack.l2.answer("cpu graph", {" grafana": 0.9, " proxmox": 0.1})
    assert stack.route("cpu graph")["layer"] == "l2"
    stack.l1.answer("vm list", {" proxmox": 0.95, " grafana": 0.05})
    assert stack.route("vm list")["layer"] == "l1"


def test_multi_token_labels_are_summed_by_route(stack: Stack) -> None:
    # " prox" only begins proxmox; " Proxmox" is the same label differently spelt.
    stack.l1.answer("migrate guest", {" prox": 0.5, " Proxmox": 0.4, " grafana": 0.1})
    body = stack.route("migrate guest")
    assert (body["route"], body["layer"]) == ("proxmox", "l1")
    assert body["confidence"] == pytest.approx(0.9)


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        (Behaviour(delay=3.0), "timeout"),  # beyond the 2 s layer timeout
        (Behaviour(status=500), "http_error"),
        (Behaviour(raw='{"choices": "garbage"}'), "parse_error"),
        (Behaviour(top={" banana": -0.01, " proxmox": -5.0}), "invalid_label"),
    ],
)
def test_each_l1_failure_falls_through_to_l2_and_is_metered(
    stack: Stack, behaviour: Behaviour, reason: str
) -> None:
    stack.l1.script["reboot node"] = behaviour
    stack.l2.answer("reboot node", {" proxmox": 0.9, " unifi": 0.1})
    body = stack.route("reboot node")
    assert (body["route"], body["layer"]) == ("proxmox", "l2")
    assert stack.metric("router_layer_errors_total", layer="l1", reason=reason) == 1


def test_both_layers_failing_escalates_and_is_cached_only_briefly(stack: Stack) -> None:
    stack.l1.stop()  # connection refused
    stack.l2.script["reboot node"] = Behaviour(status=503)
    body = stack.route("reboot node")
    assert (body["route"], body["layer"]) == ("cortex", "escalated")
    assert body["escalation_reason"] == "http_error"
    assert stack.metric("router_layer_errors_total", layer="l1", reason="connection_error") == 1
    assert stack.metric("router_escalations_total", reason="http_error") == 1
    # Repeats within failure_ttl_seconds come from the cache (no pile-up on the failing
    # layers); after it, once L2 recovers, the same message is routed by it.
    stack.l2.answer("reboot node", {" proxmox": 0.9, " unifi": 0.1})
    again = stack.route("reboot node")
    assert (again["layer"], again["escalation_reason"]) == ("cache", "cached")
    assert stack.config.cache.failure_ttl_seconds == 5
    short = stack.config.model_copy(
        update={"cache": stack.config.cache.model_copy(update={"failure_ttl_seconds": 1})}
    ).sealed()
    publish(stack.dir, short)
    assert wait_until(
        lambda: stack.client.get("/readyz").json()["config_hash"] == short.config_hash
    )
    stack.l2.script["reboot node again"] = Behaviour(status=503)
    assert stack.route("reboot node again")["layer"] == "escalated"
    stack.l2.answer("reboot node again", {" proxmox": 0.9, " unifi": 0.1})
    assert wait_until(lambda: stack.route("reboot node again")["layer"] == "l2", timeout=5)


def test_a_judge_may_say_none_or_several(stack: Stack) -> None:
    stack.l1.answer("migrate all vms and update dashboards", {" several": 0.9, " proxmox": 0.1})
    body = stack.route("migrate all vms and update dashboards")
    assert (body["route"], body["layer"]) == ("cortex", "l1")
    assert body["escalation_reason"] == "multi_step"
    assert body["plan"] == ["unifi", "proxmox", "grafana", "elastic"]  # the routes it judged
    assert stack.metric("router_escalations_total", reason="multi_step") == 1
    stack.l1.answer("book a table for two", {" none": 0.95, " unifi": 0.05})
    body = stack.route("book a table for two")
    assert (body["route"], body["layer"], body["escalation_reason"]) == (
        "cortex",
        "l1",
        "out_of_scope",
    )
    # A model that names the escalation route itself gives no valid answer: it abstains.
    stack.l1.answer("anything", {" cortex": 0.9})
    stack.l2.answer("anything", {" cortex": 0.9})
    assert stack.route("anything")["escalation_reason"] == "invalid_label"


@pytest.mark.parametrize(
    ("broken", "stage"),
    [
        ("routermesh.runtime.cascade.cache_key", "decide"),  # the cache lookup
        ("routermesh.runtime.app.target_for", "respond"),  # building the answer
    ],
)
def test_a_bug_outside_the_layers_fails_open_metered_and_logged(
    stack: Stack,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    broken: str,
    stage: str,
) -> None:
    def bug(*_: object, **__: object) -> None:
        raise RuntimeError("injected bug")

    monkeypatch.setattr(broken, bug)
    stack.l1.answer("start vm 104", SURE)
    with caplog.at_level(logging.ERROR, logger="routermesh.decisions"):
        body = stack.route("start vm 104")
        explained = stack.client.post(
            "/v1/route", json={"message": "start vm 104", "explain": True}
        )
        dispatched = stack.client.post("/v1/dispatch", json={"message": "start vm 104"})
    assert (body["route"], body["layer"], body["escalation_reason"]) == (
        "cortex",
        "escalated",
        "internal_error",
    )
    assert body["target"] == f"{stack.target.url}/mcp" and body["cache_hit"] is False
    assert body["config_hash"] == stack.config.config_hash
    assert explained.status_code == 200 and explained.json()["trace"] == []
    assert dispatched.status_code == 200
    assert dispatched.headers["x-router-route"] == "cortex"
    assert dispatched.headers["x-router-escalation-reason"] == "internal_error"
    assert len(stack.target.received) == 1  # forwarded to the escalation endpoint
    assert stack.metric("router_internal_errors_total", stage=stage) == 3
    assert stack.metric("router_escalations_total", reason="internal_error") == 3
    failures = [r for r in caplog.records if getattr(r, "event", "") == "decision_internal_error"]
    assert len(failures) == 3
    assert failures[0].levelname == "ERROR" and failures[0].stage == stage  # type: ignore[attr-defined]
    assert "RuntimeError: injected bug" in failures[0].traceback  # type: ignore[attr-defined]
    entry = json.loads(JsonFormatter().format(failures[0]))
    assert entry["error"] == "RuntimeError: injected bug" and "Traceback" in entry["traceback"]


def test_new_content_under_an_unpinned_uri_drops_cached_decisions(stack: Stack) -> None:
    source = stack.models / "tables" / "extra.jsonl"
    source.parent.mkdir(parents=True)
    source.write_text(json.dumps({"text": "boot vm 104", "route": "proxmox"}) + "\n")
    unpinned = ExamplesSource(uri="https://tables.example/extra.jsonl", path="tables/extra.jsonl")
    first = stack.config.model_copy(update={"examples_from": (unpinned,)}).sealed()

    def with_l1_timeout(timeout_ms: int) -> RouterConfig:
        # A change decisions do not depend on: the route table version stays, the cache too.
        l1 = layer_of(first, "l1").model_copy(update={"timeout_ms": timeout_ms})
        layers = (l1, layer_of(first, "l2"))
        changed = first.model_copy(update={"layers": layers}).sealed()
        assert changed.route_table_version == first.route_table_version
        return changed

    def running(config: RouterConfig) -> bool:
        return bool(stack.client.get("/v1/config").json()["config_hash"] == config.config_hash)

    publish(stack.dir, first)
    assert wait_until(lambda: running(first))
    stack.l1.answer("start vm 104", SURE)
    assert stack.route("start vm 104")["layer"] == "l1"
    same = with_l1_timeout(2500)
    publish(stack.dir, same)
    assert wait_until(lambda: running(same))
    assert stack.route("start vm 104")["cache_hit"] is True  # same content: still cached
    # The set changes under the same URI (no sha256 to pin it), and the pod loads it.
    source.write_text(json.dumps({"text": "boot vm 104", "route": "unifi"}) + "\n")
    reloaded = with_l1_timeout(3000)
    publish(stack.dir, reloaded)
    assert wait_until(lambda: running(reloaded))
    again = stack.route("start vm 104")
    assert (again["layer"], again["cache_hit"]) == ("l1", False)
    asked = [m for m in stack.l1.seen if m != WARM_MESSAGE]  # each load warms the layer
    assert asked == ["start vm 104", "start vm 104"]


def test_dispatch_forwards_the_body_with_router_headers(stack: Stack) -> None:
    stack.l1.answer("start vm 104", SURE)
    payload = {"message": "start vm 104", "arguments": {"vmid": 104}}
    response = stack.client.post("/v1/dispatch", json=payload)
    assert response.status_code == 200
    assert response.headers["X-Router-Route"] == "proxmox"
    assert response.headers["X-Router-Layer"] == "l1"
    assert float(response.headers["X-Router-Confidence"]) == pytest.approx(0.95)
    assert response.headers["X-Target"] == "mcp"
    assert json.loads(response.json()["echo"]) == payload
    assert stack.target.received[0]["headers"]["content-type"] == "application/json"


def test_the_reasoning_endpoints_answer_naming_the_route_is_recorded_as_feedback(
    stack: Stack, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reasoning endpoint says in its answer to an escalated request which route it
    belongs to; the router records it as /v1/feedback would, after answering. A
    server's answer is not read this way (a route's server may be anyone's)."""
    records = stack.router.feedback.records  # type: ignore[union-attr]

    def events(name: str) -> list[logging.LogRecord]:
        return [r for r in caplog.records if getattr(r, "event", "") == name]

    for layer in (stack.l1, stack.l2):
        layer.answer("graph the ups load", UNSURE)
    stack.target.answer_headers = {"X-Router-Expected-Route": "grafana"}
    response = stack.client.post("/v1/dispatch", json={"message": "graph the ups load"})
    assert response.status_code == 200 and response.headers["X-Router-Route"] == "cortex"
    assert wait_until(lambda: len(records) == 1)
    record = records[-1]
    assert (record.message, record.expected_route, record.decided_route, record.source) == (
        "graph the ups load",
        "grafana",
        "cortex",
        "answer",
    )
    assert stack.metric("router_feedback_total", expected_route="grafana") == 1
    exported = [json.loads(line) for line in stack.client.get("/v1/feedback").text.splitlines()]
    assert [(row["text"], row["route"], row["source"]) for row in exported] == [
        ("graph the ups load", "grafana", "answer")
    ]

    # A server's answer naming a route is not feedback (nothing is even scheduled).
    stack.l1.answer("start vm 104", SURE)
    routed = stack.client.post("/v1/dispatch", json={"message": "start vm 104"})
    assert routed.is_success and routed.headers["X-Router-Route"] == "proxmox"
    assert len(records) == 1
    # A route the config does not have is refused (logged), never stored.
    stack.target.answer_headers = {"X-Router-Expected-Route": "no-such-route"}
    with caplog.at_level(logging.INFO, logger="routermesh.feedback"):
        assert stack.client.post("/v1/dispatch", json={"message": "graph the ups load"}).is_success
        assert wait_until(lambda: len(events("target_feedback_refused")) == 1)
        assert getattr(events("target_feedback_refused")[0], "expected_route", "") == (
            "no-such-route"
        )
        # A store that fails costs the report, never the answer.
        stack.target.answer_headers = {"X-Router-Expected-Route": "cortex"}

        async def broken(record: object) -> str:
            raise RuntimeError("store down")

        monkeypatch.setattr(stack.router.feedback, "add", broken)
        assert stack.client.post("/v1/dispatch", json={"message": "graph the ups load"}).is_success
        assert wait_until(lambda: len(events("target_feedback_error")) == 1)
    assert len(records) == 1


def test_dispatch_to_a_dead_target_is_a_502_naming_it_and_still_counted(stack: Stack) -> None:
    stack.l1.answer("start vm 104", SURE)
    stack.target.stop()
    response = stack.client.post("/v1/dispatch", json={"message": "start vm 104"})
    assert response.status_code == 502
    body = response.json()
    assert body["target"] == f"{stack.target.url}/mcp" and stack.target.url in body["error"]
    assert body["route"] == "proxmox" and response.headers["X-Router-Route"] == "proxmox"
    assert stack.metric("router_decisions_total", route="proxmox", layer="l1") == 1
    assert stack.metric("router_dispatch_errors_total", route="proxmox") == 1


def test_feedback_is_stored_counted_and_checked(stack: Stack) -> None:
    response = stack.client.post(
        "/v1/feedback", json={"message": "cpu graph", "expected_route": "grafana"}
    )
    assert response.status_code == 202 and response.json()["stored"] == "memory"
    assert stack.metric("router_feedback_total", expected_route="grafana") == 1
    record = stack.router.feedback.records[-1]  # type: ignore[union-attr]
    assert (record.message, record.config_hash) == ("cpu graph", stack.config.config_hash)
    unknown = stack.client.post("/v1/feedback", json={"message": "x", "expected_route": "nope"})
    assert unknown.status_code == 422 and "expected_route" in unknown.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "message"),
        ({"message": ""}, "message"),
        ({"message": 42}, "message"),
    ],
)
def test_bad_requests_get_a_clear_422(stack: Stack, body: dict[str, Any], field: str) -> None:
    response = stack.client.post("/v1/route", json=body)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid request"
    assert response.json()["problems"][0]["field"] == field
    assert "x" * 100 not in response.text  # the input is not echoed back


def test_huge_bodies_are_refused_before_they_are_parsed(stack: Stack) -> None:
    response = stack.client.post("/v1/route", content=b"x" * (1024 * 1024))
    assert response.status_code == 413 and "larger than" in response.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        for _ in range(40):
            yield b"y" * 10_000

    streamed = stack.client.post("/v1/dispatch", content=chunks())
    assert streamed.status_code == 413


def test_invalid_json_is_a_422(stack: Stack) -> None:
    response = stack.client.post(
        "/v1/route", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422 and response.json()["error"] == "invalid request"


def test_health_readiness_metrics_and_public_config(stack: Stack) -> None:
    assert stack.client.get("/healthz").json() == {"status": "ok"}
    ready = stack.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"config": True, "l1": True, "l2": True}
    stack.l2.healthy = False
    not_ready = stack.client.get("/readyz")
    assert not_ready.status_code == 503 and not_ready.json()["checks"]["l2"] is False
    view = stack.client.get("/v1/config").json()
    assert view["config_hash"] == stack.config.config_hash
    grafana = next(r for r in view["routes"] if r["name"] == "grafana")
    assert grafana["thresholds"] == {"l1": 0.99, "l2": 0.75}
    assert view["escalation"]["route"] == "cortex"
    assert stack.metric("router_config_info", hash=stack.config.config_hash) == 1


def test_live_reload_swaps_without_dropping_in_flight_requests(stack: Stack) -> None:
    stack.l1.script["slow one"] = Behaviour(top={" proxmox": -0.01, " grafana": -5.0}, delay=0.2)
    results: list[dict[str, Any]] = []
    worker = threading.Thread(target=lambda: results.append(stack.route("slow one")))
    worker.start()
    assert wait_until(lambda: "slow one" in stack.l1.seen)
    changed = homelab_config(stack.l1, stack.l2, stack.target, l1_threshold=0.6)
    publish(stack.dir, changed)
    worker.join()
    assert results[0]["route"] == "proxmox"
    assert results[0]["config_hash"] == stack.config.config_hash  # finished on the old config
    assert wait_until(
        lambda: stack.client.get("/v1/config").json()["config_hash"] == changed.config_hash
    )
    stack.l1.answer("restart ap", {" unifi": 0.7, " proxmox": 0.3})
    assert stack.route("restart ap")["layer"] == "l1"  # 0.7 passes the new 0.6 threshold
    assert stack.metric("router_config_info", hash=changed.config_hash) == 1
    assert stack.metric("router_config_info", hash=stack.config.config_hash) == 0


@pytest.mark.parametrize(
    "bad",
    [
        "{not json",
        json.dumps({"schema_version": 1}),
        "tampered",  # valid schema, digests that do not match the content
    ],
)
def test_an_invalid_config_is_rejected_and_the_old_one_keeps_running(
    stack: Stack, bad: str
) -> None:
    if bad == "tampered":
        data = json.loads(stack.config.to_json())
        data["layers"][0]["threshold"] = 0.1
        bad = json.dumps(data)
    publish(stack.dir, bad)
    assert wait_until(lambda: stack.metric("router_config_reload_errors_total") == 1)
    stack.l1.answer("start vm 104", SURE)
    body = stack.route("start vm 104")
    assert (body["layer"], body["config_hash"]) == ("l1", stack.config.config_hash)
    ready = stack.client.get("/readyz").json()
    assert ready["ready"] is True and ready["config_error"]
    assert ready["config_hash"] == stack.config.config_hash
    time.sleep(0.3)  # several polls: the same bad file is reported once
    assert stack.metric("router_config_reload_errors_total") == 1
    publish(stack.dir, stack.config)  # back to the running config: the error clears
    assert wait_until(lambda: stack.client.get("/readyz").json()["config_error"] is None)


def test_a_removed_config_directory_keeps_the_running_config(stack: Stack) -> None:
    shutil.rmtree(stack.dir)
    assert wait_until(lambda: stack.metric("router_config_reload_errors_total") == 1)
    stack.l1.answer("start vm 104", SURE)
    assert stack.route("start vm 104")["config_hash"] == stack.config.config_hash
    publish(stack.dir, stack.config)
    assert wait_until(lambda: stack.client.get("/readyz").json()["config_error"] is None)


def test_without_a_config_the_router_is_not_ready_and_says_why(tmp_path: Path) -> None:
    with TestClient(create_app(Router(tmp_path / "missing", poll_seconds=0.05))) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "does not exist" in ready.json()["config_error"]
        response = client.post("/v1/route", json={"message": "hi"})
        assert response.status_code == 503 and "no valid router config" in response.json()["error"]
        # which reports are examples depends on the config's escalation route
        assert client.get("/v1/feedback").status_code == 503


def test_decisions_are_logged_as_json_without_the_message_at_info(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    stack.l1.answer("start secret vm", SURE)
    with caplog.at_level(logging.INFO, logger="routermesh.decisions"):
        stack.route("start secret vm")
    lines = [JsonFormatter().format(r) for r in caplog.records if r.name == "routermesh.decisions"]
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["event"] == "decision" and entry["route"] == "proxmox"
    assert entry["layer"] == "l1" and entry["cache_hit"] is False
    assert entry["layers"]["l1"]["route"] == "proxmox" and "latency_ms" in entry
    assert "start secret vm" not in lines[0]
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="routermesh.decisions"):
        stack.route("start secret vm")
    texts = [JsonFormatter().format(r) for r in caplog.records]
    assert any("start secret vm" in line for line in texts)


@needs_redis
def test_redis_cache_outage_keeps_routing_and_recovers(
    tmp_path: Path, redis_server: RedisProcess
) -> None:
    stack = Stack(tmp_path, cache=CacheConfig(backend="redis", redis_url=redis_server.url))
    try:
        stack.l1.answer("start vm 104", SURE)
        stack.l1.answer("stop vm 105", SURE)
        stack.l1.answer("list vms", SURE)
        assert stack.route("start vm 104")["layer"] == "l1"
        assert len(redis_server.client().keys("router-mesh:decision:*")) == 1
        redis_server.stop()
        body = stack.route("stop vm 105")  # Redis down: routed, error metered
        assert body["layer"] == "l1"
        assert stack.metric("router_cache_errors_total", backend="redis") >= 1
        assert stack.route("stop vm 105")["layer"] == "cache"  # in-process fallback
        redis_server.start()  # same port, empty
        # After the back-off (1 s) new decisions reach Redis again, without a restart.
        assert stack.route("list vms")["layer"] == "l1"
        for attempt in range(40):
            if redis_server.client().keys("router-mesh:decision:*"):
                break
            stack.l1.answer(f"vm {attempt}", SURE)
            stack.route(f"vm {attempt}")
            time.sleep(0.1)
        assert redis_server.client().keys("router-mesh:decision:*")
        feedback = stack.client.post(
            "/v1/feedback", json={"message": "m", "expected_route": "unifi"}
        )
        assert feedback.json()["stored"] == "redis"
        assert redis_server.client().llen("router-mesh:feedback:homelab") == 1
        # A multi-step escalation's plan survives the store; defaults are left out, and a
        # field of a newer release is ignored, not the record.
        told = {"message": "n", "expected_route": "cortex", "decided_route": "cortex"}
        stack.client.post("/v1/feedback", json={**told, "plan": ["unifi", "proxmox"]})
        stored = json.loads(redis_server.client().lindex("router-mesh:feedback:homelab", 0))
        assert stored["plan"] == ["unifi", "proxmox"] and "verdicts" not in stored
        assert stored["source"] == "api"
        newer = {**stored, "message": "o", "plan": [], "from_a_newer_release": 1}
        newer["source"] = "a_newer_source"  # a source this release does not know still reads
        redis_server.client().lpush("router-mesh:feedback:homelab", json.dumps(newer))
        # A record of an older release, which kept no source, reads as one without.
        older = {k: v for k, v in stored.items() if k != "source"} | {"message": "p"}
        redis_server.client().lpush("router-mesh:feedback:homelab", json.dumps(older))
        exported = stack.client.get("/v1/feedback?misroutes=false").text.splitlines()
        rows = [(row["text"], row["plan"], row["source"]) for row in map(json.loads, exported)]
        assert rows == [
            ("p", ["unifi", "proxmox"], None),
            ("o", [], "a_newer_source"),
            ("n", ["unifi", "proxmox"], "api"),
            ("m", [], "api"),
        ]
    finally:
        stack.close()


def test_a_starting_pod_is_ready_only_after_its_first_warm_up(tmp_path: Path) -> None:
    l1, l2, target = FakeModelServer(), FakeModelServer(), FakeTarget()
    for server in (l1, l2, target):
        server.start()
    l2.script[WARM_MESSAGE] = Behaviour(status=500)  # L2 answers health, but not warm-up
    directory = tmp_path / "config"
    publish(directory, homelab_config(l1, l2, target))
    try:
        with TestClient(create_app(Router(directory, poll_seconds=0.05))) as client:
            assert wait_until(lambda: WARM_MESSAGE in l1.seen)
            not_ready = client.get("/readyz")
            assert not_ready.status_code == 503
            assert not_ready.json()["checks"] == {"config": True, "l1": True, "l2": False}
            del l2.script[WARM_MESSAGE]  # the next probe's background warm-up succeeds
            assert wait_until(lambda: client.get("/readyz").status_code == 200)
            # A reload whose new prefix cannot warm keeps the pod in the Service.
            l1.script[WARM_MESSAGE] = Behaviour(status=500)
            l2.script[WARM_MESSAGE] = Behaviour(status=500)
            publish(directory, homelab_config(l1, l2, target, l1_threshold=0.7))
            assert wait_until(
                lambda: client.get("/v1/config").json()["layers"][0]["threshold"] == 0.7
            )
            assert client.get("/readyz").status_code == 200
    finally:
        for server in (l1, l2, target):
            server.stop()


def _restart_cold(stack: Stack) -> FakeModelServer:
    """L1's model server started again on its port, refusing its first warm-ups."""
    restarted = FakeModelServer(port=stack.l1.port)
    restarted.script[WARM_MESSAGE] = Behaviour(status=500)
    restarted.start()
    stack.l1 = restarted  # stopped by stack.close()
    return restarted


def _cold_until_warm(stack: Stack, restarted: FakeModelServer) -> None:
    checks: list[bool] = []

    def warming() -> bool:  # the probes start the warm-up of a healthy, cold server
        checks.append(stack.client.get("/readyz").json()["checks"]["l1"])
        return WARM_MESSAGE in restarted.seen

    assert wait_until(warming)  # warmed again
    assert True not in checks
    cold = stack.client.get("/readyz")
    assert cold.status_code == 503 and cold.json()["checks"]["l1"] is False  # up, not warm
    assert cold.json()["problems"]["l1"].startswith("warm-up failed: _ServerError: HTTP 500")
    del restarted.script[WARM_MESSAGE]
    assert wait_until(lambda: stack.client.get("/readyz").status_code == 200)
    assert stack.client.get("/readyz").json()["checks"]["l1"] is True


def test_a_restarted_model_server_is_warmed_again_before_its_layer_is_ready(
    stack: Stack,
) -> None:
    stack.router.health_seconds = 0.05
    assert stack.client.get("/readyz").status_code == 200
    stack.l1.stop()
    # Nothing probes /readyz meanwhile: the router's own health checks see it gone.
    assert wait_until(lambda: stack.metric("router_model_server_outages_total", layer="l1") == 1)
    _cold_until_warm(stack, _restart_cold(stack))
    assert stack.metric("router_model_server_outages_total", layer="l1") == 1
    assert stack.metric("router_model_server_outages_total", layer="l2") == 0


def test_a_model_server_restarted_between_probes_is_seen_by_a_failed_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(router_module, "HEALTH_SECONDS", 3600.0)  # no health checks of its own
    stack = Stack(tmp_path)
    try:
        assert stack.client.get("/readyz").status_code == 200
        stack.l1.stop()
        # A request meets the outage; no probe does (the server is back before the next).
        assert stack.route("start vm 104")["route"] in stack.config.route_names
        assert stack.metric("router_layer_errors_total", layer="l1", reason="connection_error")
        _cold_until_warm(stack, _restart_cold(stack))
        assert stack.metric("router_model_server_outages_total", layer="l1") == 1
    finally:
        stack.close()
