"""L0's trained head with the real models: the PyTorch BERT matches the packaged ONNX
encoder, training on a RouteTable's examples gives a reproducible, calibrated artifact
in the serving format, too small a table is refused, and the orchestrator serves with
its base encoder until the artifact is there, then loads it without a restart (cache
key, /readyz, /v1/config and metrics follow)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from routermesh.cli import main
from routermesh.runtime.app import create_app
from routermesh.runtime.contract.config import (
    ESCALATE_ROUTE,
    CacheConfig,
    EscalationConfig,
    ExamplesSource,
    HeadConfig,
    LayerConfig,
    MeshRef,
    ModelRef,
    RouteConfig,
    RouterConfig,
    route_name_from_label,
)
from routermesh.runtime.embedding import EmbeddingLayer, Encoder, EncoderStore
from routermesh.runtime.encoder_training import TrainingError
from routermesh.runtime.finetune import holdout_split, train_head
from routermesh.runtime.head_artifact import HEAD_FILE, read_manifest
from routermesh.runtime.router import Router
from tests.support import encoder_folders, homelab_rendered, wait_until

torch = pytest.importorskip("torch", reason="the training extra (router-mesh[train])")

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / ".cache/models"
SAMPLE = REPO / "tests/data/clinc150-train-sample.jsonl"
"""330 CLINC150 train rows: 30 for each of its 10 domains and 30 out-of-scope."""


@pytest.fixture(scope="module")
def folders() -> tuple[str, str]:
    """(int8 serving encoder, fp32 base) folders, relative to MODELS."""
    return encoder_folders(MODELS)


def sample_config(
    folders: tuple[str, str],
    head_path: str,
    *,
    extra: tuple[str, ...] = (),
    epochs: int = 3,
    head_threshold: float | None = None,
) -> RouterConfig:
    serving, base = folders
    labels = sorted({json.loads(line)["route"] for line in SAMPLE.read_text().splitlines()})
    routes = [
        RouteConfig(name=route_name_from_label(label), examples=extra if i == 0 else ())
        for i, label in enumerate(x for x in labels if x != ESCALATE_ROUTE)
    ]
    return RouterConfig(
        mesh=MeshRef(name="t"),
        routes=tuple(routes),
        escalation=EscalationConfig(route="escalate"),
        examples_from=(ExamplesSource(uri=SAMPLE.as_uri(), path=str(SAMPLE)),),
        layers=(
            LayerConfig(
                name="l0",
                kind="embedding",
                engine="onnx",
                model=ModelRef(uri="packaged", path=serving),
                threshold=0.5,
                timeout_ms=5000,
                head=HeadConfig(
                    base=ModelRef(uri="packaged", path=base),
                    path=head_path,
                    epochs=epochs,
                    threshold=head_threshold,
                ),
            ),
        ),
        cache=CacheConfig(),
    ).sealed()


@pytest.fixture(scope="module")
def trained(folders: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("head") / "artifact"
    train_head(sample_config(folders, "unused"), MODELS, out=out, threads=2)
    return out


def test_the_torch_encoder_matches_the_packaged_onnx_encoder(folders: tuple[str, str]) -> None:
    from routermesh.runtime.minilm import load_encoder  # noqa: PLC0415

    serving, base = folders
    texts = ["what is my credit score", "play some jazz please", "set an alarm for 7am"]
    onnx = Encoder(MODELS / serving, threads=1)
    encodings = onnx.tokenizer.encode_batch(texts)
    ids = torch.tensor([e.ids for e in encodings])
    mask = torch.tensor([e.attention_mask for e in encodings])
    with torch.no_grad():
        states = load_encoder(MODELS / base).eval()(ids, mask, torch.zeros_like(ids))
    weights = mask.unsqueeze(-1).float()
    pooled = torch.nn.functional.normalize((states * weights).sum(1) / weights.sum(1), dim=-1)
    cosine = (pooled.numpy() * onnx.encode(texts)).sum(axis=1)
    assert cosine.min() > 0.99  # int8 against fp32: the same model


def test_the_holdout_is_seeded_and_stratified() -> None:
    labels = [0] * 50 + [1] * 20 + [2] * 3
    train, held = holdout_split(labels, 0.1, seed=0)
    assert sorted(train + held) == list(range(len(labels)))
    assert [sum(labels[i] == r for i in held) for r in range(3)] == [5, 2, 0]  # 3 < 5: kept
    assert holdout_split(labels, 0.1, seed=0) == (train, held)
    assert holdout_split(labels, 0.1, seed=1) != (train, held)


def test_training_writes_a_reproducible_calibrated_artifact(
    folders: tuple[str, str], trained: Path, tmp_path: Path
) -> None:
    manifest = read_manifest(trained)
    assert manifest is not None
    assert {p.name for p in trained.iterdir()} == {"model.onnx", "tokenizer.json", HEAD_FILE}
    assert manifest.examples == 330 and manifest.holdout == 33
    assert len(manifest.routes) == 11 and "escalate" in manifest.routes
    assert np.array(manifest.weights).shape == (11, 384)
    # Better than chance (1/11) on examples it never saw, after three epochs on 297.
    assert manifest.holdout_accuracy is not None and manifest.holdout_accuracy > 0.5
    assert len(manifest.calibration) == 4 and manifest.calibration != [0.0] * 4
    # The serving path reads the exported encoder like any L0 encoder.
    assert Encoder(trained, threads=1).encode(["hello"]).shape == (1, 384)

    again = tmp_path / "again"
    train_head(sample_config(folders, "unused"), MODELS, out=again, threads=2)
    second = read_manifest(again)
    assert second is not None
    assert second.weights == manifest.weights and second.calibration == manifest.calibration
    assert second.examples_digest == manifest.examples_digest
    # Already there for the same examples and settings: kept, not trained again.
    kept = train_head(sample_config(folders, "unused"), MODELS, out=again, threads=2)
    assert kept.created == second.created


def test_too_small_a_table_is_refused_with_a_reason(
    folders: tuple[str, str], tmp_path: Path
) -> None:
    config = homelab_rendered()
    small = sample_config(folders, "unused").model_copy(
        update={"routes": config.routes, "examples_from": ()}
    )
    with pytest.raises(TrainingError, match=r"needs about 300 examples.*head\.mode: encoder"):
        train_head(small, MODELS, out=tmp_path / "artifact")
    assert not (tmp_path / "artifact").exists()


def test_the_cli_refuses_a_config_that_is_not_the_jobs(
    folders: tuple[str, str],
    trained: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    directory = tmp_path / "config"
    directory.mkdir()
    config = sample_config(folders, "heads/aaaa")
    (directory / "router.json").write_text(config.model_dump_json())
    code = main(
        [
            "train-head",
            "--config-dir",
            str(directory),
            "--models-dir",
            str(MODELS),
            "--expect-path",
            "heads/bbbb",
        ]
    )
    assert code != 0
    assert "the ConfigMap is older or newer than the Job" in capsys.readouterr().err
    # The Job's own config: its artifact (already trained here) is kept, the manifest printed.
    shutil.copytree(trained, MODELS / "heads" / "cli-test", dirs_exist_ok=True)
    config = sample_config(folders, "heads/cli-test")
    (directory / "router.json").write_text(config.model_dump_json())
    args = ["--config-dir", str(directory), "--models-dir", str(MODELS)]
    assert main(["train-head", *args, "--expect-path", "heads/cli-test"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["examples"] == 330 and "weights" not in printed


async def test_l0_serves_with_its_base_until_the_head_is_there(
    folders: tuple[str, str], trained: Path, tmp_path: Path
) -> None:
    artifact = tmp_path / "heads" / "key"
    config = sample_config(folders, str(artifact))
    layer = EmbeddingLayer(config.layers[0], config, MODELS, store=EncoderStore())
    await layer.prepare()
    assert layer.stats["head"]["state"] == "pending"
    assert layer.learned_version == ""
    assert layer.head_pending
    assert await layer.learn() is False  # nothing new yet
    before = await layer.classify("what's the balance on my checking account")
    assert before.head is False  # the base encoder answers: L0's own settings apply

    shutil.copytree(trained, artifact)
    assert await layer.learn() is True
    assert layer.stats["head"]["state"] == "loaded"
    assert layer.learned_version != ""  # decisions cached before the head are not served
    verdict = await layer.classify("what's the balance on my checking account")
    assert verdict.route == "banking" and 0.0 < verdict.confidence <= 1.0
    assert verdict.head is True  # the head's own threshold and calibration apply
    assert await layer.learn() is False  # loaded: nothing to do

    # Examples that changed since training: the head is stale, the base serves.
    moved = sample_config(folders, str(artifact), extra=("a brand new example",))
    stale = EmbeddingLayer(moved.layers[0], moved, MODELS, store=EncoderStore())
    await stale.prepare()
    assert stale.stats["head"]["state"] == "stale"


def test_the_orchestrator_reports_and_meters_the_head(
    folders: tuple[str, str], trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROUTER_MESH_LEARN_SECONDS", "0.1")
    artifact = tmp_path / "heads" / "key"
    directory = tmp_path / "config"
    directory.mkdir()
    config = sample_config(folders, str(artifact), head_threshold=0.3)
    (directory / "router.json").write_text(config.model_dump_json())
    with TestClient(create_app(Router(directory, models_dir=MODELS, poll_seconds=0.05))) as c:
        assert wait_until(lambda: c.get("/readyz").status_code == 200, timeout=120)
        assert c.get("/readyz").json()["heads"]["l0"]["state"] == "pending"
        layer = c.get("/v1/config").json()["layers"][0]
        assert (layer["configured_threshold"], layer["head_threshold"]) == (0.5, 0.3)
        assert 'router_head_loaded{layer="l0"} 0.0' in c.get("/metrics").text
        message = "what's the balance on my checking account"
        before = c.post("/v1/route", json={"message": message}).json()
        explained = c.post("/v1/route", json={"message": message, "explain": True}).json()
        assert [(t["layer"], t["head"]) for t in explained["trace"]][:1] == [("l0", False)]
        assert c.post("/v1/route", json={"message": message}).json()["cache_hit"] is True

        shutil.copytree(trained, artifact)  # the training Job finishes
        assert wait_until(
            lambda: c.get("/readyz").json()["heads"]["l0"]["state"] == "loaded", timeout=120
        )
        head = c.get("/v1/config").json()["layers"][0]["index"]["head"]
        assert head["path"] == str(artifact) and head["holdout_accuracy"] > 0.5
        assert 'router_head_loaded{layer="l0"} 1.0' in c.get("/metrics").text
        after = c.post("/v1/route", json={"message": message}).json()
        assert after["cache_hit"] is False  # decided again, by the head
        explained = c.post("/v1/route", json={"message": message, "explain": True}).json()
        assert [(t["layer"], t["head"]) for t in explained["trace"]][:1] == [("l0", True)]
        assert after["config_hash"] == before["config_hash"]  # no config change, no restart
        assert after["route"] == "banking"
