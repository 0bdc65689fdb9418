"""The generated CRDs on a real API server (kind, k3d, ...), when KUBECONFIG points at one.

Installs the CRDs with server-side apply, then asks the API server (dry run, nothing is
stored) to admit the samples and to refuse invalid specs, including the CEL rules that
only an API server evaluates. Without a cluster these tests are skipped and say so.
"""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import kubectl, needs_cluster

REPO = Path(__file__).resolve().parents[2]
pytestmark = needs_cluster("CRD checks")


@pytest.fixture(scope="module", autouse=True)
def crds_installed() -> None:
    done = kubectl(
        "apply", "--server-side", "--field-manager=router-mesh-tests", "-f", str(REPO / "crds")
    )
    assert done.returncode == 0, done.stderr
    for name in ("routermeshes.routermesh.io", "routetables.routermesh.io"):
        waited = kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
        assert waited.returncode == 0, waited.stderr


def _dry_run(obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return kubectl("apply", "--dry-run=server", "-n", "default", "-f", "-", stdin=json.dumps(obj))


@pytest.mark.parametrize("path", sorted((REPO / "samples").glob("*/*.yaml")), ids=str)
def test_samples_are_admitted(path: Path) -> None:
    done = kubectl("apply", "--dry-run=server", "-n", "default", "-f", str(path))
    assert done.returncode == 0, done.stderr


def test_invalid_specs_are_refused_by_the_api_server() -> None:
    mesh = yaml.safe_load((REPO / "samples/homelab/routermesh.yaml").read_text())
    table = yaml.safe_load((REPO / "samples/homelab/routetable.yaml").read_text())
    cases: list[tuple[dict[str, Any], str]] = []
    bad = copy.deepcopy(mesh)
    bad["spec"]["layers"]["l1"]["threshold"] = 1.5
    cases.append((bad, "spec.layers.l1.threshold"))
    bad = copy.deepcopy(mesh)
    bad["spec"]["scaling"]["minReplicas"] = 9
    cases.append((bad, "minReplicas must be less than or equal to maxReplicas"))
    bad = copy.deepcopy(mesh)
    bad["metadata"]["name"] = "m" * 49
    cases.append((bad, "every child name fits 63 characters"))
    bad = copy.deepcopy(table)
    bad["spec"]["routes"][0]["target"]["url"] = "http://x:1/"
    cases.append((bad, "exactly one of url or service"))
    for obj, message in cases:
        done = _dry_run(obj)
        assert done.returncode != 0 and message in done.stderr, done.stderr
