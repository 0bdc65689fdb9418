"""Entry point of the orchestrator container: ``router-mesh orchestrator``."""

from __future__ import annotations

import importlib.util
import logging
import socket

import uvicorn

from routermesh.runtime.app import create_app
from routermesh.runtime.contract.config import CONFIG_DIR, MODELS_DIR, ORCHESTRATOR_PORT
from routermesh.runtime.logs import configure_logging
from routermesh.runtime.router import POLL_SECONDS, Router

KEEP_ALIVE_SECONDS = 75


def fast_stack() -> tuple[str, str]:
    """uvicorn's (HTTP parser, event loop). httptools, a dependency, where it is installed
    (h11, pure Python, otherwise): 1.4x the decisions per second under the bounded load.
    The loop stays asyncio: uvloop served as many but doubled the p95 (the encoder's
    thread and the loop fight harder for the two cores; docs/benchmarks.md)."""
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return http, "asyncio"


def listening_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A bound TCP socket for ``host:port`` (uvicorn listens on it). ``reuse_port``: other
    processes that ask the same may bind it too, and the kernel spreads new connections
    over them (several orchestrator workers); without it a second bind fails, as it should
    when a router is started twice by mistake."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve(
    config_dir: str = CONFIG_DIR,
    *,
    models_dir: str = MODELS_DIR,
    host: str = "0.0.0.0",  # noqa: S104 - a pod's port; the Service decides who reaches it
    port: int = ORCHESTRATOR_PORT,
    ops_host: str | None = None,
    ops_port: int | None = None,
    log_level: str = "info",
    poll_seconds: float = POLL_SECONDS,
    reuse_port: bool = False,
) -> None:
    """Serve the API on ``host:port``; with ``ops_port``, /healthz, /readyz and /metrics
    on ``ops_host:ops_port`` instead (default host: ``host``)."""
    configure_logging(log_level)
    logging.getLogger("routermesh.router").info(
        "orchestrator starting",
        extra={"event": "starting", "config_dir": config_dir, "port": port, "ops_port": ops_port},
    )
    if ops_port is not None and ops_port == port:
        raise ValueError("the operations port must differ from the API port")
    sockets = [listening_socket(host, port, reuse_port=reuse_port)]
    if ops_port is not None:
        sockets.append(listening_socket(ops_host or host, ops_port))
    router = Router(config_dir, models_dir=models_dir, poll_seconds=poll_seconds)
    app = create_app(router, ops_port=ops_port)
    http, loop = fast_stack()
    logging.getLogger("routermesh.router").info(
        "HTTP stack", extra={"event": "http_stack", "http": http, "loop": loop}
    )
    config = uvicorn.Config(
        app,
        http=http,
        loop=loop,
        log_config=None,  # keep the JSON handlers configured above
        access_log=False,
        timeout_graceful_shutdown=10,
        # Longer than clients keep idle connections (httpx 5 s, most pools under 60 s), so
        # the client closes an idle connection first: a server closing it as a request
        # arrives on it would fail that request (measured with `bench load`).
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        lifespan="on",
    )
    uvicorn.Server(config).run(sockets=sockets)
