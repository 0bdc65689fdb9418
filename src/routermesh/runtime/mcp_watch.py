"""One route's MCP server, watched: its tools (``tools/list``) and whether it answers.

A :class:`ServerWatch` keeps one MCP session open to the server (the official SDK's
streamable HTTP client), and in it:

- lists the tools (every page, up to a bound) after the handshake, again every
  ``refresh_seconds`` and at once when the server announces ``tools/list_changed``; a
  list that fails or is malformed keeps the last good one and records the error;
- pings every ``ping_seconds`` when health checks are on. The SDK does not notice a dead
  server while the session is idle, so the ping is what does: a ping or a connection that
  fails ``failures_to_unavailable`` times in a row makes the route unavailable, and the
  first success makes it available again (it reconnects on its own, with backoff).

It never raises: every failure is a status (``last_error``), a metric and a log line,
and the router keeps routing (fail open). The bearer token is read from its mounted
Secret file at each connection (a rotated Secret applies without a restart) and never
logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import mcp_types as types
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from routermesh.runtime.contract.config import McpConfig, ToolEvidence
from routermesh.runtime.mcp_tools import ToolList, tool_list
from routermesh.runtime.metrics import RouterMetrics

log = logging.getLogger("routermesh.mcp")

MAX_PAGES = 32
"""Pages of ``tools/list`` read at most; a server that pages on forever is cut here."""
MAX_BACKOFF_SECONDS = 30.0


@dataclass
class ServerStatus:
    """What the router knows about one route's MCP server (``/readyz`` reports it)."""

    route: str
    tools: tuple[ToolEvidence, ...] = ()
    definitions: tuple[dict[str, Any], ...] = ()
    """The kept tools as the server listed them (input schema and all), for agents that
    connect to the router as an MCP server."""
    listed: int = 0
    available: bool = True
    """Until the server is seen failing, a route is available: routing fails open, never
    closed."""
    failures: int = 0
    server: str | None = None
    refreshed_at: float | None = None
    last_error: str | None = None
    notes: tuple[str, ...] = ()
    attempts: int = 0
    """Connections tried."""


