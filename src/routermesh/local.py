"""``router-mesh local``: the whole router pod as local processes, no cluster needed.

It renders the RouterMesh and RouteTable YAML with the operator's own function,
makes the layers' models available (fetched from their sources like the
model-download Job does, or, when those cannot be reached, the models shipped in
PyPI packages, saying so), writes the config where the orchestrator watches it,
and starts the pod's three containers as child processes with the pod's entry
points: ``router-mesh serve-model --layer l1``, ``... --layer l2`` and
``router-mesh orchestrator``. It waits for ``/readyz``, prints the URL, restarts a
child that dies (as the kubelet would), re-renders the config when the YAML changes
(the orchestrator reloads it live, as from a ConfigMap; an edit that no longer renders
keeps the running config and is shown in ``config_error``, see
:mod:`routermesh.runtime.source_error`), and on Ctrl-C or SIGTERM
stops everything it started. Children also get SIGTERM if this process is killed
outright (Linux parent-death signal), so nothing is left running.

Differences from the pod, on purpose: model servers listen on ``--port`` + 1 and + 2;
Secret references cannot be read locally, so a Redis URL from a Secret falls back to
the in-process cache unless ``--redis-url`` is given, and the escalation credential is
left out.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.util
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO
from urllib.parse import urlsplit

import httpx

from routermesh import manifests
from routermesh.operator.render import RenderError, render_config
from routermesh.runtime import source_error
from routermesh.runtime.contract.config import (
    CONFIG_FILENAME,
    MAX_ORCHESTRATOR_WORKERS,
    CacheConfig,
    ExamplesSource,
    LayerConfig,
    ModelRef,
    RouterConfig,
)
from routermesh.runtime.contract.models import FetchItem
from routermesh.runtime.fetch import FetchError, fetch_one, is_present
from routermesh.runtime.head_artifact import HEAD_FILE
from routermesh.runtime.model_server import ModelServerError, find_llama_server
from routermesh.runtime.packaged import PACKAGED, PackagedModelError, materialize

log = logging.getLogger("routermesh.local")

PACKAGED_FOR_LAYER = {
    "l0": ("minilm-l6-onnx-int8", "minilm-l6-tokenizer"),
    "l1": ("smollm2-135m",),
    "l2": ("qwen2.5-coder-0.5b",),
}
"""The offline stand-in of each seed layer when its source cannot be reached (the files
of a model made of several share one folder)."""

_PR_SET_PDEATHSIG = 1
MAX_START_RESTARTS = 3
READY_CHECKS_PER_WORKER = 8
"""With several orchestrator workers, readiness answers in a row on new connections: a
worker still loading is missed by all of them with odds of 2^-16 for two workers."""


class LocalError(Exception):
    pass


@dataclass
class LocalOptions:
    files: list[Path]
    namespace: str = "default"
    mesh: str | None = None
    port: int = 8080
    host: str = "127.0.0.1"
    models_dir: Path = Path(".cache/models")
    state_dir: Path = Path(".cache/local")
    offline: bool = False
    redis_url: str | None = None
    threads: int | None = None
    workers: int = 1
    """Orchestrator processes sharing the API port (SO_REUSEPORT)."""
    ready_timeout: float = 900.0
    watch_seconds: float = 1.0
    log_level: str = "info"
    disable: tuple[str, ...] = ()
    """Layers to run disabled whatever the YAML says (benchmarks, trying a cascade out)."""
    token_file: Path | None = None
    """File with the API's bearer token (in the cluster: spec.api.tokenSecretRef)."""
    wait_for_head: bool = False
    """Train L0's head before starting (benchmarks); otherwise it trains beside the pod."""
    also: tuple[str, ...] = ()
    """Commands started beside the router and stopped with it (the MCP servers the routes
    point at, on a laptop); restarted like the pod's own processes when they exit."""


