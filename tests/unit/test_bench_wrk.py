"""The wrk driver of `bench perf` / `bench load`: the Lua script it writes, the result it
parses, and one short real run against a scripted /v1/route that checks what wrk sent
(JSON bodies, fresh messages, the token) and what it counted (statuses, the stop after
N answers). Behaviour only: no timing is asserted."""

from __future__ import annotations

import json
import re
import shutil
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from routermesh_bench import wrk
from tests.support import ThreadedServer

FRESH = re.compile(r"(?P<text>.+) \((?P<run>[0-9a-f]{8})-1-(?P<counter>\d+)\)")
OUTPUT = (
    "Running 1s test @ http://127.0.0.1:1/v1/route\n"
    'WRK-JSON {"requests": 40, "duration_us": 2000000, "bytes": 4000, '
    '"errors": {"connect": 0, "read": 1, "write": 0, "status": 4, "timeout": 2}, '
    '"latency_us": {"min": 100, "mean": 250.5, "max": 900, "p50": 200, "p90": 400, '
    '"p95": 500, "p99": 800, "p999": 900}, "statuses": {"200": 36, "503": 4}}\n'
)


def test_the_lua_strings_escape_what_lua_cannot_read() -> None:
    assert wrk._lua_string('say "hi"\\now\n') == '"say \\034hi\\034\\092now\\010"'
    assert wrk._lua_string("café") == '"café"'


def test_the_script_carries_the_messages_and_settings() -> None:
    text = wrk.script(
        wrk.WrkOptions(url="http://x", messages=["a", 'b"'], fresh_every=10, max_requests=5)
    )
    assert 'local messages = {"a", "b\\034"}' in text
    assert "local fresh_every = 10" in text
    assert "local max_requests = 5" in text
    assert 'local token = ""' in text


def test_the_result_line_is_parsed() -> None:
    assert wrk.parse(OUTPUT)["statuses"] == {"200": 36, "503": 4}
    with pytest.raises(wrk.WrkError, match="no result"):
        wrk.parse("Running 1s test\n")


class RouteRecorder(ThreadedServer):
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.tokens: set[str] = set()
        super().__init__(Starlette(routes=[Route("/v1/route", self._route, methods=["POST"])]))

    async def _route(self, request: Request) -> Response:
        body = json.loads(await request.body())
        self.bodies.append(body)
        self.tokens.add(request.headers.get("authorization", ""))
        if body["message"] == "refuse me":
            return JSONResponse({"detail": "no"}, status_code=503)
        return JSONResponse({"route": "proxmox"})


@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)"
)
def test_a_real_run_sends_json_counts_statuses_and_stops_after_n_answers() -> None:
    server = RouteRecorder()
    server.start()
    try:
        result = wrk.run(
            wrk.WrkOptions(
                url=server.url,
                messages=["restart vm 104", 'the "dashboard"', "refuse me"],
                connections=2,
                threads=1,
                seconds=60,
                fresh_every=4,
                token="s3cret",  # noqa: S106 - a test token
                max_requests=120,
            )
        )
    finally:
        server.stop()
    # Stopped by the count (120 answers), long before the 60 s duration.
    assert result["requests"] == 120
    assert result["seconds"] < 60
    assert sum(result["statuses"].values()) == 120
    assert set(result["statuses"]) == {"200", "503"}
    assert result["non_2xx"] == result["statuses"]["503"]
    assert server.tokens == {"Bearer s3cret"}
    base = {"restart vm 104", 'the "dashboard"', "refuse me"}
    messages = [b["message"] for b in server.bodies]
    fresh = [m for m in messages if m not in base]
    assert base <= set(messages)
    assert fresh and len(set(fresh)) == len(fresh)  # each fresh message is new
    for message in fresh:
        match = FRESH.fullmatch(message)
        assert match is not None and match["text"] in base, message
        assert int(match["counter"]) % 4 == 0
    assert result["client_cpu_percent"] is not None
