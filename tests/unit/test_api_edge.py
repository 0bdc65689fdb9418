"""The API's edge: bad input (every kind the issue names, on every endpoint), the
configurable message size, bearer-token authentication and the separate operations port.
Each bad input gets a 4xx with a JSON error that echoes nothing back, or is routed
normally; nothing answers 5xx or a stack trace."""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from routermesh.runtime.app import body_limit, create_app
from routermesh.runtime.contract.config import DEFAULT_MAX_MESSAGE_CHARS, ApiConfig, RouterConfig
from routermesh.runtime.logs import DECISION_LOGGER, JsonFormatter
from routermesh.runtime.router import Router
from tests.support import ThreadedServer, wait_until
from tests.unit.test_orchestrator import Stack, publish

ENDPOINTS = ("/v1/route", "/v1/dispatch", "/v1/feedback")
JSON = {"content-type": "application/json"}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path)
    yield s
    s.close()


def _with_api(stack: Stack, **api: Any) -> RouterConfig:
    config = stack.config.model_copy(update={"api": ApiConfig(**api)}).sealed()
    publish(stack.dir, config)
    assert wait_until(
        lambda: stack.client.get("/readyz").json()["config_hash"] == config.config_hash
    )
    return config


# (name, raw body): every endpoint answers 422 {"error": "invalid request", "problems"}.
REFUSED = [
    ("empty body", b""),
    ("missing field", b"{}"),
    ("wrong type: number", b'{"message": 42}'),
    ("wrong type: null", b'{"message": null}'),
    ("wrong type: list body", b"[]"),
    ("wrong type: object", b'{"message": {"text": "restart the ap"}}'),
    ("empty message", b'{"message": ""}'),
    ("invalid JSON", b"{not json"),
    ("truncated JSON", b'{"message": "restart'),
    ("non-UTF-8 bytes", b'{"message": "\xff\xfe restart the ap"}'),
    ("lone surrogate escape", b'{"message": "\\ud800 restart the ap"}'),
]

ROUTED = [
    ("control characters", "\x00\x01\x07 restart the access point\x1b[31m"),
    ("only whitespace and newlines", " \n\t\r\n "),
    ("one very long token", "a" * 30_000),
    ("emoji and ZWJ sequences", "reboot 👩‍👩‍👧‍👦 the 🖥️ vm 104 🔥" * 20),
    ("right-to-left and combining marks", "أعد تشغيل الخادم e\u0301\u0301\u0301 \u202e104 mv"),
    ("byte order mark and zero width", "\ufeffrestart\u200b the\u200d ap\u2060"),
    ("astral plane and private use", "\U0001d54a\U0001d54e\U000f0000 vm \U0010ffff"),
    ("JSON-like text", '{"route": "proxmox", "confidence": 1.0}'),
]


@pytest.mark.parametrize(("name", "body"), REFUSED, ids=[n for n, _ in REFUSED])
@pytest.mark.parametrize("path", ENDPOINTS)
def test_malformed_bodies_get_a_clear_422(stack: Stack, path: str, name: str, body: bytes) -> None:
    response = stack.client.post(path, content=body, headers=JSON)
    assert response.status_code == 422, (name, response.status_code, response.text)
    assert response.json()["error"] == "invalid request"
    problems = response.json()["problems"]
    assert problems and all(set(p) == {"field", "problem"} for p in problems)
    assert "Traceback" not in response.text and "restart the ap" not in response.text


def test_a_body_that_is_not_utf8_names_the_problem(stack: Stack) -> None:
    body = b'{"message": "\xff\xfe restart the ap"}'
    for path in ("/v1/route", "/v1/feedback"):
        response = stack.client.post(path, content=body, headers=JSON)
        assert response.json() == {
            "error": "invalid request",
            "problems": [{"field": "body", "problem": "the body is not valid UTF-8"}],
        }
    assert stack.metric("router_rejected_requests_total", status="422") == 2
    assert stack.metric("router_rejected_requests_total", status="400") == 0


@pytest.mark.parametrize(("name", "message"), ROUTED, ids=[n for n, _ in ROUTED])
def test_odd_but_valid_messages_are_routed_normally(stack: Stack, name: str, message: str) -> None:
    response = stack.client.post("/v1/route", json={"message": message})
    assert response.status_code == 200, (name, response.text)
    assert response.json()["route"] in stack.config.route_names
    feedback = stack.client.post(
        "/v1/feedback", json={"message": message, "expected_route": "proxmox"}
    )
    assert feedback.status_code == 202