def manifest_digest(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in manifests.manifest_files(files):
        digest.update(str(path).encode() + b"\0")
        with contextlib.suppress(OSError):
            digest.update(path.read_bytes())
    return digest.hexdigest()


def render(options: LocalOptions) -> RouterConfig:
    """Render the one RouterMesh of the files (the operator's function); LocalError if not."""
    missing = [str(p) for p in options.files if not p.exists()]
    if missing:
        raise LocalError(f"no such file or folder: {', '.join(missing)}")
    found = manifests.load(options.files, default_namespace=options.namespace)
    if found.problems:
        raise LocalError("; ".join(found.problems))
    meshes = [m for m in found.meshes if options.mesh in (None, m.metadata.name)]
    if len(meshes) != 1:
        names = ", ".join(m.metadata.name for m in found.meshes) or "none"
        raise LocalError(f"expected exactly one RouterMesh (use --mesh); found: {names}")
    try:
        return render_config(meshes[0], found.tables)
    except RenderError as error:
        raise LocalError(f"RouterMesh {meshes[0].metadata.name!r}: {error}") from error


def _reachable(uri: str, timeout: float = 3.0) -> bool:
    if uri.startswith("file:"):
        return True
    if uri.startswith("hf://"):
        endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
        parts = urlsplit(endpoint)
    else:
        parts = urlsplit(uri)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def ensure_models(config: RouterConfig, options: LocalOptions) -> RouterConfig:
    """Each enabled layer's model on disk: its own source, else the packaged stand-in."""
    layers = []
    for layer in config.layers:
        if not layer.enabled:
            layers.append(layer)
            continue
        item = FetchItem(uri=layer.model.uri, sha256=layer.model.sha256, path=layer.model.path)
        problem = None
        if is_present(item, options.models_dir):
            layers.append(layer)
            continue
        if options.offline:
            problem = "--offline"
        elif not _reachable(layer.model.uri):
            problem = "its source cannot be reached from this machine"
        else:
            try:
                first = options.files[0]
                base = first if first.is_dir() else first.parent
                fetch_one(item, options.models_dir, base_dir=base)
            except FetchError as error:
                problem = str(error)
            else:
                layers.append(layer)
                continue
        layers.append(layer.model_copy(update={"model": _packaged(layer.name, options, problem)}))
    layers = [_ensure_head_base(layer, options) for layer in layers]
    for source in config.examples_from:
        _ensure_examples(source, options)
    return config.model_copy(update={"layers": tuple(layers)})


HEAD_BASE_PACKAGED = ("minilm-l6-fp32", "minilm-l6-fp32-config", "minilm-l6-fp32-tokenizer")


def _ensure_head_base(layer: LayerConfig, options: LocalOptions) -> LayerConfig:
    """A trained head's base encoder on disk: its own source, else the packaged one."""
    head = layer.head
    if head is None or not layer.enabled:
        return layer
    item = FetchItem(uri=head.base.uri, sha256=head.base.sha256, path=head.base.path)
    if is_present(item, options.models_dir):
        return layer
    problem = "--offline" if options.offline else None
    if problem is None and _reachable(head.base.uri):
        first = options.files[0]
        try:
            fetch_one(item, options.models_dir, base_dir=first if first.is_dir() else first.parent)
        except FetchError as error:
            problem = str(error)
        else:
            return layer
    log.warning(
        "using the packaged base encoder for the trained head",
        extra={"event": "packaged_model", "layer": layer.name, "because": problem or "offline"},
    )
    try:
        files = materialize(options.models_dir / "packaged", list(HEAD_BASE_PACKAGED))
    except PackagedModelError as error:
        raise LocalError(f"layer {layer.name} head: {error}") from error
    folder = files[HEAD_BASE_PACKAGED[0]].parent
    base = ModelRef(uri=folder.resolve().as_uri(), path=str(folder.relative_to(options.models_dir)))
    return layer.model_copy(update={"head": head.model_copy(update={"base": base})})


def _ensure_examples(source: ExamplesSource, options: LocalOptions) -> None:
    """Fetch a RouteTable's ``examplesFrom`` set where the orchestrator reads it, like the
    download Job; unlike a model there is no stand-in, so a failure is an error."""
    item = FetchItem(uri=source.uri, sha256=source.sha256, path=source.path, kind="examples")
    if is_present(item, options.models_dir):
        return
    first = options.files[0]
    try:
        fetch_one(item, options.models_dir, base_dir=first if first.is_dir() else first.parent)
    except FetchError as error:
        raise LocalError(f"examplesFrom of {source.source or 'a RouteTable'}: {error}") from error


def _packaged(layer: str, options: LocalOptions, problem: str) -> ModelRef:
    names = PACKAGED_FOR_LAYER.get(layer)
    if names is None:
        raise LocalError(f"layer {layer}: model unavailable ({problem}) and no packaged stand-in")
    models = [PACKAGED[name] for name in names]
    log.warning(
        "using a packaged model",
        extra={
            "event": "packaged_model",
            "layer": layer,
            "because": problem,
            "model": ", ".join(m.description for m in models),
        },
    )
    try:
        files = materialize(options.models_dir / "packaged", list(names))
    except PackagedModelError as error:
        raise LocalError(f"layer {layer}: {error}") from error
    if len(models) == 1 and not models[0].folder:
        path, sha256 = files[names[0]], models[0].sha256
    else:
        # A folder model: its files are verified one by one above.
        path, sha256 = files[names[0]].parent, None
    return ModelRef(
        uri=path.resolve().as_uri(),
        sha256=sha256,
        path=str(path.relative_to(options.models_dir)),
    )


def localize(config: RouterConfig, options: LocalOptions) -> RouterConfig:
    """The rendered config adapted to one machine (ports, cache, secrets), sealed again."""
    ports = {"l1": options.port + 1, "l2": options.port + 2}
    servers = [layer for layer in config.layers if layer.kind == "generative"]
    unknown = [layer.name for layer in servers if layer.name not in ports]
    if unknown:
        raise LocalError(f"local mode serves models for l1 and l2; the config also has {unknown}")
    layers = tuple(
        layer.model_copy(update={"url": f"http://127.0.0.1:{ports[layer.name]}"})
        if layer.kind == "generative"
        else layer
        for layer in config.layers
    )
    cache = config.cache
    if options.redis_url:
        cache = cache.model_copy(
            update={"backend": "redis", "redis_url": options.redis_url, "redis_url_file": None}
        )
    elif cache.redis_url_file:
        log.warning(
            "the Redis URL comes from a Secret: using the in-process cache (pass --redis-url)",
            extra={"event": "local_cache"},
        )
        cache = CacheConfig(
            ttl_seconds=cache.ttl_seconds,
            failure_ttl_seconds=cache.failure_ttl_seconds,
            max_entries=cache.max_entries,
        )
    escalation = config.escalation
    if escalation.credentials_file:
        escalation = escalation.model_copy(update={"credentials_file": None})
    api = config.api
    if options.token_file is not None:
        api = api.model_copy(update={"token_file": str(options.token_file.resolve())})
    elif api.token_file:
        log.warning(
            "the API token comes from a Secret: the local API is open (pass --token-file)",
            extra={"event": "local_auth"},
        )
        api = api.model_copy(update={"token_file": None})
    return config.model_copy(
        update={"layers": layers, "cache": cache, "escalation": escalation, "api": api}
    ).sealed()


def write_config(config: RouterConfig, directory: Path) -> None:
    """Replace ``router.json`` in one rename, so the orchestrator never reads half a file."""
    directory.mkdir(parents=True, exist_ok=True)
    temporary = directory / f".{CONFIG_FILENAME}.tmp"
    temporary.write_text(config.to_json())
    temporary.replace(directory / CONFIG_FILENAME)


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        # As the servers bind: connections of a server that just stopped (TIME_WAIT) do not
        # make the port busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)
    once: bool = False
    """Runs to completion (the head trainer, like the operator's Job): never restarted."""

    def start(self) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - our own entry points
            self.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Own process group: stop() signals the server's helpers too (vLLM forks).
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads touch state in between
        )
        self.started_at = time.monotonic()
        threading.Thread(target=self._relay, args=(self.process.stdout,), daemon=True).start()

    def _relay(self, stream: IO[bytes] | None) -> None:
        if stream is None:
            return
        for line in iter(stream.readline, b""):
            # Keep draining even when our stderr is gone, or the child blocks on a full pipe.
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(f"[{self.name}] {line.decode(errors='replace')}")
                sys.stderr.flush()

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        group = self.process.pid  # its own session: the group id is its pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
            self.process.wait()


