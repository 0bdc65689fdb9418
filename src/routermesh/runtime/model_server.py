"""``router-mesh serve-model``: start one layer's CPU model server on its port.

The layer's ``engine`` picks the server, both speaking the OpenAI-compatible
completions API with logprobs that :mod:`routermesh.runtime.generative` uses:

- ``llamacpp``: llama.cpp's native ``llama-server`` (C++; GGUF files; prompt prefix
  kept in its KV cache between requests). Found through ``--binary``, the
  ``ROUTER_MESH_LLAMA_SERVER`` variable, ``PATH``, or ``.cache/llama-server/bin``
  (where ``scripts/build-llama-server.sh`` puts it).
- ``vllm``: vLLM's OpenAI server (``python -m vllm.entrypoints.openai.api_server``),
  for a Hugging Face model folder; the CPU build cannot serve GGUF.

The command replaces itself with the server process (``exec``), so the container's
signals reach the server directly. It refuses to start, with a clear message and
exit code 2, when the model is missing or half-written: the model-download Job
renames a model into place only once complete and verified.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from routermesh.runtime.contract.config import LAYER_PORTS, LayerConfig, RouterConfig
from routermesh.runtime.cpus import available_cpus

LLAMA_SERVER_ENV = "ROUTER_MESH_LLAMA_SERVER"
LOCAL_BUILD = Path(".cache/llama-server/bin/llama-server")


class ModelServerError(Exception):
    pass


@dataclass(frozen=True)
class ServerCommand:
    argv: list[str]
    env: dict[str, str]


def find_llama_server(explicit: str | None = None) -> str:
    candidates = [explicit, os.environ.get(LLAMA_SERVER_ENV), shutil.which("llama-server")]
    candidates.append(str(LOCAL_BUILD) if LOCAL_BUILD.is_file() else None)
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(Path(candidate).resolve())
    raise ModelServerError(
        "llama-server not found: pass --binary, set ROUTER_MESH_LLAMA_SERVER, put it on PATH, "
        "or build it with `bash scripts/build-llama-server.sh`"
    )


def resolve_model(layer: LayerConfig, models_dir: Path) -> Path:
    """The model file (GGUF) or folder (Hugging Face) of ``layer`` on the models volume."""
    location = models_dir / layer.model.path
    if location.is_file():
        return location
    if location.is_dir():
        ggufs = sorted(location.glob("*.gguf"))
        if layer.engine == "llamacpp":
            if len(ggufs) == 1:
                return ggufs[0]
            raise ModelServerError(
                f"layer {layer.name}: {location} holds {len(ggufs)} .gguf files, expected one"
            )
        if (location / "config.json").is_file():
            return location
        raise ModelServerError(
            f"layer {layer.name}: {location} has no config.json; the vllm engine serves "
            "Hugging Face model folders, not GGUF files"
        )
    raise ModelServerError(
        f"layer {layer.name}: model {layer.model.uri} is not on the models volume "
        f"({location} is missing); the model-download Job has not completed"
    )


def layer_port(layer: LayerConfig) -> int:
    """The port in the layer's URL (what the orchestrator calls), else the layer's default."""
    port = urlsplit(layer.url).port
    if port is not None:
        return port
    if layer.name in LAYER_PORTS:
        return LAYER_PORTS[layer.name]
    raise ModelServerError(f"layer {layer.name}: no port in its URL {layer.url}")


def llamacpp_command(
    layer: LayerConfig,
    model: Path,
    *,
    binary: str,
    port: int,
    threads: int,
    context: int,
    parallel: int,
    host: str = "127.0.0.1",
) -> ServerCommand:
    argv = [
        binary,
        "--model",
        str(model),
        "--alias",
        layer.name,
        "--host",
        host,
        "--port",
        str(port),
        "--threads",
        str(threads),
        "--threads-batch",
        str(threads),
        "--ctx-size",
        str(context * parallel),
        "--parallel",
        str(parallel),
        "--batch-size",
        "512",
        # llama-server keeps past prompts' state in RAM for reuse (8 GiB by default): after
        # 60 distinct judge prompts L1 held 495-546 MiB against its 512Mi limit. Each slot
        # still keeps its last prompt, which is what the shared prefix needs (measured:
        # docs/engines.md, "Tuning for the judge prompt").
        "--cache-ram",
        "0",
        "--no-webui",
        "--metrics",
    ]
    return ServerCommand(argv=argv, env={})


def vllm_command(
    layer: LayerConfig,
    model: Path,
    *,
    python: str,
    port: int,
    threads: int,
    context: int,
    host: str = "127.0.0.1",
) -> ServerCommand:
    argv = [
        python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model),
        "--served-model-name",
        layer.name,
        "--host",
        host,
        "--port",
        str(port),
        "--max-model-len",
        str(context),
        "--dtype",
        "bfloat16",
        "--max-logprobs",
        "20",
    ]
    env = {
        # vLLM's CPU build binds one core unless told otherwise (docs/engines.md).
        "VLLM_CPU_OMP_THREADS_BIND": f"0-{threads - 1}",
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "VLLM_CPU_KVCACHE_SPACE": "1",
    }
    return ServerCommand(argv=argv, env=env)


def server_command(
    config: RouterConfig,
    layer_name: str,
    models_dir: Path,
    *,
    binary: str | None = None,
    python: str = "python3",
    port: int | None = None,
    threads: int | None = None,
    context: int | None = None,
    parallel: int | None = None,
    host: str = "127.0.0.1",
) -> ServerCommand:
    """The command that serves ``layer_name`` of ``config`` (pure but for file lookups)."""
    layer = next((item for item in config.layers if item.name == layer_name), None)
    if layer is None:
        names = ", ".join(item.name for item in config.layers)
        raise ModelServerError(f"no layer {layer_name!r} in the config (layers: {names})")
    if layer.kind != "generative":
        raise ModelServerError(
            f"layer {layer_name} is a {layer.kind} layer: it runs in the orchestrator, "
            "not in a model server"
        )
    model = resolve_model(layer, models_dir)
    port = port or layer_port(layer)
    # The layer's context holds its longest prompt (the config refuses one that cannot).
    context = context or layer.context_tokens
    threads = threads or available_cpus()
    # As many slots as the orchestrator sends requests at once (it never queues more).
    parallel = parallel or layer.max_in_flight
    if layer.engine == "llamacpp":
        return llamacpp_command(
            layer,
            model,
            binary=find_llama_server(binary),
            port=port,
            threads=threads,
            context=context,
            parallel=parallel,
            host=host,
        )
    return vllm_command(
        layer, model, python=python, port=port, threads=threads, context=context, host=host
    )


def exec_server(command: ServerCommand) -> None:
    """Replace this process with the model server."""
    os.execvpe(command.argv[0], command.argv, {**os.environ, **command.env})  # noqa: S606