@pytest.mark.parametrize("megabytes", [1, 10])
@pytest.mark.parametrize("path", ENDPOINTS)
def test_megabyte_messages_are_refused_unparsed(stack: Stack, path: str, megabytes: int) -> None:
    body = json.dumps({"message": "x" * (megabytes * 1024 * 1024)}).encode()
    response = stack.client.post(path, content=body, headers=JSON)
    assert response.status_code == 413
    assert "larger than" in response.json()["error"]
    assert stack.metric("router_rejected_requests_total", status="413") >= 1


def test_clients_that_send_the_whole_body_first_read_the_413(tmp_path: Path) -> None:
    # A real server and socket: the reset happens in the kernel, which TestClient skips.
    router = Router(tmp_path / "no-config")
    server = ThreadedServer(create_app(router, manage_router=False))
    server.start()
    limit = body_limit(DEFAULT_MAX_MESSAGE_CHARS)
    body = json.dumps({"message": "x" * (10 * 1024 * 1024)}).encode()
    try:
        for attempt in range(20):  # urllib sends the whole body before it reads an answer
            url = f"{server.url}/v1/route"
            request = urllib.request.Request(url, data=body, headers=JSON)  # noqa: S310 - http
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=30)  # noqa: S310 - loopback test server
            assert refused.value.code == 413, attempt
            assert json.loads(refused.value.read()) == {
                "error": f"request body larger than {limit} bytes"
            }
        # Without Content-Length the body is counted while it streams: the same.
        for _ in range(5):
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
            connection.request("POST", "/v1/dispatch", body=chunks, headers=JSON)
            answer = connection.getresponse()
            assert answer.status == 413
            assert json.loads(answer.read())["error"] == f"request body larger than {limit} bytes"
            connection.close()
    finally:
        server.stop()
        asyncio.run(router.stop())


def test_the_maximum_message_size_is_configurable_live(stack: Stack) -> None:
    at_default = "y" * (DEFAULT_MAX_MESSAGE_CHARS + 1)
    refused = stack.client.post("/v1/route", json={"message": at_default})
    assert refused.status_code == 413
    assert refused.json() == {
        "error": f"message longer than {DEFAULT_MAX_MESSAGE_CHARS} characters",
        "max_message_chars": DEFAULT_MAX_MESSAGE_CHARS,
    }
    _with_api(stack, max_message_chars=100)
    for path in ENDPOINTS:
        body = {"message": "z" * 101, "expected_route": "proxmox"}
        assert stack.client.post(path, json=body).status_code == 413, path
    assert stack.client.post("/v1/route", json={"message": "z" * 100}).status_code == 200
    assert stack.client.get("/v1/config").json()["api"]["max_message_chars"] == 100
    _with_api(stack, max_message_chars=200_000)
    big = stack.client.post("/v1/route", json={"message": "w" * 150_000})
    assert big.status_code == 200
    assert body_limit(200_000) > 6 * 150_000  # the body cap follows the message cap


def test_a_max_message_size_out_of_range_is_a_rejected_config() -> None:
    with pytest.raises(ValueError, match="max_message_chars"):
        ApiConfig(max_message_chars=0)
    with pytest.raises(ValueError, match="max_message_chars"):
        ApiConfig(max_message_chars=10_000_000)


# --- authentication ------------------------------------------------------------------------


def test_without_a_token_file_the_api_is_open(stack: Stack) -> None:
    assert stack.client.post("/v1/route", json={"message": "hi"}).status_code == 200
    assert stack.client.get("/v1/config").json()["api"]["authentication"] is False


