"""L0's trained artifact in its two modes without training anything: the RouterMesh
renders each mode with its measured epochs and its own artifact key, an unknown mode is
refused at the edge, and ``head.json`` stays readable across releases (a head's manifest
is written as before the mode existed, with the same digest)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from routermesh.operator import api
from routermesh.operator.render import render_config
from routermesh.runtime.contract.config import RouterConfig
from routermesh.runtime.encoder_training import TrainingError
from routermesh.runtime.encoder_tuning import tune_rows
from routermesh.runtime.head_artifact import HeadManifest

REPO = Path(__file__).resolve().parents[2]
MESH = yaml.safe_load((REPO / "samples/homelab/routermesh.yaml").read_text())
TABLE = yaml.safe_load((REPO / "samples/homelab/routetable.yaml").read_text())

PREVIOUS_RELEASE_HEAD = {
    "format": 1,
    "routes": ["banking", "escalate"],
    "examples_digest": "ab" * 32,
    "weights": [[0.5, -0.25], [0.125, 1.0]],
    "bias": [0.1, -0.1],
    "calibration": [1.0, 2.0, 3.0, -1.0],
    "examples": 330,
    "holdout": 33,
    "holdout_accuracy": 0.9697,
    "epochs": 2,
    "seed": 0,
    "max_tokens": 48,
    "base": "hf://sentence-transformers/all-MiniLM-L6-v2",
    "seconds": 41.5,
    "created": 1764806400.0,
}
"""A ``head.json`` as the release before modes wrote it."""


def rendered(head: dict[str, Any], description: str | None = None) -> RouterConfig:
    doc = copy.deepcopy(MESH)
    doc["spec"].setdefault("layers", {}).setdefault("l0", {})["head"] = {"enabled": True, **head}
    table = copy.deepcopy(TABLE)
    if description is not None:
        table["spec"]["routes"][0]["description"] = description
    return render_config(api.parse(api.RouterMesh, doc), [api.parse(api.RouteTable, table)])


def test_each_mode_renders_its_measured_epochs_and_its_own_key() -> None:
    head = rendered({}).layers[0].head
    tuned = rendered({"mode": "encoder"}).layers[0].head
    assert head is not None and tuned is not None
    assert (head.mode, head.epochs) == ("head", 2)
    assert (tuned.mode, tuned.epochs) == ("encoder", 4)
    assert rendered({"mode": "encoder", "epochs": 1}).layers[0].head.epochs == 1  # type: ignore[union-attr]
    assert tuned.path != head.path
    # A tuned encoder learns the descriptions: a new description is a new artifact (and
    # Job); a head never read them, so its artifact stays.
    described = "UniFi network controller: clients, switches and access points"
    assert rendered({"mode": "encoder"}, described).layers[0].head.path != tuned.path  # type: ignore[union-attr]
    assert rendered({}, described).layers[0].head.path == head.path  # type: ignore[union-attr]


def test_an_unknown_mode_is_refused_at_the_edge() -> None:
    with pytest.raises(ValueError, match="mode"):
        rendered({"mode": "classifier"})


def test_a_head_json_of_the_previous_release_reads_as_a_head_with_its_digest() -> None:
    manifest = HeadManifest.model_validate_json(json.dumps(PREVIOUS_RELEASE_HEAD))
    assert manifest.mode == "head"
    # Written back as that release wrote it, so its pods read ours, and the digest (part
    # of the decision cache's key) does not change under a running mesh.
    assert json.loads(manifest.to_json()) == PREVIOUS_RELEASE_HEAD
    assert manifest.digest == "fbc9035b4c267128"


def test_a_tuned_encoders_manifest_names_its_mode() -> None:
    tuned = HeadManifest.model_validate(
        {
            **PREVIOUS_RELEASE_HEAD,
            "mode": "encoder",
            "weights": [],
            "bias": [],
            "calibration": [],
            "holdout": 0,
            "holdout_accuracy": None,
        }
    )
    written = json.loads(tuned.to_json())
    assert written["mode"] == "encoder" and written["holdout_accuracy"] is None
    assert HeadManifest.model_validate(written) == tuned


def test_one_route_is_refused_before_any_weights_load(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="at least two routes"):
        # The base folder does not exist: the refusal comes before anything is read.
        tune_rows(["start vm 101", "stop vm 101"], [0, 0], 1, base=tmp_path / "none", epochs=1)
