"""wrk (a C load generator) against ``/v1/route``: what the server does, not what a Python
client can send. A Lua script cycles through the messages and makes every Nth request
fresh (a counter appended, so the cache misses); wrk's own histogram gives the
percentiles, and the child's rusage gives the client's CPU, reported beside them so a
reader can see the load generator was not the bottleneck."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCRIPT = r"""
local messages = {MESSAGES}
local fresh_every = {FRESH_EVERY}
local max_requests = {MAX_REQUESTS}
local answered = 0
local token = {TOKEN}
local run = {RUN}  -- fresh means fresh: never a message an earlier run left in the cache
local counter = 0
statuses = {}  -- a global: done() reads each thread's copy
local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  counter = 0
  statuses = {}
end

local function escape(text)
  return (text:gsub('[%c"\\]', function(c)
    return string.format("\\u%04x", string.byte(c))
  end))
end

function request()
  counter = counter + 1
  local text = messages[(counter - 1) % #messages + 1]
  if fresh_every > 0 and counter % fresh_every == 0 then
    text = text .. " (" .. run .. "-" .. id .. "-" .. counter .. ")"
  end
  local headers = {["Content-Type"] = "application/json"}
  if token ~= "" then headers["Authorization"] = "Bearer " .. token end
  return wrk.format("POST", "/v1/route", headers, '{"message": "' .. escape(text) .. '"}')
end

function response(status, headers, body)
  -- The thread's other connections may still answer while it stops: not counted.
  if max_requests > 0 and answered >= max_requests then return end
  statuses[status] = (statuses[status] or 0) + 1
  answered = answered + 1
  if max_requests > 0 and answered == max_requests then
    -- wrk's main thread sleeps for the whole duration: the runner interrupts it (SIGINT,
    -- which wrk handles by stopping and reporting) once every thread has said so.
    io.write("WRK-DONE\n")
    io.flush()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local merged = {}
  for _, thread in ipairs(threads) do
    local counts = thread:get("statuses")
    for status, count in pairs(counts) do
      merged[tostring(status)] = (merged[tostring(status)] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(merged) do
    table.insert(parts, string.format('"%s": %d', status, count))
  end
  io.write(string.format(
    'WRK-JSON {"requests": %d, "duration_us": %d, "bytes": %d, '
    .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
    .. '"latency_us": {"min": %d, "mean": %.1f, "max": %d, "p50": %d, "p90": %d, '
    .. '"p95": %d, "p99": %d, "p999": %d}, "statuses": {%s}}\n',
    summary.requests, summary.duration, summary.bytes,
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout,
    latency.min, latency.mean, latency.max, latency:percentile(50),
    latency:percentile(90), latency:percentile(95), latency:percentile(99),
    latency:percentile(99.9), table.concat(parts, ", ")))
end
"""


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed no result."""


@dataclass(frozen=True)
class WrkOptions:
    url: str
    messages: list[str]
    connections: int = 1
    threads: int = 1
    seconds: float = 10.0
    fresh_every: int = 0
    """Every Nth request is a message never seen before (0: only the listed messages)."""
    token: str = ""
    timeout_s: float = 10.0
    max_requests: int = 0
    """Stop after this many answers (over all threads; 0: run for ``seconds``)."""


def available() -> str | None:
    return shutil.which("wrk")


def _lua_string(text: str) -> str:
    """A Lua string literal: backslash, quote and control bytes as decimal escapes (Lua
    has no \\u escape); other UTF-8 passes as is."""
    escaped = "".join(
        f"\\{ord(c):03d}" if c in '"\\' or ord(c) < 32 or ord(c) == 127 else c for c in text
    )
    return f'"{escaped}"'


def script(options: WrkOptions) -> str:
    messages = "{" + ", ".join(_lua_string(m) for m in options.messages) + "}"
    return (
        _SCRIPT.replace("{MESSAGES}", messages)
        .replace("{FRESH_EVERY}", str(options.fresh_every))
        .replace("{TOKEN}", _lua_string(options.token))
        .replace("{RUN}", _lua_string(secrets.token_hex(4)))
        .replace("{MAX_REQUESTS}", str(-(-options.max_requests // options.threads)))
    )


def parse(output: str) -> dict[str, Any]:
    for line in output.splitlines():
        if line.startswith("WRK-JSON "):
            parsed: dict[str, Any] = json.loads(line.removeprefix("WRK-JSON "))
            return parsed
    raise WrkError(f"wrk printed no result:\n{output[-2000:]}")


def run(options: WrkOptions) -> dict[str, Any]:
    """One wrk run: throughput, latency percentiles (ms), statuses, errors, client CPU."""
    binary = available()
    if binary is None:
        raise WrkError("wrk is not installed (apt-get install wrk)")
    if not options.messages:
        raise WrkError("no messages to send")
    with tempfile.TemporaryDirectory() as folder:
        lua = Path(folder) / "route.lua"
        lua.write_text(script(options))
        command = [
            binary,
            f"-t{options.threads}",
            f"-c{max(options.connections, options.threads)}",
            f"-d{max(round(options.seconds), 1)}s",
            f"--timeout={max(round(options.timeout_s), 1)}s",
            "-s",
            str(lua),
            options.url.rstrip("/") + "/v1/route",
        ]
        started = time.perf_counter()
        process = subprocess.Popen(  # noqa: S603 - a fixed binary and arguments
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        if process.stdout is None:  # unreachable: stdout=PIPE
            raise WrkError("wrk: no output pipe")
        lines, finished = [], 0
        for line in process.stdout:
            lines.append(line)
            if line.startswith("WRK-DONE"):
                finished += 1
                if finished == options.threads:
                    process.send_signal(signal.SIGINT)
        output = "".join(lines)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise WrkError(f"wrk exited with {code}:\n{output[-2000:]}")
    raw = parse(output)
    seconds = raw["duration_us"] / 1e6
    latency = {k: round(v / 1000, 3) for k, v in raw["latency_us"].items()}
    cpu_s = usage.ru_utime + usage.ru_stime
    statuses = {str(k): int(v) for k, v in raw["statuses"].items()}
    # With a count, the answers the script counted: wrk's own total also has the responses
    # that raced the stop on the thread's other connections.
    requests = sum(statuses.values()) if options.max_requests else raw["requests"]
    return {
        "tool": "wrk",
        "connections": options.connections,
        "threads": options.threads,
        "fresh_every": options.fresh_every,
        "seconds": round(seconds, 2),
        "requests": requests,
        "per_second": round(requests / seconds, 1) if seconds else None,
        "latency_ms": latency,
        "statuses": statuses,
        "non_2xx": sum(v for k, v in statuses.items() if not k.startswith("2")),
        "socket_errors": {k: v for k, v in raw["errors"].items() if k != "status"},
        "client_cpu_s": round(cpu_s, 3),
        "client_cpu_percent": round(100 * cpu_s / wall, 1) if wall else None,
    }
