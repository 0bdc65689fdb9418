"""``router-mesh fetch-models`` on small files: https with resume over a real loopback HTTP
server, file: sources, checksum mismatch, 404, full disk, idempotence, markers, and the
hf:// path's URI parsing and call arguments (no hub is reachable here)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import huggingface_hub
import pytest
from huggingface_hub import errors as hf_errors

from routermesh.cli import main
from routermesh.runtime import fetch
from routermesh.runtime.contract.config import RouterConfig, model_dir_name
from routermesh.runtime.contract.models import FetchItem, items_from_config
from routermesh.runtime.fetch import (
    MARKER,
    FetchError,
    fetch_all,
    fetch_one,
    parse_uri,
)
from tests.support import FileServer

DATA = bytes(range(256)) * 4096  # 1 MiB
DIGEST = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def server() -> Iterator[FileServer]:
    s = FileServer({"models/tiny.gguf": DATA})
    s.start()
    yield s
    s.stop()


def _leftovers(partial: Path) -> list[Path]:
    """What a fetch left in ``.partial/`` besides its lock files."""
    return [p for p in partial.iterdir() if p.suffix != ".lock"]


def _item(uri: str, sha: str | None = DIGEST) -> FetchItem:
    return FetchItem(uri=uri, sha256=sha, path=model_dir_name(uri))


def test_https_download_lands_atomically_with_its_marker(
    server: FileServer, tmp_path: Path
) -> None:
    item = _item(f"{server.url}/models/tiny.gguf")
    final = fetch_one(item, tmp_path)
    assert (final / "tiny.gguf").read_bytes() == DATA
    marker = json.loads((final / MARKER).read_text())
    assert (marker["source"], marker["sha256"]) == (item.uri, DIGEST)
    assert marker["uri_sha256"] == hashlib.sha256(item.uri.encode()).hexdigest()
    assert _leftovers(tmp_path / fetch.PARTIAL_DIR) == []


def test_an_interrupted_transfer_resumes_with_a_range_request(tmp_path: Path) -> None:
    server = FileServer({"tiny.gguf": DATA}, cut_after=300_000)
    server.start()
    try:
        final = fetch_one(_item(f"{server.url}/tiny.gguf"), tmp_path, backoff=0.01)
    finally:
        server.stop()
    assert (final / "tiny.gguf").read_bytes() == DATA
    assert "range" not in server.requests[0]
    resumed_from = int(server.requests[1]["range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_from <= 300_000


def test_a_failed_run_keeps_the_partial_file_and_the_next_run_resumes(tmp_path: Path) -> None:
    server = FileServer({"tiny.gguf": DATA}, cut_after=400_000)
    server.start()
    try:
        item = _item(f"{server.url}/tiny.gguf")
        with pytest.raises(FetchError, match="next run resumes") as failure:
            fetch_one(item, tmp_path, attempts=1)
        assert failure.value.resumable
        assert not (tmp_path / item.path).exists()
        parts = list((tmp_path / fetch.PARTIAL_DIR).rglob("*.part"))
        kept = parts[0].stat().st_size
        assert len(parts) == 1 and 0 < kept <= 400_000
        final = fetch_one(item, tmp_path, attempts=1)
    finally:
        server.stop()
    assert (final / "tiny.gguf").read_bytes() == DATA
    assert server.requests[1]["range"] == f"bytes={kept}-"


def test_a_file_changed_between_runs_is_downloaded_again_whole(tmp_path: Path) -> None:
    server = FileServer({"tiny.gguf": DATA}, cut_after=400_000)
    server.start()
    try:
        item = _item(f"{server.url}/tiny.gguf", sha=None)
        with pytest.raises(FetchError):
            fetch_one(item, tmp_path, attempts=1)
        changed = DATA[::-1]
        server.files["tiny.gguf"] = changed  # new content, new ETag: If-Range fails
        final = fetch_one(item, tmp_path, attempts=1)
    finally:
        server.stop()
    assert server.requests[1]["if-range"] == server.etag(DATA)
    assert (final / "tiny.gguf").read_bytes() == changed  # not old bytes + new tail


def test_credentials_in_uris_never_reach_logs_or_markers(
    server: FileServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = server.url.rsplit(":", 1)[1]
    uri = f"http://user:hunter2@127.0.0.1:{port}/models/tiny.gguf?X-Amz-Signature=s3cr3t"
    with caplog.at_level("INFO", logger="routermesh.fetch"):
        final = fetch_one(_item(uri), tmp_path)
    text = caplog.text + json.dumps([r.__dict__ for r in caplog.records], default=str)
    text += (final / MARKER).read_text()
    assert "hunter2" not in text and "s3cr3t" not in text
    assert fetch.redact(uri) == f"http://127.0.0.1:{port}/models/tiny.gguf?..."


def test_a_checksum_mismatch_installs_nothing(server: FileServer, tmp_path: Path) -> None:
    item = _item(f"{server.url}/models/tiny.gguf", sha="0" * 64)
    with pytest.raises(FetchError, match="sha256 mismatch"):
        fetch_one(item, tmp_path)
    assert not (tmp_path / item.path).exists()
    assert _leftovers(tmp_path / fetch.PARTIAL_DIR) == []


def test_not_found_is_a_clear_error_and_exit_code(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"{server.url}/models/missing.gguf"
    with pytest.raises(FetchError, match=r"not found \(HTTP 404\)"):
        fetch_one(_item(uri), tmp_path)
    code = main(["fetch-models", "--model", uri, "--models-dir", str(tmp_path)])
    assert code == 1 and "HTTP 404" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == [fetch.PARTIAL_DIR]


def test_present_and_verified_models_are_skipped(server: FileServer, tmp_path: Path) -> None:
    item = _item(f"{server.url}/models/tiny.gguf")
    fetch_all([item], tmp_path)
    requests = len(server.requests)
    fetch_all([item], tmp_path)
    assert len(server.requests) == requests  # nothing fetched again
    (tmp_path / item.path / MARKER).unlink()  # no marker: not trusted, fetched again
    fetch_all([item], tmp_path)
    assert len(server.requests) == requests + 1


def test_file_sources_file_folder_and_relative(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "model" / "sub").mkdir(parents=True)
    (source / "model" / "config.json").write_text("{}")
    (source / "model" / "sub" / "w.bin").write_bytes(DATA)
    (source / "one.gguf").write_bytes(DATA)
    models = tmp_path / "models"
    single = fetch_one(_item((source / "one.gguf").as_uri()), models)
    assert (single / "one.gguf").read_bytes() == DATA
    folder_uri = (source / "model").as_uri()
    folder = fetch_one(_item(folder_uri, sha=fetch.tree_digest(source / "model")), models)
    assert (folder / "sub" / "w.bin").read_bytes() == DATA
    assert (folder / "config.json").exists()
    relative = FetchItem(
        uri="file:one.gguf", sha256=DIGEST, path="examples/x.jsonl", kind="examples"
    )
    path = fetch_one(relative, models, base_dir=source)
    assert path.read_bytes() == DATA and path == models / "examples/x.jsonl"
    with pytest.raises(FetchError, match="does not exist"):
        fetch_one(_item("file:///nowhere/x.gguf"), models)


def test_a_full_disk_is_a_clear_error_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "one.gguf"
    source.write_bytes(DATA)
    real_copy = fetch._copy_file

    def copy_to_full_device(src: Path, target: Path) -> None:
        real_copy(src, Path("/dev/full"))  # every write fails with ENOSPC

    monkeypatch.setattr(fetch, "_copy_file", copy_to_full_device)
    item = _item(source.as_uri())
    with pytest.raises(FetchError, match="no space left on the models volume"):
        fetch_one(item, tmp_path / "models")
    assert not (tmp_path / "models" / item.path).exists()
    assert _leftovers(tmp_path / "models" / fetch.PARTIAL_DIR) == []


@pytest.mark.parametrize(
    ("uri", "repo", "revision", "path", "is_file"),
    [
        (
            "hf://Qwen/Qwen2.5-0.5B-Instruct-GGUF/q4.gguf",
            "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
            None,
            "q4.gguf",
            True,
        ),
        ("hf://org/repo@v1.2/sub/model.gguf", "org/repo", "v1.2", "sub/model.gguf", True),
        ("hf://org/repo@0123abcd", "org/repo", "0123abcd", "", False),
        ("hf://org/repo/onnx/", "org/repo", None, "onnx/", False),
        ("hf://org/repo/onnx", "org/repo", None, "onnx", False),
    ],
)
def test_hf_uris_parse(uri: str, repo: str, revision: str | None, path: str, is_file: bool) -> None:
    source = parse_uri(uri)
    assert (source.scheme, source.repo, source.revision, source.path) == (
        "hf",
        repo,
        revision,
        path,
    )
    assert source.is_file is is_file


def test_bad_uris_are_refused() -> None:
    for uri in ("s3://bucket/x", "hf://only-org", "https://"):
        with pytest.raises(FetchError):
            parse_uri(uri)


def test_hf_file_download_call_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    def fake_download(**kwargs: Any) -> str:
        calls.append(kwargs)
        target = Path(kwargs["local_dir"]) / kwargs["filename"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(DATA)
        (Path(kwargs["local_dir"]) / ".cache" / "huggingface").mkdir(parents=True)
        return str(target)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.internal.example")
    token_file = tmp_path / "token"
    token_file.write_text("hf_secret\n")
    item = _item("hf://org/repo@v2/sub/model.gguf")
    final = fetch_one(item, tmp_path / "models", hf_token=fetch.read_token(str(token_file)))
    assert calls == [
        {
            "repo_id": "org/repo",
            "filename": "sub/model.gguf",
            "revision": "v2",
            "token": "hf_secret",
            "endpoint": "https://hub.internal.example",
            "local_dir": calls[0]["local_dir"],
        }
    ]
    assert sorted(p.name for p in final.iterdir()) == [MARKER, "model.gguf"]  # flat, no .cache


def test_hf_folder_download_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    def fake_snapshot(**kwargs: Any) -> str:
        calls.append(kwargs)
        (Path(kwargs["local_dir"]) / "onnx").mkdir(parents=True)
        (Path(kwargs["local_dir"]) / "onnx" / "model.onnx").write_bytes(DATA)
        return str(kwargs["local_dir"])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    final = fetch_one(_item("hf://org/repo/onnx", sha=None), tmp_path)
    assert calls[0]["allow_patterns"] == ["onnx/*"] and calls[0]["revision"] is None
    assert sorted(p.name for p in final.iterdir()) == [MARKER, "model.onnx"]  # lifted

    def not_found(**_: Any) -> str:
        request = httpx.Request("GET", "https://huggingface.co/api/models/org/gone")
        raise hf_errors.RepositoryNotFoundError(
            "404", response=httpx.Response(404, request=request)
        )

    def offline(**_: Any) -> str:
        raise hf_errors.LocalEntryNotFoundError("no connection")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", not_found)
    with pytest.raises(FetchError, match="not found on the hub"):
        fetch_one(_item("hf://org/gone", sha=None), tmp_path)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(FetchError, match="could not be reached"):
        fetch_one(_item("hf://org/repo/x.gguf", sha=None), tmp_path)


def test_items_from_config_take_enabled_layers_and_example_sets() -> None:
    config = RouterConfig.model_validate(
        {
            "mesh": {"name": "m"},
            "routes": [{"name": "unifi"}],
            "escalation": {},
            "layers": [
                {
                    "name": name,
                    "engine": "llamacpp",
                    "enabled": enabled,
                    "model": {"uri": f"hf://o/r/{name}.gguf", "path": f"{name}-dir"},
                    "url": "http://127.0.0.1:8081",
                    "threshold": 0.8,
                    "timeout_ms": 100,
                }
                for name, enabled in (("l1", True), ("l2", False))
            ],
            "examples_from": [
                {"uri": "file:train.jsonl", "path": "examples/t.jsonl", "sha256": DIGEST}
            ],
        }
    )
    items = items_from_config(config)
    assert [(i.uri, i.kind) for i in items] == [
        ("hf://o/r/l1.gguf", "model"),
        ("file:train.jsonl", "examples"),
    ]
