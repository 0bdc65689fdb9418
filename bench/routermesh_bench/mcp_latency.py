"""What the router adds to an agent's MCP traffic: ``tools/call`` straight to a server
against the same call through the router's ``/mcp`` proxy and through
``/v1/dispatch/mcp``, and ``tools/list`` straight against ``/mcp``'s pre-selection for a
message (a routing decision, then the chosen server's tools).

Every path runs in the same process with the same client (the official SDK's), one
session each, interleaved call by call so that drift on a shared machine hits every path
alike; the figures are the paths' percentiles and their differences to the direct call.

    router-mesh bench mcp-latency --router http://127.0.0.1:8080 \\
        --server http://127.0.0.1:9102/mcp --route compute --tool snapshot_vm \\
        --arguments '{"vmid": 104}' --message "take a snapshot of vm 104" --out DIR
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import mcp_types as types
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from routermesh_bench.client import Progress
from routermesh_bench.metrics import latency_summary

MESSAGE_META = "routermesh.io/message"


@asynccontextmanager
async def session(url: str, token: str | None) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=None))
    async with (
        http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write, read_timeout_seconds=30) as opened,
    ):
        await opened.initialize()
        yield opened


async def _timed(call: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    result = await call()
    seconds = time.perf_counter() - started
    if getattr(result, "is_error", False):
        raise RuntimeError(f"the call failed: {result}")
    return seconds * 1000


async def measure(
    *,
    router: str,
    server: str,
    route: str,
    tool: str,
    arguments: dict[str, Any],
    message: str,
    calls: int,
    token: str | None = None,
) -> dict[str, Any]:
    """Interleaved timings (ms) of each path; the first call of each is a warm-up."""
    dispatch_url = f"{router}/v1/dispatch/mcp"
    async with AsyncExitStack() as stack:
        direct = await stack.enter_async_context(session(server, None))
        gateway = await stack.enter_async_context(session(f"{router}/mcp", token))
        relayed = await stack.enter_async_context(
            session(f"{dispatch_url}?{httpx2.QueryParams({'message': message})}", token)
        )
        preselect = types.PaginatedRequestParams.model_validate({"_meta": {MESSAGE_META: message}})
        fresh = iter(range(10**9))

        def unseen() -> types.PaginatedRequestParams:
            text = f"{message} (request {next(fresh)})"  # not cached: L0 decides each one
            return types.PaginatedRequestParams.model_validate({"_meta": {MESSAGE_META: text}})

        paths: dict[str, Callable[[], Awaitable[Any]]] = {
            "call direct": lambda: direct.call_tool(tool, arguments),
            "call via /mcp": lambda: gateway.call_tool(f"{route}__{tool}", arguments),
            "call via /v1/dispatch/mcp": lambda: relayed.call_tool(tool, arguments),
            "list direct": direct.list_tools,
            "list via /mcp, pre-selected": lambda: gateway.list_tools(params=preselect),
            "list via /mcp, pre-selected, new message": lambda: gateway.list_tools(params=unseen()),
        }
        for call in paths.values():
            await call()  # warm-up: connections, the decision cached
        timings: dict[str, list[float]] = {name: [] for name in paths}
        progress = Progress("mcp-latency rounds", calls)
        for _ in range(calls):
            for name, call in paths.items():
                timings[name].append(await _timed(call))
            progress.step()
        selected = await gateway.list_tools(params=preselect)
    summary = {name: latency_summary(values) for name, values in timings.items()}
    added = {
        "call via /mcp": _added(timings["call via /mcp"], timings["call direct"]),
        "call via /v1/dispatch/mcp": _added(
            timings["call via /v1/dispatch/mcp"], timings["call direct"]
        ),
        "list via /mcp, pre-selected": _added(
            timings["list via /mcp, pre-selected"], timings["list direct"]
        ),
        "list via /mcp, pre-selected, new message": _added(
            timings["list via /mcp, pre-selected, new message"], timings["list direct"]
        ),
    }
    return {
        "calls": calls,
        "route": route,
        "tool": tool,
        "message": message,
        "latency_ms": summary,
        "added_ms": added,
        "preselected_tools": [t.name for t in selected.tools],
    }


def _added(through: list[float], direct: list[float]) -> dict[str, float]:
    """Per-round differences (the same round's calls ran back to back), their p50/p95."""
    differences = sorted(a - b for a, b in zip(through, direct, strict=True))
    summary = latency_summary(differences)
    return {"p50": float(summary["p50"] or 0.0), "p95": float(summary["p95"] or 0.0)}


def run(args: Any) -> int:
    result = asyncio.run(
        measure(
            router=args.router.rstrip("/"),
            server=args.server,
            route=args.route,
            tool=args.tool,
            arguments=json.loads(args.arguments),
            message=args.message,
            calls=args.calls,
            token=Path(args.token_file).read_text().strip() if args.token_file else None,
        )
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "mcp-latency.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| path | p50 ms | p95 ms | added p50 / p95 ms |", "|---|---|---|---|"]
    for name, figures in result["latency_ms"].items():
        added = result["added_ms"].get(name)
        extra = f"{added['p50']:.2f} / {added['p95']:.2f}" if added else "-"
        lines.append(f"| {name} | {figures['p50']:.2f} | {figures['p95']:.2f} | {extra} |")
    (out / "mcp-latency.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))  # noqa: T201 - the command's answer
    return 0
