"""The content version of a config's unpinned sources (runtime/content.py): what the pod
loaded for a model or example set without a sha256, so new content under the same URI
keys the decision cache anew. The cache behaviour itself is tested through the API in
tests/unit/test_orchestrator.py."""

from __future__ import annotations

import json
from pathlib import Path

from routermesh.runtime.content import content_version
from routermesh.runtime.contract.config import ExamplesSource, RouterConfig
from routermesh.runtime.fetch import MARKER
from tests.support import homelab_rendered, layer_of

PIN = "a" * 64


def _config(examples_sha256: str | None, model_sha256: str | None) -> RouterConfig:
    config = homelab_rendered()
    l0 = layer_of(config, "l0")
    l0 = l0.model_copy(
        update={"model": l0.model.model_copy(update={"sha256": model_sha256, "path": "enc"})}
    )
    source = ExamplesSource(
        uri="https://tables.example/extra.jsonl", sha256=examples_sha256, path="extra.jsonl"
    )
    return config.model_copy(update={"layers": (l0,), "examples_from": (source,)}).sealed()


def test_pinned_sources_add_nothing(tmp_path: Path) -> None:
    (tmp_path / "extra.jsonl").write_text('{"text": "a", "route": "unifi"}\n')
    assert content_version(_config(PIN, PIN), tmp_path) == ""


def test_an_unpinned_example_set_is_versioned_by_its_bytes(tmp_path: Path) -> None:
    config = _config(None, PIN)
    examples = tmp_path / "extra.jsonl"
    absent = content_version(config, tmp_path)
    examples.write_text(json.dumps({"text": "boot vm 104", "route": "proxmox"}) + "\n")
    first = content_version(config, tmp_path)
    assert first != absent and len(first) == 16
    assert content_version(config, tmp_path) == first  # stable while the content is
    examples.write_text(json.dumps({"text": "boot vm 104", "route": "unifi"}) + "\n")
    assert content_version(config, tmp_path) != first


def test_an_unpinned_model_is_versioned_by_its_marker_else_its_files(tmp_path: Path) -> None:
    config = _config(PIN, None)
    model = tmp_path / "enc"
    model.mkdir()
    (model / "model.onnx").write_bytes(b"weights")
    unmarked = content_version(config, tmp_path)
    (model / "model.onnx").write_bytes(b"other weights")
    rewritten = content_version(config, tmp_path)
    assert rewritten != unmarked  # no marker: sizes and modification times
    (model / MARKER).write_text(json.dumps({"sha256": "1" * 64}))
    marked = content_version(config, tmp_path)
    (model / "model.onnx").write_bytes(b"changed without a fetch")
    assert content_version(config, tmp_path) == marked  # the fetch's digest decides
    (model / MARKER).write_text(json.dumps({"sha256": "2" * 64}))
    assert content_version(config, tmp_path) not in {marked, rewritten, unmarked}
