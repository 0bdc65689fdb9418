"""Local mode's pure parts: rendering the YAML, adapting the config to one machine
(ports, cache, secrets), the packaged fallback for unreachable models, atomic config
writes; and an edit that no longer renders, shown by the orchestrator it feeds. The
whole of `router-mesh local` runs in tests/e2e/test_local_mode.py."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from routermesh import local
from routermesh.local import (
    LocalError,
    LocalOptions,
    LocalPod,
    also_argv,
    ensure_models,
    localize,
    render,
)
from routermesh.runtime import source_error
from routermesh.runtime.app import create_app
from routermesh.runtime.contract.config import CONFIG_FILENAME, RouterConfig
from routermesh.runtime.fetch import MARKER
from routermesh.runtime.router import Router
from tests.support import homelab_with_generative, layer_of, wait_until

REPO = Path(__file__).resolve().parents[2]


def _options(tmp_path: Path, **kw: object) -> LocalOptions:
    return LocalOptions(
        files=[REPO / "samples/homelab"],
        models_dir=tmp_path / "models",
        state_dir=tmp_path / "state",
        **kw,  # type: ignore[arg-type]
    )


def test_localize_moves_servers_to_the_port_and_drops_what_secrets_held(tmp_path: Path) -> None:
    options = _options(tmp_path, port=9000)
    rendered = render(options)
    assert rendered.cache.backend == "redis" and rendered.cache.redis_url_file
    config = localize(rendered, options)
    assert [(layer.name, layer.url) for layer in config.layers] == [
        ("l0", ""),  # runs in the orchestrator: no server, no port
        ("l1", "http://127.0.0.1:9001"),
        ("l2", "http://127.0.0.1:9002"),
    ]
    assert config.cache.backend == "memory"  # the Secret cannot be read locally
    assert config.cache.ttl_seconds == rendered.cache.ttl_seconds
    assert config.escalation.credentials_file is None
    assert config.escalation.target == rendered.escalation.target
    config.verify_digests()
    with_redis = localize(rendered, _options(tmp_path, redis_url="redis://127.0.0.1:6379/0"))
    assert (with_redis.cache.backend, with_redis.cache.redis_url) == (
        "redis",
        "redis://127.0.0.1:6379/0",
    )


def test_a_token_secret_becomes_the_token_file_given_or_an_open_local_api(
    tmp_path: Path,
) -> None:
    files = [REPO / "samples/homelab/routetable.yaml", REPO / "samples/hardened"]
    options = LocalOptions(files=files, models_dir=tmp_path, state_dir=tmp_path)
    rendered = render(options)
    assert rendered.api.token_file and rendered.api.token_file.startswith("/var/run/secrets")
    assert localize(rendered, options).api.token_file is None
    token = tmp_path / "token"
    token.write_text("t0ken")
    given = LocalOptions(files=files, models_dir=tmp_path, state_dir=tmp_path, token_file=token)
    assert localize(rendered, given).api.token_file == str(token.resolve())
    assert localize(rendered, given).api.max_message_chars == 8192


def test_unreachable_models_fall_back_to_the_packaged_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    options = _options(tmp_path, offline=True)
    options.files = [homelab_with_generative(tmp_path / "yaml")]
    made: list[str] = []

    def fake_materialize(out: Path, names: list[str]) -> dict[str, Path]:
        out.mkdir(parents=True, exist_ok=True)
        made.extend(names)
        return {
            name: out / (f"minilm/{name}" if name.startswith("minilm") else f"{name}.gguf")
            for name in names
        }

    monkeypatch.setattr(local, "materialize", fake_materialize)
    config = ensure_models(localize(render(options), options), options)
    assert made == [
        "minilm-l6-onnx-int8",
        "minilm-l6-tokenizer",
        "smollm2-135m",
        "qwen2.5-coder-0.5b",
    ]
    assert [layer.model.path for layer in config.layers] == [
        "packaged/minilm",  # the encoder is a folder: model.onnx and tokenizer.json
        "packaged/smollm2-135m.gguf",
        "packaged/qwen2.5-coder-0.5b.gguf",
    ]
    assert all(layer.model.uri.startswith("file:///") for layer in config.layers)
    assert layer_of(config, "l0").model.sha256 is None  # its files were checked one by one
    fallbacks = [r for r in caplog.records if r.getMessage() == "using a packaged model"]
    assert [(r.layer, r.because) for r in fallbacks] == [  # type: ignore[attr-defined]
        ("l0", "--offline"),
        ("l1", "--offline"),
        ("l2", "--offline"),
    ]


def test_a_model_already_fetched_is_used_as_is(tmp_path: Path) -> None:
    options = _options(tmp_path, offline=True)
    config = localize(render(options), options)
    for layer in config.layers:
        folder = options.models_dir / layer.model.path
        folder.mkdir(parents=True)
        (folder / MARKER).write_text(
            json.dumps(
                {
                    "uri_sha256": hashlib.sha256(layer.model.uri.encode()).hexdigest(),
                    "sha256": layer.model.sha256 or "x",
                }
            )
        )
    assert ensure_models(config, options).layers == config.layers


def test_render_refuses_ambiguous_or_missing_input(tmp_path: Path) -> None:
    folder = tmp_path / "two"
    shutil.copytree(REPO / "samples/homelab", folder)
    second = (folder / "routermesh.yaml").read_text().replace("name: homelab", "name: other", 1)
    (folder / "other.yaml").write_text(second)
    with pytest.raises(LocalError, match="expected exactly one RouterMesh"):
        render(LocalOptions(files=[folder]))
    assert render(LocalOptions(files=[folder], mesh="other")).mesh.name == "other"
    with pytest.raises(LocalError, match="no such file"):
        render(LocalOptions(files=[tmp_path / "nope"]))


def test_write_config_replaces_the_file_in_one_step(tmp_path: Path) -> None:
    options = _options(tmp_path)
    config = localize(render(options), options)
    local.write_config(config, tmp_path / "config")
    local.write_config(config, tmp_path / "config")
    assert sorted(p.name for p in (tmp_path / "config").iterdir()) == [CONFIG_FILENAME]
    assert RouterConfig.load(tmp_path / "config") == config


def test_examples_from_files_are_fetched_where_the_orchestrator_reads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = tmp_path / "homelab"
    shutil.copytree(REPO / "samples/homelab", samples)
    (samples / "extra.jsonl").write_text('{"text": "reboot the ap", "route": "unifi"}\n')
    table = samples / "routetable.yaml"
    table.write_text(
        table.read_text().replace(
            "spec:\n", "spec:\n  examplesFrom:\n    uri: file:extra.jsonl\n", 1
        )
    )
    options = LocalOptions(
        files=[samples], models_dir=tmp_path / "models", state_dir=tmp_path / "state", offline=True
    )
    monkeypatch.setattr(local, "materialize", lambda out, names: {n: out / "x" / n for n in names})
    config = ensure_models(localize(render(options), options), options)
    (source,) = config.examples_from
    assert (options.models_dir / source.path).read_text().startswith('{"text": "reboot the ap"')
    (samples / "missing.jsonl").unlink(missing_ok=True)
    table.write_text(table.read_text().replace("file:extra.jsonl", "file:missing.jsonl"))
    with pytest.raises(LocalError, match="examplesFrom"):
        ensure_models(localize(render(options), options), options)


def test_a_head_gets_the_packaged_base_and_the_jobs_trainer_beside_the_pod(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = tmp_path / "yaml"
    shutil.copytree(REPO / "samples/homelab", files)
    mesh = files / "routermesh.yaml"
    body = yaml.safe_load(mesh.read_text())
    body["spec"]["layers"]["l0"]["head"] = {"enabled": True}
    mesh.write_text(yaml.safe_dump(body))
    options = LocalOptions(
        files=[files], models_dir=tmp_path / "models", state_dir=tmp_path / "state", offline=True
    )
    made: list[str] = []

    def fake_materialize(out: Path, names: list[str]) -> dict[str, Path]:
        made.extend(names)
        return {name: out / "folder" / name for name in names}

    monkeypatch.setattr(local, "materialize", fake_materialize)
    config = ensure_models(localize(render(options), options), options)
    head = layer_of(config, "l0").head
    assert head is not None and head.path.startswith("heads/")
    assert made[-3:] == list(local.HEAD_BASE_PACKAGED)
    assert head.base.path == "packaged/folder"

    pod = local.LocalPod(options)
    trainer = pod._trainer(config)
    assert trainer is not None and trainer.once
    assert trainer.argv[3] == "train-head"
    assert trainer.argv[trainer.argv.index("--expect-path") + 1] == head.path
    (options.models_dir / head.path).mkdir(parents=True)
    (options.models_dir / head.path / "head.json").write_text("{}")
    assert pod._trainer(config) is None  # trained already: nothing to start


def test_an_edit_that_no_longer_renders_shows_in_readyz_and_config_until_fixed(
    tmp_path: Path,
) -> None:
    files = tmp_path / "homelab"
    shutil.copytree(REPO / "samples/homelab", files)
    # L0 off (the sample's L1 and L2 are off too): no model is needed to run the config.
    options = _options(tmp_path, disable=("l0",))
    options.files = [files]
    pod = LocalPod(options)
    running = pod.prepare()
    local.write_config(running, pod.config_dir)
    pod.config = running
    router = Router(pod.config_dir, models_dir=options.models_dir, poll_seconds=0.05)
    table = files / "routetable.yaml"
    good = table.read_text()
    with TestClient(create_app(router)) as client:
        assert wait_until(lambda: client.get("/readyz").status_code == 200)
        assert client.get("/readyz").json()["config_error"] is None
        assert client.get("/v1/config").json()["config_error"] is None
        table.write_text(good.replace("description:", "descripton:", 1))
        pod._reload()  # what the watch loop does when the YAML changes

        def error() -> str | None:
            return client.get("/readyz").json()["config_error"]  # type: ignore[no-any-return]

        assert wait_until(lambda: error() is not None)
        shown = error()
        assert shown is not None
        assert shown.startswith(f"the YAML does not render: {table} (document 1): ")
        assert "descripton: Extra inputs are not permitted" in shown
        ready = client.get("/readyz")
        assert ready.status_code == 200  # the running config keeps serving
        assert ready.json()["config_hash"] == running.config_hash
        view = client.get("/v1/config").json()
        assert (view["config_error"], view["config_hash"]) == (shown, running.config_hash)
        assert client.post("/v1/route", json={"message": "restart the ap"}).status_code == 200
        table.write_text(good)  # fixed
        pod._reload()
        assert wait_until(lambda: error() is None)
        assert client.get("/v1/config").json()["config_error"] is None
        assert not (pod.config_dir / source_error.FILENAME).exists()


def test_an_also_command_runs_this_installs_cli_or_the_command_as_written() -> None:
    assert also_argv("router-mesh sample-mcp network --port 9101") == [
        sys.executable,
        "-m",
        "routermesh.cli",
        "sample-mcp",
        "network",
        "--port",
        "9101",
    ]
    assert also_argv("./my-server --name 'two words'") == ["./my-server", "--name", "two words"]


def test_workers_are_orchestrators_sharing_the_port_and_bounded() -> None:
    options = LocalOptions(files=[REPO / "samples/homelab"], port=18555, workers=2)
    pod = LocalPod(options)
    config = pod.prepare()
    orchestrators = [c for c in pod.child_commands(config) if "orchestrator" in c.argv]
    assert [c.name for c in orchestrators] == ["orchestrator", "orchestrator-2"]
    assert all(c.argv[-1] == "--reuse-port" for c in orchestrators)
    alone = LocalPod(LocalOptions(files=[REPO / "samples/homelab"], port=18555))
    (single,) = [c for c in alone.child_commands(config) if "orchestrator" in c.argv]
    assert "--reuse-port" not in single.argv  # a second router on the port must fail
    for wrong in (0, 9):
        with pytest.raises(LocalError, match="workers must be 1 to 8"):
            LocalPod(LocalOptions(files=[REPO / "samples/homelab"], workers=wrong)).prepare()