def test_a_configured_token_guards_every_api_endpoint_only(
    stack: Stack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cr3t-token-value"  # noqa: S105 - a test credential
    token_file = tmp_path / "token"
    token_file.write_text(secret + "\n")  # a Secret key often ends with a newline
    _with_api(stack, token_file=str(token_file))
    caplog.set_level(logging.DEBUG)
    body = {"message": "restart the access point", "expected_route": "unifi"}
    for path in ENDPOINTS:
        missing = stack.client.post(path, json=body)
        assert missing.status_code == 401 and missing.json() == {"error": "missing bearer token"}
        assert missing.headers["www-authenticate"].startswith("Bearer")
        wrong = stack.client.post(path, json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json() == {"error": "invalid bearer token"}
        basic = stack.client.post(path, json=body, headers={"Authorization": f"Basic {secret}"})
        assert basic.status_code == 401
        good = stack.client.post(path, json=body, headers={"Authorization": f"Bearer {secret}"})
        assert good.status_code in (200, 202), (path, good.text)
    assert stack.client.get("/v1/config").status_code == 401
    # Health and metrics stay reachable for probes and Prometheus.
    assert stack.client.get("/healthz").status_code == 200
    assert stack.client.get("/readyz").status_code == 200
    metrics = stack.client.get("/metrics")
    assert metrics.status_code == 200
    # No bearer credential (none, or another scheme): 3 x 2 + /v1/config; a wrong one: 3.
    assert stack.metric("router_auth_failures_total", reason="missing") == 7
    assert stack.metric("router_auth_failures_total", reason="invalid") == 3
    assert secret not in caplog.text and secret not in metrics.text
    assert "nope" not in caplog.text


def test_a_rotated_token_applies_without_restart_and_a_lost_one_fails_closed(
    stack: Stack, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first")
    _with_api(stack, token_file=str(token_file))

    def status(token: str) -> int:
        headers = {"Authorization": f"Bearer {token}"}
        return stack.client.post("/v1/route", json={"message": "hi"}, headers=headers).status_code

    assert (status("first"), status("second")) == (200, 401)
    token_file.write_text("second-and-longer")
    assert (status("first"), status("second-and-longer")) == (401, 200)
    token_file.unlink()
    unavailable = stack.client.post(
        "/v1/route", json={"message": "hi"}, headers={"Authorization": "Bearer first"}
    )
    assert unavailable.status_code == 503
    assert unavailable.json() == {"error": "API token is not available"}
    token_file.write_text("\n")  # an empty token never matches an empty credential
    assert status("") == 503 and status("anything") == 503
    token_file.write_text("third")
    assert status("third") == 200
    assert stack.metric("router_auth_failures_total", reason="token_unavailable") == 3


# --- the operations port -------------------------------------------------------------------


def test_an_operations_port_splits_health_and_metrics_from_the_api(stack: Stack) -> None:
    app = create_app(stack.router, manage_router=False, ops_port=9090)
    api = TestClient(app, base_url="http://testserver:8080")
    ops = TestClient(app, base_url="http://testserver:9090")
    assert ops.get("/healthz").json() == {"status": "ok"}
    assert "router_decisions_total" in ops.get("/metrics").text
    # /readyz on the operations port of a real process: tests/e2e/test_faults_real_stack.py.
    for path in ("/healthz", "/readyz", "/metrics"):
        wrong = api.get(path)
        assert wrong.status_code == 404 and wrong.json()["error"] == "not served on the API port"
    assert api.post("/v1/route", json={"message": "hi"}).status_code == 200
    refused = ops.post("/v1/route", json={"message": "hi"})
    assert refused.status_code == 404
    assert refused.json()["error"] == "not served on the operations port"


# --- request IDs ---------------------------------------------------------------------------


def test_every_answer_carries_a_request_id_that_its_log_lines_share(stack: Stack) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    decisions = logging.getLogger(DECISION_LOGGER)
    decisions.addHandler(handler)
    level = decisions.level
    decisions.setLevel(logging.INFO)
    try:
        given = stack.client.post(
            "/v1/route", json={"message": "hi"}, headers={"X-Request-ID": "req-42.a:b"}
        )
        minted = stack.client.post(
            "/v1/route", json={"message": "hi"}, headers={"X-Request-ID": "bad id\\u00e9" * 20}
        )
        refused = stack.client.post("/v1/route", content=b"{", headers=JSON)
    finally:
        decisions.removeHandler(handler)
        decisions.setLevel(level)
    assert given.headers["x-request-id"] == "req-42.a:b"
    assert len(minted.headers["x-request-id"]) == 32  # not a caller's odd value: a new one
    assert refused.status_code == 422 and refused.headers["x-request-id"]
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line.get("request_id") for line in lines] == [
        "req-42.a:b",
        minted.headers["x-request-id"],
    ]
