"""The routes' MCP servers: one :class:`ServerWatch` per route whose target speaks MCP.

The orchestrator, not the operator, talks to the servers: it already reaches every
target to dispatch (the NetworkPolicy allows exactly that), it mounts the servers'
credentials from Secrets, and it is where the tools become evidence. The operator only
reads what the orchestrator reports on ``/readyz``.

:meth:`Discovery.sync` follows the running config: a watch starts for each new MCP
route, and restarts when the route's URL or MCP settings change; a route that left the
config has its watch stopped. The tools each watch holds are the route evidence the
router builds its layers with (:meth:`tools`); which routes are unavailable is what it
serves with (:meth:`unavailable`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from routermesh.runtime.contract.config import McpConfig, RouterConfig, ToolEvidence
from routermesh.runtime.contract.readiness import McpReport
from routermesh.runtime.mcp_watch import ServerWatch
from routermesh.runtime.metrics import RouterMetrics

log = logging.getLogger("routermesh.mcp")

REPORTED_TOOL_NAMES = 32
"""Tool names a route's report lists (the count is always complete)."""


def read_token(path: str | None) -> str | None:
    """An MCP server's bearer token, read from its mounted Secret file now (a rotated
    Secret applies to the next session or request); None without one or when it cannot be
    read: the server's refusal says so, and no path or value is logged here."""
    if path is None:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


class Discovery:
    """The watches of one router, kept in step with its config."""

    def __init__(self, metrics: RouterMetrics, on_tools: Callable[[], None]) -> None:
        self._metrics = metrics
        self._on_tools = on_tools
        self._watches: dict[str, tuple[tuple[str, McpConfig], ServerWatch]] = {}

    async def sync(self, config: RouterConfig) -> None:
        wanted: dict[str, tuple[str, McpConfig]] = {
            route.name: (route.target, route.mcp)
            for route in config.routes
            if route.mcp is not None
            and route.target is not None
            and (route.mcp.discover_tools or route.mcp.health)
        }
        for name in list(self._watches):
            key, watch = self._watches[name]
            if wanted.get(name) != key:
                del self._watches[name]
                await watch.stop()
                self._forget(name)
                if watch.status.tools:
                    self._on_tools()
        for name, key in wanted.items():
            if name in self._watches:
                continue
            url, settings = key
            watch = ServerWatch(
                name,
                url,
                settings,
                self._metrics,
                on_tools=self._on_tools,
                token=functools.partial(read_token, settings.credentials_file),
            )
            self._watches[name] = (key, watch)
            watch.start()

    def _forget(self, route: str) -> None:
        for gauge in (self._metrics.mcp_tools, self._metrics.mcp_available):
            with contextlib.suppress(KeyError):
                gauge.remove(route)

    async def stop(self) -> None:
        watches = [watch for _, watch in self._watches.values()]
        self._watches.clear()
        await asyncio.gather(*(watch.stop() for watch in watches))

    def tools(self) -> dict[str, tuple[ToolEvidence, ...]]:
        """The tools in use per route (the last good list of each server)."""
        return {
            name: watch.status.tools
            for name, (_, watch) in self._watches.items()
            if watch.status.tools
        }

    def routes(self) -> tuple[str, ...]:
        """The MCP routes, in the config's order."""
        return tuple(self._watches)

    def watch(self, route: str) -> ServerWatch | None:
        """The watch of ``route``'s MCP server (None: the route is not an MCP route)."""
        found = self._watches.get(route)
        return found[1] if found else None

    def unavailable(self) -> dict[str, str | None]:
        """Routes whose server does not answer, with their fallback route (None: escalate)."""
        return {
            name: settings.fallback_route
            for name, ((_, settings), watch) in self._watches.items()
            if not watch.status.available
        }

    async def wait_settled(self, timeout: float) -> bool:
        """Wait until every server has been tried once (listed or failed), at most
        ``timeout`` seconds: a new pod's first decisions then already use the tools."""
        waits = [watch.settled.wait() for _, watch in self._watches.values()]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), timeout)
        except TimeoutError:
            return False
        return True

    def report(self) -> dict[str, McpReport]:
        out = {}
        for name, ((url, settings), watch) in sorted(self._watches.items()):
            status = watch.status
            out[name] = McpReport(
                url=url,
                discovery=settings.discover_tools,
                health=settings.health,
                available=status.available,
                server=status.server,
                tools=len(status.tools),
                tool_names=[t.name for t in status.tools[:REPORTED_TOOL_NAMES]],
                listed=status.listed,
                refreshed_at=(
                    datetime.fromtimestamp(status.refreshed_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                    if status.refreshed_at is not None
                    else None
                ),
                last_error=status.last_error,
                notes=list(status.notes),
            )
        return out
