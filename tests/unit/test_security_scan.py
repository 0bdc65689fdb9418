"""Checkov over the rendered chart (every optional feature on) and over the operator's
generated children: no finding but the ones justified in security/checkov-skips.yaml."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from routermesh.operator import api
from routermesh.operator import builders as b
from tests.support import homelab_rendered

REPO = Path(__file__).resolve().parents[2]
CHECKOV = shutil.which("checkov") or str(REPO / ".cache/checkov-venv/bin/checkov")
SKIPS = yaml.safe_load((REPO / "security/checkov-skips.yaml").read_text())["skips"]
HELM = shutil.which("helm") or str(REPO / ".cache/helm/helm")

needs_scanner = pytest.mark.skipif(
    not (Path(CHECKOV).is_file() and Path(HELM).is_file()),
    reason="checkov or helm is missing (scripts/setup.sh with WITH_SCAN=1 installs them)",
)


def test_every_skip_has_a_reason() -> None:
    for skip in SKIPS:
        assert skip["id"].startswith("CKV") and len(skip["reason"].split()) >= 10, skip


@needs_scanner
def test_no_unjustified_findings(tmp_path: Path) -> None:
    chart = subprocess.run(
        [
            HELM,
            "template",
            "rmo",
            str(REPO / "charts/router-mesh-operator"),
            "-n",
            "router-mesh-system",
            "-f",
            str(REPO / "charts/router-mesh-operator/ci/all-features-values.yaml"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (tmp_path / "chart.yaml").write_text(chart)
    raw = yaml.safe_load((REPO / "samples/homelab/routermesh.yaml").read_text())
    raw["metadata"].update(namespace="tools", uid="0b5e8a5c-7f1e-4f43-9a43-5d0f2c1e9a11")
    mesh = api.parse(api.RouterMesh, raw)
    config = homelab_rendered()
    (tmp_path / "children.yaml").write_text(
        yaml.safe_dump_all(b.desired_children(mesh, config, config))
    )
    done = subprocess.run(
        [
            CHECKOV,
            "-d",
            str(tmp_path),
            "--framework",
            "kubernetes",
            "--quiet",
            "-o",
            "json",
            "--skip-check",
            ",".join(s["id"] for s in SKIPS),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    report = json.loads(done.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [
        f"{c['check_id']} {c['resource']}" for r in reports for c in r["results"]["failed_checks"]
    ]
    passed = sum(r["summary"]["passed"] for r in reports)
    assert failed == []
    assert passed > 200  # the scan really ran over both files
