"""The semantic layer (L0) with the real all-MiniLM-L6-v2 int8 encoder from its PyPI
package: embeddings, the nearest-examples vote, the leave-one-out calibration, the
example sources, vectors reused across reloads, abstention when the encoder is
missing, and L0 deciding through the real orchestrator API while a slow index build
never blocks the running config."""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from routermesh.runtime import embedding
from routermesh.runtime.app import create_app
from routermesh.runtime.config import CacheConfig, ExamplesSource, RouterConfig
from routermesh.runtime.decision import Reason
from routermesh.runtime.embedding import (
    EmbeddingLayer,
    Encoder,
    EncoderStore,
    build_index,
    fit_platt,
    neighbour_features,
    route_examples,
)
from routermesh.runtime.packaged import PACKAGED, materialize
from routermesh.runtime.router import Router
from tests.support import homelab_rendered, layer_of, wait_until

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / ".cache/models"
MESSAGES = REPO / "bench/data/homelab-messages.jsonl"


@pytest.fixture(scope="module")
def encoder_dir() -> Path:
    files = materialize(MODELS / "packaged", ["minilm-l6-onnx-int8", "minilm-l6-tokenizer"])
    folder = files["minilm-l6-onnx-int8"].parent
    assert folder == files["minilm-l6-tokenizer"].parent
    assert folder.name == PACKAGED["minilm-l6-onnx-int8"].folder
    return folder


@pytest.fixture(scope="module")
def encoder(encoder_dir: Path) -> Encoder:
    return Encoder(encoder_dir, threads=1)


def l0_config(encoder_dir: Path, *, threshold: float = 0.5, **changes: object) -> RouterConfig:
    """The seed sample with only L0, served from the packaged encoder."""
    config = homelab_rendered()
    l0 = layer_of(config, "l0").model_copy(
        update={
            "model": layer_of(config, "l0").model.model_copy(
                update={"path": str(encoder_dir.relative_to(MODELS)), "sha256": None}
            ),
            "threshold": threshold,
            "timeout_ms": 5000,
        }
    )
    return config.model_copy(
        update={
            "layers": (l0,),
            "cache": CacheConfig(),  # the sample's Redis URL is a Secret file
            "escalation": config.escalation.model_copy(update={"credentials_file": None}),
            **changes,
        }
    ).sealed()


def test_embeddings_are_unit_length_and_put_paraphrases_together(encoder: Encoder) -> None:
    vectors = encoder.encode(
        ["restart the living room access point", "reboot the wifi ap in the lounge", "bake bread"]
    )
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert float(vectors[0] @ vectors[1]) > float(vectors[0] @ vectors[2]) + 0.2
    # Order is kept although batches are sorted by length.
    again = encoder.encode(["bake bread", "restart the living room access point"])
    assert np.allclose(again[0], vectors[2], atol=1e-5)
    assert np.allclose(again[1], vectors[0], atol=1e-5)


def test_neighbour_features_vote_by_similarity() -> None:
    sims = np.array([[0.9, 0.8, 0.7, 0.1]], dtype=np.float32)
    labels = np.array([0, 0, 1, 1])
    (features,) = neighbour_features(sims, labels, routes=2, k=3)
    assert features.route == 0
    assert features.share == pytest.approx(1.7 / 2.4)
    assert features.best == pytest.approx(0.9)
    assert features.margin == pytest.approx(0.2)


def test_platt_fit_recovers_a_known_logistic_model() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 3))
    truth = np.array([1.5, -2.0, 0.5, 0.3])
    p = 1 / (1 + np.exp(-(x @ truth[:3] + truth[3])))
    y = rng.random(4000) < p
    weights = fit_platt(x.tolist(), y.tolist())
    assert np.allclose(weights, truth, atol=0.2)


def test_the_index_routes_held_out_homelab_messages_with_calibrated_confidence(
    encoder: Encoder,
) -> None:
    config = homelab_rendered()
    pairs, routes = route_examples(config, MODELS)
    assert len(pairs) == 40 and routes[-1] == "cortex"
    index = build_index(encoder.encode([t for t, _ in pairs]), pairs, routes, k=5)
    assert 0.0 < index.loo_accuracy <= 1.0
    rows = [json.loads(line) for line in MESSAGES.read_text().splitlines()]
    in_scope = [r for r in rows if r["route"] != "__escalate__"]
    vectors = encoder.encode([r["text"] for r in in_scope])
    answers = [index.classify(v) for v in vectors]
    right = sum(route == r["route"] for (route, _, _), r in zip(answers, in_scope, strict=True))
    assert right / len(in_scope) >= 0.8  # 10 examples per route, messages never seen
    confidences = [c for _, c, _ in answers]
    assert all(0.0 <= c <= 1.0 for c in confidences)
    unrelated = index.classify(encoder.encode(["write a sonnet about autumn leaves"])[0])
    assert unrelated[1] < float(np.median(confidences))


