"""L0's encoder tuned on a small table (``l0.head.mode: encoder``), with the real models:
the training Job's entry point tunes the encoder on the examples and description phrases
into a reproducible artifact without head weights, and L0 serves its base encoder until
the artifact is there, then the tuned encoder's nearest-example vote with the tuned
encoder's calibration prior (rendering and the manifest: ``test_head_modes.py``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from routermesh.runtime.calibration import PRIOR_IN_SCOPE, TUNED_PRIOR_IN_SCOPE
from routermesh.runtime.contract.config import GenericSource, HeadConfig, ModelRef, RouterConfig
from routermesh.runtime.decision import Reason
from routermesh.runtime.embedding import EmbeddingLayer, Encoder, EncoderStore
from routermesh.runtime.evidence import route_examples
from routermesh.runtime.finetune import train_head
from routermesh.runtime.head_artifact import HEAD_FILE, examples_digest, read_manifest
from tests.support import encoder_folders, homelab_rendered

torch = pytest.importorskip("torch", reason="the training extra (router-mesh[train])")

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / ".cache/models"


@pytest.fixture(scope="module")
def folders() -> tuple[str, str]:
    """(int8 serving encoder, fp32 base) folders, relative to MODELS."""
    return encoder_folders(MODELS)


def homelab_tuned(
    folders: tuple[str, str],
    path: str,
    *,
    mode: str = "encoder",
    generic: tuple[GenericSource, ...] = (),
) -> RouterConfig:
    """samples/homelab with L0 on the packaged encoder and a head of ``mode`` (one epoch:
    the test checks the mechanics, docs/benchmarks.md the figures)."""
    serving, base = folders
    config = homelab_rendered()
    l0 = config.layers[0].model_copy(
        update={
            "model": ModelRef(uri="packaged", path=serving),
            "head": HeadConfig(
                mode=mode,  # type: ignore[arg-type]
                base=ModelRef(uri="packaged", path=base),
                path=path,
                epochs=1,
                generic_requests=generic,
            ),
        }
    )
    return config.model_copy(update={"layers": (l0, *config.layers[1:])})


def _untuned(base: Path, texts: list[str]) -> np.ndarray:
    from routermesh.runtime.encoder_training import (  # noqa: PLC0415
        pooled_embeddings,
        training_tokenizer,
    )
    from routermesh.runtime.minilm import load_encoder  # noqa: PLC0415

    tokenizer = training_tokenizer(base, max_tokens=48, seed=0, threads=1)
    with torch.no_grad():
        vectors = pooled_embeddings(load_encoder(base).eval(), tokenizer, texts)
    return np.asarray(vectors.numpy())


@pytest.fixture(scope="module")
def tuned(folders: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tuned") / "artifact"
    train_head(homelab_tuned(folders, "unused"), MODELS, out=out, threads=2)
    return out


def test_tuning_writes_a_reproducible_encoder_without_a_head(
    folders: tuple[str, str], tuned: Path, tmp_path: Path
) -> None:
    manifest = read_manifest(tuned)
    assert manifest is not None
    assert {p.name for p in tuned.iterdir()} == {"model.onnx", "tokenizer.json", HEAD_FILE}
    assert manifest.mode == "encoder"
    # The seed table's 40 examples and its four descriptions' 32 phrases, nothing held out.
    assert (manifest.examples, manifest.holdout, manifest.holdout_accuracy) == (72, 0, None)
    assert manifest.weights == [] and manifest.bias == [] and manifest.calibration == []
    assert manifest.routes == ("unifi", "proxmox", "grafana", "elastic", "cortex")

    again = tmp_path / "again"
    train_head(homelab_tuned(folders, "unused"), MODELS, out=again, threads=2)
    texts = ["show me connected clients", "take a snapshot of vm 104"]
    first = Encoder(tuned, threads=1).encode(texts)
    second = Encoder(again, threads=1).encode(texts)
    assert np.array_equal(first, second)
    # Tuned: further from the untuned fp32 encoder than the packaged int8 one is.
    untuned = _untuned(MODELS / folders[1], texts)
    packaged = Encoder(MODELS / folders[0], threads=1).encode(texts)
    assert float((packaged * untuned).sum(axis=1).min()) > 0.999
    # (One epoch moves each text 0.01-0.03 of cosine; int8 quantization under 0.001.)
    assert float((first * untuned).sum(axis=1).max()) < 0.995


async def test_l0_serves_the_tuned_encoder_with_its_own_prior(
    folders: tuple[str, str], tuned: Path, tmp_path: Path
) -> None:
    artifact = tmp_path / "heads" / "key"
    config = homelab_tuned(folders, str(artifact))
    layer = EmbeddingLayer(config.layers[0], config, MODELS, store=EncoderStore())
    await layer.prepare()
    assert layer.stats["head"]["state"] == "pending"
    before = await layer.classify("show me connected clients")
    assert before.head is False and layer.index is not None
    base_weight = layer.index.calibration.in_scope[0]

    shutil.copytree(tuned, artifact)
    assert await layer.learn() is True
    assert layer.stats["head"]["state"] == "loaded" and layer.stats["head"]["mode"] == "encoder"
    index = layer.index
    assert index is not None and index.head is None and index.artifact is not None
    assert layer.learned_version != ""  # decisions cached before the swap are not served
    # The fit is pulled towards the tuned prior, not the packaged encoder's.
    weight = index.calibration.in_scope[0]
    assert abs(weight - TUNED_PRIOR_IN_SCOPE[0]) < abs(weight - PRIOR_IN_SCOPE[0])
    assert weight != base_weight
    verdict = await layer.classify("show me connected clients")
    assert verdict.route == "unifi" and verdict.head is True
    assert await layer.learn() is False


async def test_a_tuned_encoder_is_stale_for_a_head_or_new_descriptions(
    folders: tuple[str, str], tuned: Path, tmp_path: Path
) -> None:
    # A tuned encoder whose digest is what a head of the same table would have learned
    # from: only its mode tells it apart, and a head's config must not serve it.
    artifact = tmp_path / "heads" / "key"
    shutil.copytree(tuned, artifact)
    as_head = homelab_tuned(folders, str(artifact), mode="head")
    examples, routes = route_examples(as_head, MODELS)
    manifest = read_manifest(artifact)
    assert manifest is not None
    (artifact / HEAD_FILE).write_text(
        manifest.model_copy(update={"examples_digest": examples_digest(examples, routes)}).to_json()
    )
    layer = EmbeddingLayer(as_head.layers[0], as_head, MODELS, store=EncoderStore())
    await layer.prepare()
    assert layer.stats["head"]["state"] == "stale"

    artifact = tmp_path / "heads" / "other"
    shutil.copytree(tuned, artifact)
    config = homelab_tuned(folders, str(artifact))
    routes_config = (
        config.routes[0].model_copy(update={"description": "UniFi: clients and switches"}),
        *config.routes[1:],
    )
    moved = config.model_copy(update={"routes": routes_config})
    layer = EmbeddingLayer(moved.layers[0], moved, MODELS, store=EncoderStore())
    await layer.prepare()
    assert layer.stats["head"]["state"] == "stale"
    assert (await layer.classify("show me connected clients")).head is False


@pytest.fixture(scope="module")
def tuned_generic(folders: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tuned-generic") / "artifact"
    config = homelab_tuned(folders, "unused", generic=("hwu64", "clinc150"))
    train_head(config, MODELS, out=out, threads=2)
    return out


async def test_generic_requests_are_learned_as_a_class_never_served_as_examples(
    folders: tuple[str, str], tuned_generic: Path, tmp_path: Path
) -> None:
    manifest = read_manifest(tuned_generic)
    assert manifest is not None
    # The table's 72 rows, and 300 of the corpus's 1,200 (none as near the table as 0.6).
    assert (manifest.examples, manifest.generic_rows) == (72, 300)
    assert manifest.generic_requests == ("hwu64", "clinc150")
    assert len(manifest.generic_version) == 16
    assert manifest.routes == ("unifi", "proxmox", "grafana", "elastic", "cortex")

    artifact = tmp_path / "heads" / "generic"
    shutil.copytree(tuned_generic, artifact)
    config = homelab_tuned(folders, str(artifact), generic=("hwu64", "clinc150"))
    layer = EmbeddingLayer(config.layers[0], config, MODELS, store=EncoderStore())
    await layer.prepare()
    assert layer.stats["head"]["state"] == "loaded" and layer.stats["head"]["generic_rows"] == 300
    assert layer.stats["examples"] == 40  # the table's own: no generic request is evidence
    index = layer.index
    assert index is not None and index.clauses_by_route is True
    assert set(index.routes) == {"unifi", "proxmox", "grafana", "elastic", "cortex"}
    verdict = await layer.classify("check network and spin up test VM")
    assert verdict.head is True and verdict.cause == Reason.MULTI_STEP
    assert verdict.plan == ("unifi", "proxmox")

    # The same artifact for a config that asks for none is another recipe's: stale.
    alone = homelab_tuned(folders, str(artifact))
    layer = EmbeddingLayer(alone.layers[0], alone, MODELS, store=EncoderStore())
    await layer.prepare()
    assert layer.stats["head"]["state"] == "stale"
    # So is one tuned with an earlier corpus or draw.
    (artifact / HEAD_FILE).write_text(
        manifest.model_copy(update={"generic_version": "0" * 16}).to_json()
    )
    layer = EmbeddingLayer(config.layers[0], config, MODELS, store=EncoderStore())
    await layer.prepare()
    assert layer.stats["head"]["state"] == "stale"