def also_argv(command: str) -> list[str]:
    """A ``--also`` command as argv; ``router-mesh ...`` runs this install's CLI (the venv
    need not be on PATH)."""
    argv = shlex.split(command)
    if argv and argv[0] == "router-mesh":
        return [sys.executable, "-m", "routermesh.cli", *argv[1:]]
    return argv


class LocalPod:
    def __init__(self, options: LocalOptions) -> None:
        self.options = options
        self.config_dir = options.state_dir / "config"
        self.children: list[Child] = []
        self._stopping = threading.Event()
        self.config: RouterConfig | None = None

    def prepare(self) -> RouterConfig:
        if not 1 <= self.options.workers <= MAX_ORCHESTRATOR_WORKERS:
            raise LocalError(
                f"workers must be 1 to {MAX_ORCHESTRATOR_WORKERS}, not {self.options.workers}"
            )
        rendered = render(self.options)
        unknown = set(self.options.disable) - {layer.name for layer in rendered.layers}
        if unknown:
            raise LocalError(f"cannot disable unknown layer(s): {', '.join(sorted(unknown))}")
        rendered = rendered.model_copy(
            update={
                "layers": tuple(
                    layer.model_copy(update={"enabled": False})
                    if layer.name in self.options.disable
                    else layer
                    for layer in rendered.layers
                )
            }
        )
        config = ensure_models(localize(rendered, self.options), self.options)
        return config.sealed()

    def child_commands(self, config: RouterConfig) -> list[Child]:
        cli = [sys.executable, "-m", "routermesh.cli"]
        beside = [
            Child(f"also-{number}", also_argv(command))
            for number, command in enumerate(self.options.also, start=1)
        ]
        children = beside + [
            Child(
                layer.name,
                [
                    *cli,
                    "serve-model",
                    "--layer",
                    layer.name,
                    "--config-dir",
                    str(self.config_dir),
                    "--models-dir",
                    str(self.options.models_dir),
                    *(["--threads", str(self.options.threads)] if self.options.threads else []),
                ],
            )
            for layer in config.layers
            if layer.enabled and layer.kind == "generative"
        ]
        workers = self.options.workers
        children += [
            Child(
                "orchestrator" if worker == 1 else f"orchestrator-{worker}",
                [
                    *cli,
                    "orchestrator",
                    "--config-dir",
                    str(self.config_dir),
                    "--models-dir",
                    str(self.options.models_dir),
                    "--host",
                    self.options.host,
                    "--port",
                    str(self.options.port),
                    "--log-level",
                    self.options.log_level,
                    *(["--reuse-port"] if workers > 1 else []),
                ],
            )
            for worker in range(1, workers + 1)
        ]
        return children

    def start(self) -> RouterConfig:
        """Render, write the config and start the children; returns once ``/readyz`` is OK.

        Raises :class:`LocalError` when something is missing or the router never gets
        ready (the children are stopped again then). :meth:`stop` stops them.
        """
        config = self.prepare()
        ports = [self.options.port] + [
            urlsplit(layer.url).port or 0
            for layer in config.layers
            if layer.enabled and layer.kind == "generative"
        ]
        for layer in config.layers:
            if layer.enabled and layer.engine == "llamacpp":
                try:
                    find_llama_server()
                except ModelServerError as error:
                    raise LocalError(str(error)) from error
        busy = [p for p in ports if not _port_free("127.0.0.1", p)]
        if busy:
            raise LocalError(f"port(s) {busy} in use: stop what runs there or pass --port")
        write_config(config, self.config_dir)
        source_error.write(self.config_dir, None)  # one left by an earlier run
        self.config = config
        self.children = self.child_commands(config)
        if self.options.wait_for_head:
            trainer = self._trainer(config)
            if trainer is not None:
                trainer.start()
                if trainer.process is not None and trainer.process.wait() != 0:
                    raise LocalError("training L0's head failed: see the log above")
        for child in self.children:
            child.start()
        self._train_if_needed(config)
        if not self._wait_ready():
            self.stop()
            raise LocalError("the router did not get ready: see the log above")
        return config

    def run(self) -> int:
        """``router-mesh local``: start, then supervise until SIGINT or SIGTERM."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._on_signal)
        try:
            try:
                config = self.start()
            except LocalError:
                if self._stopping.is_set():
                    return 0
                raise
            self._announce(config)
            self._supervise()
        finally:
            self.stop()
        return 0

    def _on_signal(self, signum: int, _: FrameType | None) -> None:
        log.info("stopping", extra={"event": "local_stop", "signal": signal.Signals(signum).name})
        self._stopping.set()

    @property
    def url(self) -> str:
        return f"http://{self.options.host}:{self.options.port}"

    @property
    def _ready_checks(self) -> int:
        workers = self.options.workers
        return 1 if workers == 1 else READY_CHECKS_PER_WORKER * workers

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.options.ready_timeout
        last_report = 0.0
        checks: dict[str, object] = {}
        ready_in_a_row = 0
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            while not self._stopping.is_set():
                self._restart_dead()
                failing = [c.name for c in self.children if c.restarts >= MAX_START_RESTARTS]
                if failing:
                    log.error(
                        "a child keeps exiting before the router is ready: see its log above",
                        extra={"event": "local_crash_loop", "children": failing},
                    )
                    return False
                try:
                    # A new connection each time: with several workers the kernel picks one
                    # per connection, and every one must answer ready in a row.
                    response = client.get(f"{self.url}/readyz", headers={"connection": "close"})
                    checks = response.json().get("checks", {})
                    ready_in_a_row = (
                        ready_in_a_row + 1 if response.status_code == httpx.codes.OK else 0
                    )
                    if ready_in_a_row >= self._ready_checks:
                        return True
                    if ready_in_a_row:
                        continue
                except (httpx.HTTPError, ValueError):
                    checks = {"orchestrator": False}
                    ready_in_a_row = 0
                now = time.monotonic()
                if now > deadline:
                    log.error(
                        "not ready in time",
                        extra={"event": "local_not_ready", "checks": checks},
                    )
                    return False
                if now - last_report > 10:
                    last_report = now
                    log.info(
                        "waiting for readiness", extra={"event": "local_wait", "checks": checks}
                    )
                self._stopping.wait(0.5)
        return False

    def _announce(self, config: RouterConfig) -> None:
        routes = ", ".join(config.route_names)
        sys.stdout.write(
            f"router-mesh local: ready at {self.url} (mesh {config.mesh.name}, routes: {routes}, "
            f"config {config.config_hash[:12]})\n"
            f"  curl -s {self.url}/v1/route -H 'content-type: application/json' "
            '-d \'{"message": "..."}\'\n'
            f"  edit {' '.join(map(str, self.options.files))} to reload live; Ctrl-C stops\n"
        )
        sys.stdout.flush()

    def _supervise(self) -> None:
        seen = manifest_digest(self.options.files)
        while not self._stopping.wait(self.options.watch_seconds):
            self._restart_dead()
            digest = manifest_digest(self.options.files)
            if digest != seen:
                seen = digest
                self._reload()

    def _reload(self) -> None:
        try:
            config = self.prepare()
        except Exception as error:  # a bad edit must never stop the local pod
            log.error(
                "the YAML no longer renders: the running config stays",
                extra={"event": "local_render_error", "error": str(error)},
            )
            problem = str(error) or type(error).__name__
            source_error.write(self.config_dir, f"the YAML does not render: {problem}")
            return
        previous = self.config
        write_config(config, self.config_dir)
        source_error.write(self.config_dir, None)
        self.config = config
        self._train_if_needed(config)
        log.info(
            "config re-rendered",
            extra={"event": "local_reload", "config_hash": config.config_hash},
        )
        if previous is None:
            return
        before = {layer.name: (layer.model, layer.engine) for layer in previous.layers}
        for layer in config.layers:
            if before.get(layer.name) != (layer.model, layer.engine):
                for child in self.children:
                    if child.name == layer.name:
                        log.info("model changed: restarting", extra={"layer": layer.name})
                        child.stop()
                        child.start()

    def _train_if_needed(self, config: RouterConfig) -> None:
        """Start the head trainer (the training Job's entry point) when L0 has a head whose
        artifact is not on disk; the orchestrator serves with the base encoder meanwhile and
        loads the head once it is written."""
        trainer = self._trainer(config)
        if trainer is None:
            return
        for child in [c for c in self.children if c.name == "train-head"]:
            if trainer.argv == child.argv and child.process and child.process.poll() is None:
                return  # already training this one
            child.stop()
            self.children.remove(child)
        self.children.append(trainer)
        trainer.start()
        log.info("training L0's head", extra={"event": "head_training"})

    def _trainer(self, config: RouterConfig) -> Child | None:
        """The trainer for L0's head when its artifact is not on disk yet."""
        head = next((x.head for x in config.layers if x.name == "l0" and x.enabled), None)
        if head is None or (self.options.models_dir / head.path / HEAD_FILE).is_file():
            return None
        if importlib.util.find_spec("torch") is None:
            log.warning(
                "L0 has a trained head but torch is not installed: L0 serves with its base "
                "encoder (pip install 'router-mesh[train]')",
                extra={"event": "head_untrainable"},
            )
            return None
        return Child(
            "train-head",
            [
                sys.executable,
                "-m",
                "routermesh.cli",
                "train-head",
                "--config-dir",
                str(self.config_dir),
                "--models-dir",
                str(self.options.models_dir),
                "--expect-path",
                head.path,
                *(["--threads", str(self.options.threads)] if self.options.threads else []),
            ],
            once=True,
        )

    def _restart_dead(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.process is None or child.process.poll() is None or self._stopping.is_set():
                continue
            if child.once:
                if child.next_start == 0.0:
                    child.next_start = -1.0  # reported once
                    code = child.process.returncode
                    (log.info if code == 0 else log.error)(
                        "trainer finished" if code == 0 else "trainer failed: L0 keeps its base",
                        extra={"event": "local_child_exit", "child": child.name, "code": code},
                    )
                continue
            if child.next_start == 0.0:
                delay = min(30.0, 2.0**child.restarts)
                child.next_start = now + delay
                log.warning(
                    "child exited: restarting",
                    extra={
                        "event": "local_child_exit",
                        "child": child.name,
                        "code": child.process.returncode,
                        "restart_in_s": delay,
                    },
                )
            elif now >= child.next_start:
                child.restarts += 1
                child.next_start = 0.0
                child.start()

    def stop(self) -> None:
        self._stopping.set()
        for child in reversed(self.children):
            child.stop()