def describe(error: BaseException) -> str:
    """A failure in a few words: the innermost cause of an exception group, its type and
    message (never a header; the URL is in the route's status already)."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    if isinstance(error, TimeoutError):
        return "timed out"
    text = " ".join(str(error).split())[:200]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class ServerWatch:
    """Watches the MCP server of ``route`` at ``url`` until :meth:`stop`."""

    def __init__(
        self,
        route: str,
        url: str,
        settings: McpConfig,
        metrics: RouterMetrics,
        *,
        on_tools: Callable[[], None],
        token: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.route, self.url, self.settings = route, url, settings
        self.status = ServerStatus(route=route)
        self.settled = asyncio.Event()
        """Set once the first connection attempt has ended (tools listed or failed)."""
        self._metrics = metrics
        self._on_tools = on_tools
        self._token = token
        self._timeout = settings.timeout_ms / 1000
        self._stop = asyncio.Event()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._live: ClientSession | None = None
        self._reported = False
        """The current session's failure is counted already (while it is torn down)."""

    async def call_tool(
        self, name: str, arguments: dict[str, Any] | None, timeout: float
    ) -> types.CallToolResult:
        """Call ``name`` on the server over the watch's session; raises ``ConnectionError``
        while there is none (the server is down or not yet reached)."""
        session = self._live
        if session is None:
            raise ConnectionError(f"the MCP server of route {self.route!r} is not connected")
        async with asyncio.timeout(timeout):
            return await session.call_tool(name, arguments)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"mcp-watch-{self.route}")

    async def stop(self) -> None:
        """Leave the session (the server gets its DELETE), or cut it after a grace period."""
        self._stop.set()
        task = self._task
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), self._timeout)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            self.status.attempts += 1
            self._reported = False
            try:
                await self._session()
            except Exception as error:  # a server must never take the router down
                if not self._reported:
                    self._failed(describe(error))
            else:
                if not self._reported:
                    backoff = 0.5
            self.settled.set()
            if self._stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), backoff)
            backoff = min(backoff * 2, self.settings.ping_seconds, MAX_BACKOFF_SECONDS)

    def _client(self) -> httpx2.AsyncClient:
        token = self._token()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # No read timeout on the client: the notification stream idles for long; each
        # exchange is bounded by the session's read timeout and asyncio.timeout instead.
        return httpx2.AsyncClient(
            headers=headers,
            timeout=httpx2.Timeout(self._timeout, read=None),
            trust_env=False,
            follow_redirects=False,
        )

    async def _session(self) -> None:
        # Leaving a session sends the server a DELETE and closes its streams: bounded once
        # the session failed, since a hung server would never answer them.
        scope = anyio.CancelScope()
        try:
            with scope:
                await self._connected(scope)
        finally:
            self._live = None

    async def _connected(self, scope: anyio.CancelScope) -> None:
        http = self._client()
        async with (
            http,
            streamable_http_client(self.url, http_client=http) as (read, write),
            ClientSession(
                read, write, read_timeout_seconds=self._timeout, message_handler=self._on_message
            ) as session,
        ):
            try:
                await self._serve(session)
            except Exception as error:
                self._failed(describe(error))
                self._reported = True
                scope.deadline = anyio.current_time() + self._timeout
                raise

    async def _serve(self, session: ClientSession) -> None:
        """The session's life: handshake, then tool lists and pings until the stop."""
        async with asyncio.timeout(self._timeout):
            init = await session.initialize()
        info = init.server_info
        self.status.server = f"{info.name} {info.version}".strip()
        self._live = session
        self._succeeded()
        if self.settings.discover_tools and init.capabilities.tools is None:
            self._note_refresh("error", "the server offers no tools (no tools capability)")
            self.settings = self.settings.model_copy(update={"discover_tools": False})
        next_refresh = 0.0
        while not self._stop.is_set():
            if self.settings.discover_tools and (
                self._changed.is_set() or time.monotonic() >= next_refresh
            ):
                self._changed.clear()
                await self._refresh(session)
                self.settled.set()
                next_refresh = time.monotonic() + self.settings.refresh_seconds
            if await self._idle(next_refresh):
                return
            if self.settings.health and not self._changed.is_set():
                async with asyncio.timeout(self._timeout):
                    await session.send_ping()
                self._metrics.mcp_checks.labels(route=self.route, outcome="ok").inc()
                self._succeeded()

    async def _idle(self, next_refresh: float) -> bool:
        """Wait for a change notice, the next ping or refresh, or the stop; True on stop."""
        waits = [next_refresh - time.monotonic()] if self.settings.discover_tools else []
        if self.settings.health:
            waits.append(self.settings.ping_seconds)
        delay = max(0.0, min(waits, default=3600.0))
        stop = asyncio.ensure_future(self._stop.wait())
        changed = asyncio.ensure_future(self._changed.wait())
        try:
            await asyncio.wait({stop, changed}, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (stop, changed):
                waiter.cancel()
        return self._stop.is_set()

    async def _on_message(self, message: object) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            self._metrics.mcp_list_changed.labels(route=self.route).inc()
            self._changed.set()

    async def _refresh(self, session: ClientSession) -> None:
        entries: list[dict[str, Any]] = []
        cursor: str | None = None
        pages = 0
        cap = self.settings.max_tools + 64  # read past the cap only to report what was cut
        try:
            while pages < MAX_PAGES and len(entries) < cap:
                params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
                async with asyncio.timeout(self._timeout):
                    result = await session.list_tools(params=params)
                pages += 1
                entries += [t.model_dump(by_alias=True, mode="json") for t in result.tools]
                cursor = result.next_cursor
                if not cursor:
                    break
        except Exception as error:  # keep the last good list: only the error is new
            self._note_refresh("error", f"tools/list failed: {describe(error)}")
            return
        listed = tool_list(
            entries,
            max_tools=self.settings.max_tools,
            max_text_bytes=self.settings.max_text_bytes,
        )
        notes = listed.notes + (
            (f"stopped reading after {pages} pages; the server lists more",) if cursor else ()
        )
        kept = {tool.name for tool in listed.tools}
        first = {}
        for entry in entries:
            name = entry.get("name")
            if name in kept and name not in first:
                first[name] = entry
        definitions = tuple(first.values())
        self._publish(listed, notes, definitions)

    def _publish(
        self, listed: ToolList, notes: tuple[str, ...], definitions: tuple[dict[str, Any], ...]
    ) -> None:
        status = self.status
        changed = listed.tools != status.tools or definitions != status.definitions
        status.definitions = definitions
        status.tools, status.listed, status.notes = listed.tools, listed.listed, notes
        status.refreshed_at = time.time()
        status.last_error = None
        self._note_refresh("ok")
        self._metrics.mcp_tools.labels(route=self.route).set(len(listed.tools))
        if notes:
            log.warning(
                "MCP tool list cut",
                extra={"event": "mcp_tools_cut", "route": self.route, "notes": list(notes)},
            )
        if changed:
            log.info(
                "MCP tools discovered",
                extra={
                    "event": "mcp_tools",
                    "route": self.route,
                    "tools": len(listed.tools),
                    "server": status.server,
                },
            )
            self._on_tools()

    def _note_refresh(self, outcome: str, error: str | None = None) -> None:
        self._metrics.mcp_refreshes.labels(route=self.route, outcome=outcome).inc()
        if error is not None:
            self.status.last_error = error
            log.warning(
                "MCP tool discovery failed, keeping the last good list",
                extra={"event": "mcp_discovery_error", "route": self.route, "error": error},
            )

    def _succeeded(self) -> None:
        status = self.status
        status.failures = 0
        if not status.available:
            status.available = True
            log.info(
                "MCP server answers again: route available",
                extra={"event": "mcp_available", "route": self.route},
            )
        self._metrics.mcp_available.labels(route=self.route).set(1)

    def _failed(self, error: str) -> None:
        status = self.status
        status.failures += 1
        status.last_error = error
        self._metrics.mcp_checks.labels(route=self.route, outcome="error").inc()
        if (
            self.settings.health
            and status.available
            and status.failures >= self.settings.failures_to_unavailable
        ):
            status.available = False
            self._metrics.mcp_available.labels(route=self.route).set(0)
            log.warning(
                "MCP server not answering: route unavailable, its requests fail open",
                extra={
                    "event": "mcp_unavailable",
                    "route": self.route,
                    "error": error,
                    "failures": status.failures,
                },
            )
        else:
            log.info(
                "MCP server connection failed",
                extra={"event": "mcp_connect_error", "route": self.route, "error": error},
            )
