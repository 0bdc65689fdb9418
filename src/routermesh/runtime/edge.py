"""The orchestrator's HTTP edge: bearer-token authentication of the API (``/v1/*`` and ``/mcp``),
the operations-port split, request IDs and the request body cap.

The token lives in a file (a mounted Secret key, see ``ApiConfig.token_file``), so a
rotated Secret takes effect without a restart: the file is read again whenever its
modification time or size changes. Comparison is constant-time; neither the expected
nor the presented token is ever logged or echoed.

Failing closed is deliberate here, unlike routing: when a token file is configured but
cannot be read, requests get 503 (never an open API).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from routermesh.runtime.logs import REQUEST_ID

log = logging.getLogger("routermesh.auth")

MCP_PATH = "/mcp"
PROTECTED_PREFIXES = ("/v1/", MCP_PATH)
"""Paths that need the API token when one is configured: the API and its MCP endpoint."""


class TokenUnavailableError(Exception):
    """The configured token file is missing, unreadable or empty."""


@dataclass
class _Cached:
    path: str
    stamp: tuple[int, int]
    token: bytes


class TokenFile:
    """The current token of a file, re-read when the file changes."""

    def __init__(self) -> None:
        self._cached: _Cached | None = None
        self._reported: str | None = None

    def token(self, path: str) -> bytes:
        try:
            file = Path(path)
            status = file.stat()
            stamp = (status.st_mtime_ns, status.st_size)
            cached = self._cached
            if cached is not None and cached.path == path and cached.stamp == stamp:
                return cached.token
            token = file.read_bytes().strip()
        except OSError as error:
            self._report(path, error.strerror or "cannot be read")
            raise TokenUnavailableError from None
        if not token:
            self._report(path, "is empty")
            raise TokenUnavailableError
        self._cached = _Cached(path, stamp, token)
        self._reported = None
        return token

    def _report(self, path: str, problem: str) -> None:
        if self._reported != path + problem:
            self._reported = path + problem
            log.error(
                "API token file unusable: requests get 503",
                extra={"event": "auth_token_unavailable", "file": path, "problem": problem},
            )


def presented_token(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, credential = value.partition(b" ")
            if scheme.lower() == b"bearer" and credential.strip():
                return credential.strip()
            return None
    return None


class BearerAuth:
    """ASGI middleware: ``/v1/*`` and ``/mcp`` need ``Authorization: Bearer <token>`` when
    ``token_file()`` names a file; other paths (health, metrics) pass."""

    def __init__(
        self,
        app: ASGIApp,
        token_file: Callable[[], str | None],
        on_failure: Callable[[str], None] = lambda _reason: None,
    ) -> None:
        self.app = app
        self.token_file = token_file
        self.on_failure = on_failure
        self.tokens = TokenFile()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = self.token_file() if scope["type"] == "http" else None
        if path is None or not str(scope.get("path", "")).startswith(PROTECTED_PREFIXES):
            await self.app(scope, receive, send)
            return
        try:
            expected = self.tokens.token(path)
        except TokenUnavailableError:
            self.on_failure("token_unavailable")
            await _answer(scope, receive, send, 503, "API token is not available")
            return
        presented = presented_token(list(scope.get("headers") or []))
        if presented is None:
            self.on_failure("missing")
            await _answer(scope, receive, send, 401, "missing bearer token")
            return
        if not hmac.compare_digest(presented, expected):
            self.on_failure("invalid")
            await _answer(scope, receive, send, 401, "invalid bearer token")
            return
        await self.app(scope, receive, send)


async def _answer(scope: Scope, receive: Receive, send: Send, status: int, error: str) -> None:
    headers = {"WWW-Authenticate": 'Bearer realm="router-mesh"'} if status == 401 else None
    await JSONResponse({"error": error}, status_code=status, headers=headers)(scope, receive, send)


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestId:
    """ASGI middleware: every answer carries ``X-Request-ID``, the caller's when it is a
    plain token of at most 128 characters, else a new one; log lines carry it too, so a
    client can match each answer to its request (and a log line to an answer)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)

        async def with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, with_id)
        finally:
            REQUEST_ID.reset(token)


class PortSplit:
    """ASGI middleware: with an operations port, health and metrics answer only there
    and the API only on the other port(s); each gets 404 on the wrong one."""

    OPERATIONS = frozenset({"/healthz", "/readyz", "/metrics"})

    def __init__(self, app: ASGIApp, ops_port: int | None) -> None:
        self.app = app
        self.ops_port = ops_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.ops_port is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        server = scope.get("server") or (None, None)
        on_ops_port = server[1] == self.ops_port
        if (scope.get("path") in self.OPERATIONS) != on_ops_port:
            where = "the operations port" if on_ops_port else "the API port"
            await _answer(scope, receive, send, 404, f"not served on {where}")
            return
        await self.app(scope, receive, send)


BODY_OVERHEAD_BYTES = 16 * 1024
DRAIN_MAX_BYTES = 64 * 1024 * 1024
"""How much of a refused body is read and dropped so the client reads the 413 (beyond
it the connection closes: a client still sending may see a reset)."""
DRAIN_SECONDS = 10.0
"""How long a refused body may take to arrive (a slow sender does not hold a worker)."""


def body_limit(max_message_chars: int) -> int:
    """Cap on a request body for messages of ``max_message_chars``, checked before the body
    is read: a JSON-escaped character takes at most 6 bytes (``\\u0000``). A larger body
    is refused with 413 and never buffered."""
    return 6 * max_message_chars + BODY_OVERHEAD_BYTES


class _BodyTooLargeError(Exception):
    pass


class BodyLimit:
    """ASGI middleware: 413 for bodies over ``max_bytes()``, by Content-Length or counted.

    The rest of a refused body is read and dropped (never kept) before the answer, up to
    :data:`DRAIN_MAX_BYTES`: a server that answers and closes while the client is still
    sending makes the kernel reset the connection, and a client that sends the whole body
    before reading (Python's urllib, many SDKs) gets a reset instead of the 413.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: Callable[[], int],
        on_refused: Callable[[], None] = lambda: None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes()
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            # A client waiting for "100 Continue" has sent nothing: reading would invite
            # the body it need not send.
            waiting = headers.get(b"expect", b"").lower() == b"100-continue"
            await self._refuse(scope, receive, send, limit, drain=not waiting)
            return
        seen = 0
        finished = False
        started = False

        async def counting_receive() -> Message:
            nonlocal seen, finished
            message = await receive()
            seen += len(message.get("body", b""))
            finished = message["type"] != "http.request" or not message.get("more_body", False)
            if seen > limit:
                raise _BodyTooLargeError
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLargeError:
            if not started:
                await self._refuse(scope, receive, send, limit, drain=not finished)

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, limit: int, *, drain: bool
    ) -> None:
        self.on_refused()
        if drain:
            await _drain(receive)
        response = JSONResponse(
            status_code=413, content={"error": f"request body larger than {limit} bytes"}
        )
        await response(scope, receive, send)


async def _drain(receive: Receive) -> None:
    """Read and drop what is left of a request body, within the caps."""
    dropped = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DRAIN_SECONDS):
            while dropped <= DRAIN_MAX_BYTES:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away
                dropped += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return