def test_examples_come_from_the_table_and_examples_from_files(tmp_path: Path) -> None:
    rows = [
        {"text": "reboot   the ap", "route": "unifi"},
        {"text": "reboot the ap", "route": "unifi"},  # the same text once
        {"text": "order a pizza", "route": "__escalate__"},
        {"text": "a route elsewhere", "route": "jira"},
        {"text": 42, "route": "unifi"},
    ]
    path = tmp_path / "examples/extra.jsonl"
    path.parent.mkdir()
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    config = homelab_rendered().model_copy(
        update={"examples_from": (ExamplesSource(uri="file:x", path="examples/extra.jsonl"),)}
    )
    pairs, _ = route_examples(config, tmp_path)
    extra = pairs[40:]
    assert extra == [("reboot the ap", "unifi"), ("order a pizza", "cortex")]


def test_vectors_are_reused_across_rebuilds(encoder_dir: Path) -> None:
    store = EncoderStore()
    key, encoder = store.encoder(encoder_dir)
    _, first = store.vectors(key, encoder, ["a", "b", "c"])
    vectors, second = store.vectors(key, encoder, ["a", "b", "d"])
    assert (first, second) == (3, 1)
    assert vectors.shape == (3, 384)
    assert store.encoder(encoder_dir)[1] is encoder


async def test_a_missing_encoder_makes_the_layer_abstain_not_fail(tmp_path: Path) -> None:
    config = homelab_rendered()
    layer = EmbeddingLayer(layer_of(config, "l0"), config, tmp_path, store=EncoderStore())
    await layer.prepare()
    assert layer.error is not None and "tokenizer.json" in layer.error
    assert await layer.ready() is False
    verdict = await layer.classify("start vm 104")
    assert verdict.route is None and verdict.reason is Reason.LAYER_ERROR


def _publish(directory: Path, config: RouterConfig) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    temporary = directory / ".router.json.tmp"
    temporary.write_text(config.to_json())
    temporary.replace(directory / "router.json")


def test_l0_decides_through_the_api_and_a_slow_build_never_blocks_routing(
    encoder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "config"
    first = l0_config(encoder_dir)
    _publish(directory, first)
    router = Router(directory, models_dir=MODELS, poll_seconds=0.05)
    with TestClient(create_app(router)) as client:
        assert wait_until(lambda: client.get("/readyz").status_code == 200)
        body = client.post(
            "/v1/route", json={"message": "take a snapshot of vm 104 before the upgrade"}
        ).json()
        assert (body["route"], body["layer"]) == ("proxmox", "l0")
        assert 0.5 <= body["confidence"] <= 1.0
        index = client.get("/v1/config").json()["layers"][0]["index"]
        assert index["examples"] == 40 and index["loo_accuracy"] > 0

        release = threading.Event()
        original = embedding.build_index

        def slow_build(*args: object, **kwargs: object) -> embedding.ExampleIndex:
            release.wait(30)
            return original(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(embedding, "build_index", slow_build)
        second = l0_config(encoder_dir, threshold=0.6)
        _publish(directory, second)
        for _ in range(5):  # the old config answers while the new index builds
            answer = client.post("/v1/route", json={"message": "list the dhcp leases"}).json()
            assert answer["config_hash"] == first.config_hash
        release.set()
        assert wait_until(
            lambda: client.get("/v1/config").json()["config_hash"] == second.config_hash
        )
        index = client.get("/v1/config").json()["layers"][0]["index"]
        assert index["encoded"] == 0  # a threshold change re-embeds nothing
        assert math.isclose(client.get("/v1/config").json()["layers"][0]["threshold"], 0.6)


def test_reported_misroutes_become_examples_and_stale_decisions_go(
    encoder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROUTER_MESH_LEARN_SECONDS", "0.1")
    directory = tmp_path / "config"
    config = l0_config(encoder_dir, threshold=0.5)
    _publish(directory, config)
    message = "the basement sensor stopped reporting humidity"
    with TestClient(create_app(Router(directory, models_dir=MODELS, poll_seconds=0.05))) as c:
        assert wait_until(lambda: c.get("/readyz").status_code == 200)
        before = c.post("/v1/route", json={"message": message, "explain": True}).json()
        first = before["trace"][0]["route"]
        expected = "grafana" if first != "grafana" else "elastic"
        c.post("/v1/route", json={"message": message})  # now cached
        assert c.post("/v1/route", json={"message": message}).json()["cache_hit"] is True

        stored = c.post("/v1/feedback", json={"message": message, "expected_route": expected})
        assert stored.status_code == 202
        assert wait_until(lambda: c.get("/v1/config").json()["layers"][0]["index"]["learned"] == 1)
        after = c.post("/v1/route", json={"message": f"  {message.upper()} "}).json()
        assert after["cache_hit"] is False  # decided again, by the layer that learned
        assert (after["route"], after["layer"]) == (expected, "l0")
        metrics = c.get("/metrics").text
        assert 'router_learned_examples{layer="l0"} 1.0' in metrics
        assert 'router_learning_refreshes_total{layer="l0"} 1.0' in metrics
        # Feedback naming an unknown route is refused and never learned.
        refused = c.post("/v1/feedback", json={"message": "x", "expected_route": "nope"})
        assert refused.status_code == 422
