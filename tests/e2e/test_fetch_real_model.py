"""``router-mesh fetch-models`` fetching the real SmolLM2-135M GGUF (98 MB) over HTTP on
loopback, the first transfer cut mid-way and resumed, verified against the digest the
RouterMesh sample names; the fetch alone, as the model-download Job runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from routermesh.runtime.contract.config import model_dir_name
from routermesh.runtime.fetch import MARKER
from routermesh.runtime.packaged import PACKAGED, materialize
from tests.support import FileServer

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SMOL = PACKAGED["smollm2-135m"]


def test_the_real_gguf_downloads_resumes_and_verifies(tmp_path: Path) -> None:
    gguf = materialize(REPO / ".cache/models/packaged", ["smollm2-135m"])["smollm2-135m"]
    server = FileServer({SMOL.file_name: gguf.read_bytes()}, cut_after=40_000_000)
    server.start()
    try:
        uri = f"{server.url}/{SMOL.file_name}"
        command = [
            sys.executable,
            "-m",
            "routermesh.cli",
            "fetch-models",
            "--model",
            uri,
            "--sha256",
            SMOL.sha256,
            "--models-dir",
            str(tmp_path),
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        assert "range" not in server.requests[0]
        assert server.requests[1]["range"].startswith("bytes=")
        events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
        assert any(e.get("event") == "fetch_retry" for e in events)
        assert any(e.get("event") == "fetch_resume" for e in events)
        final = tmp_path / model_dir_name(uri)
        assert (final / SMOL.file_name).stat().st_size == SMOL.size
        assert json.loads((final / MARKER).read_text())["sha256"] == SMOL.sha256
        again = subprocess.run(command, capture_output=True, text=True, check=False)
        assert again.returncode == 0 and len(server.requests) == 2  # present: skipped
    finally:
        server.stop()
