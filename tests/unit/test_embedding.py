"""The semantic layer (L0) with the real all-MiniLM-L6-v2 int8 encoder from its PyPI
package: embeddings, the nearest-evidence vote, the calibration (leave-one-out,
leave-route-out, the prior), description phrases as evidence, out-of-scope and
multi-step verdicts, the example sources, vectors reused across reloads, abstention
when the encoder is missing, and L0 deciding through the real orchestrator API while
a slow index build never blocks the running config."""

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
from routermesh.runtime.contract.config import CacheConfig, ExamplesSource, RouterConfig
from routermesh.runtime.decision import Reason
from routermesh.runtime.embedding import EmbeddingLayer
from routermesh.runtime.encode_batcher import BatchCost
from routermesh.runtime.encoder import Encoder, EncoderStore
from routermesh.runtime.evidence import description_phrases, route_examples
from routermesh.runtime.example_index import build_index, neighbour_features
from routermesh.runtime.feedback import FeedbackRecord
from routermesh.runtime.lexical import content_words
from routermesh.runtime.packaged import PACKAGED, materialize
from routermesh.runtime.route_groups import RouteGroups
from routermesh.runtime.router import Router
from tests.support import FakeTarget, homelab_rendered, layer_of, wait_until

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


def test_neighbour_features_vote_by_similarity_and_best_similarity() -> None:
    sims = np.array([[0.9, 0.8, 0.7, 0.1], [0.5, 0.1, 0.9, 0.45]], dtype=np.float32)
    labels = np.array([0, 0, 1, 1])
    (first, second), scores = neighbour_features(sims, labels, RouteGroups(labels, 2), k=3)
    assert first.route == 0
    assert first.share == pytest.approx(1.7 / 2.4)
    assert first.best == pytest.approx(0.9)
    assert first.margin == pytest.approx(0.2)
    # Route 1 has the best single match and the larger vote share: it wins.
    assert second.route == 1
    assert second.share == pytest.approx(1.35 / 1.85)
    assert second.best == pytest.approx(0.9) and second.margin == pytest.approx(0.4)
    assert scores[1, 1] == pytest.approx(1.35 / 1.85 + 0.9)


def test_masked_evidence_is_never_a_neighbour() -> None:
    """Leave-route-out masks a whole route: its best similarity is -1, it gets no vote."""
    sims = np.array([[-np.inf, -np.inf, 0.3, 0.2]], dtype=np.float32)
    labels = np.array([0, 0, 1, 1])
    (features,), _ = neighbour_features(sims, labels, RouteGroups(labels, 2), k=3)
    assert (features.route, features.share) == (1, pytest.approx(1.0))
    assert features.best == pytest.approx(0.3) and features.margin == pytest.approx(0.3)


def test_description_phrases_are_evidence_of_their_route() -> None:
    assert description_phrases(
        "UniFi controller: Wi-Fi networks and SSIDs, access points (APs), DHCP leases."
    ) == [
        "UniFi controller: Wi-Fi networks and SSIDs, access points (APs), DHCP leases.",
        "UniFi controller",
        "Wi-Fi networks",
        "access points",
        "DHCP leases",
    ]
    assert description_phrases("   ") == []


def _homelab_index(encoder: Encoder) -> tuple[object, list[str]]:
    config = homelab_rendered()
    pairs, routes = route_examples(config, MODELS)
    phrases = [
        (phrase, route.name)
        for route in config.routes
        for phrase in description_phrases(route.description)
    ]
    evidence = pairs + phrases
    index = build_index(
        encoder.encode([t for t, _ in evidence]),
        [routes.index(r) for _, r in evidence],
        routes,
        k=10,
        queries=np.array([True] * len(pairs) + [False] * len(phrases)),
        texts=[t for t, _ in evidence],
    )
    return index, routes


def test_the_index_routes_held_out_homelab_messages_and_knows_what_is_out_of_scope(
    encoder: Encoder,
) -> None:
    index, routes = _homelab_index(encoder)
    assert len(routes) == 5 and routes[-1] == "cortex"
    assert 0.0 < index.loo_accuracy <= 1.0  # type: ignore[attr-defined]
    rows = [json.loads(line) for line in MESSAGES.read_text().splitlines()]
    in_scope = [r for r in rows if r["route"] != "__escalate__"]
    vectors = encoder.encode([r["text"] for r in in_scope])  # type: ignore[attr-defined]
    judged = [
        index.classify(v, words=content_words(r["text"]))
        for v, r in zip(vectors, in_scope, strict=True)
    ]
    right = sum(j.route == r["route"] for j, r in zip(judged, in_scope, strict=True))
    assert right / len(in_scope) >= 0.85  # 10 examples and a description per route
    assert all(0.0 <= j.confidence <= j.in_scope <= 1.0 for j in judged)
    # Far from every route: more likely out of scope than in, and below every routed one's
    # median confidence.
    for text in ("write a sonnet about autumn leaves", "what's the weather in denver tomorrow"):
        far = index.classify(encoder.encode([text])[0], words=content_words(text))  # type: ignore[attr-defined]
        assert far.in_scope < 0.5
        assert far.confidence < float(np.median([j.confidence for j in judged]))


def test_a_near_copy_of_an_example_is_confident_with_ten_examples_per_route(
    encoder: Encoder,
) -> None:
    """The prior keeps a small table's calibration from flattening out: an example itself
    (or a near copy) routes at the default threshold."""
    index, _ = _homelab_index(encoder)
    for text, route in (
        ("take a snapshot of vm 104 before I upgrade it", "proxmox"),
        ("restart the access point in the living room please", "unifi"),
    ):
        judged = index.classify(encoder.encode([text])[0], words=content_words(text))  # type: ignore[attr-defined]
        assert judged.route == route
        assert judged.confidence >= 0.8


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
        assert index["description_phrases"] == 32
        assert 0.2 < index["calibration"]["half_in_scope_similarity"] < 0.8
        # check-table's per-route figures (tests/unit/test_table_check.py), as served.
        assert index["calibration"]["half_in_scope_similarity_by_route"] == pytest.approx(
            {"unifi": 0.4644, "proxmox": 0.4674, "grafana": 0.4361, "elastic": 0.4501}, abs=1e-4
        )

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


def test_reported_escalations_are_learned_with_a_server_or_the_escalation_route(
    encoder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop `router-mesh bench learn` replays: a request in words no example uses is
    escalated; the agent reports the server the reasoning endpoint picked; L0 learns it."""
    monkeypatch.setenv("ROUTER_MESH_LEARN_SECONDS", "0.1")
    directory = tmp_path / "config"
    _publish(directory, l0_config(encoder_dir, threshold=0.5))
    message = "turn on band steering for HomeNet"
    with TestClient(create_app(Router(directory, models_dir=MODELS, poll_seconds=0.05))) as c:
        assert wait_until(lambda: c.get("/readyz").status_code == 200)
        before = c.post("/v1/route", json={"message": message}).json()
        assert (before["route"], before["escalation_reason"]) == ("cortex", "out_of_scope")
        stored = c.post("/v1/feedback", json={"message": message, "expected_route": "unifi"})
        assert stored.json()["misroute"] is True  # decided: the escalation route
        assert wait_until(lambda: c.get("/v1/config").json()["layers"][0]["index"]["learned"] == 1)
        after = c.post("/v1/route", json={"message": "Turn on band steering for HomeNet."}).json()
        assert (after["route"], after["layer"], after["cache_hit"]) == ("unifi", "l0", False)
        # The other way: a server reports a request it does not handle with the escalation
        # route; L0 learns it as an example of that route and no longer routes it.
        routed = c.post("/v1/route", json={"message": "show me connected clients"}).json()
        assert routed["route"] == "unifi"
        c.post(
            "/v1/feedback",
            json={"message": "show me connected clients", "expected_route": "cortex"},
        )
        assert wait_until(lambda: c.get("/v1/config").json()["layers"][0]["index"]["learned"] == 2)
        refused = c.post("/v1/route", json={"message": "Show me connected clients!"}).json()
        # its own examples still pull it to unifi, now below the threshold
        assert (refused["route"], refused["escalation_reason"]) == ("cortex", "low_confidence")


def test_an_escalation_confirmed_as_the_reasoning_endpoints_is_learned(
    encoder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent reports a request the reasoning endpoint handled itself with the
    escalation route: not a misroute, yet L0 learns it, and requests like it that the
    table's words pulled in ("wifi") stop being routed."""
    monkeypatch.setenv("ROUTER_MESH_LEARN_SECONDS", "0.1")
    directory = tmp_path / "config"
    _publish(directory, l0_config(encoder_dir, threshold=0.5))
    message, near = "write me a poem about my network", "write me a poem about my wifi network"
    seed = "check network and spin up test VM"
    with TestClient(create_app(Router(directory, models_dir=MODELS, poll_seconds=0.05))) as c:
        assert wait_until(lambda: c.get("/readyz").status_code == 200)
        # A multi-step escalation confirmed is not an example: its parts are servers' tasks.
        multi = c.post("/v1/route", json={"message": seed}).json()
        assert (multi["escalation_reason"], multi["plan"]) == ("multi_step", ["unifi", "proxmox"])
        kept = c.post("/v1/feedback", json={"message": seed, "expected_route": "cortex"}).json()
        assert (kept["misroute"], kept["example"]) == (False, False)
        # once the decision is no longer cached, the agent says what it was
        told = {"message": "sync the vlans and snapshot vm 104", "expected_route": "cortex"}
        decided = {"decided_route": "cortex", "plan": ["unifi", "proxmox"]}
        planned = c.post("/v1/feedback", json={**told, **decided}).json()
        assert (planned["misroute"], planned["example"]) == (False, False)

        before = c.post("/v1/route", json={"message": message}).json()
        assert before["route"] == "cortex"
        assert c.post("/v1/route", json={"message": near}).json()["route"] == "unifi"
        stored = c.post("/v1/feedback", json={"message": message, "expected_route": "cortex"})
        # a confirmation, learned all the same
        assert (stored.json()["misroute"], stored.json()["example"]) == (False, True)
        assert wait_until(lambda: c.get("/v1/config").json()["layers"][0]["index"]["learned"] == 1)
        after = c.post("/v1/route", json={"message": near}).json()
        assert (after["route"], after["cache_hit"]) == ("cortex", False)
        again = c.post("/v1/route", json={"message": "Write me a poem about my network."}).json()
        assert (again["route"], again["escalation_reason"]) == ("cortex", "out_of_scope")
        # A confirmed server route is an outcome: exported only with the confirmations.
        confirmed = {"message": "show me connected clients", "expected_route": "unifi"}
        c.post("/v1/feedback", json={**confirmed, "decided_route": "unifi"})

        def exported(query: str) -> list[tuple[str, str]]:
            lines = c.get(f"/v1/feedback{query}").text.splitlines()
            return [(row["text"], row["route"]) for row in map(json.loads, lines)]

        assert exported("") == [(message, "cortex")]
        assert exported("?misroutes=false") == [
            ("show me connected clients", "unifi"),
            (message, "cortex"),
            ("sync the vlans and snapshot vm 104", "cortex"),
            (seed, "cortex"),
        ]
        seed_again = c.post("/v1/route", json={"message": seed}).json()
        assert (seed_again["escalation_reason"], seed_again["plan"]) == (
            "multi_step",
            ["unifi", "proxmox"],
        )


def test_the_reasoning_endpoint_closes_the_loop_in_its_dispatched_answer(
    encoder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through /v1/dispatch an escalated request reaches the reasoning endpoint, whose
    answer names the server it chose; L0 learns it with no report from the agent."""
    monkeypatch.setenv("ROUTER_MESH_LEARN_SECONDS", "0.1")
    cortex = FakeTarget()
    cortex.start()
    try:
        config = l0_config(encoder_dir, threshold=0.5)
        escalation = config.escalation.model_copy(update={"target": f"{cortex.url}/mcp"})
        directory = tmp_path / "config"
        _publish(directory, config.model_copy(update={"escalation": escalation}).sealed())
        message = "turn on band steering for HomeNet"
        router = Router(directory, models_dir=MODELS, poll_seconds=0.05)
        with TestClient(create_app(router)) as c:
            assert wait_until(lambda: c.get("/readyz").status_code == 200)
            cortex.answer_headers = {"X-Router-Expected-Route": "unifi"}
            sent = c.post("/v1/dispatch", json={"message": message})
            assert (sent.status_code, sent.headers["X-Router-Route"]) == (200, "cortex")
            assert len(cortex.received) == 1  # the escalation reached the endpoint
            assert wait_until(
                lambda: c.get("/v1/config").json()["layers"][0]["index"]["learned"] == 1
            )
            again = c.post("/v1/dispatch", json={"message": "Turn on band steering for HomeNet"})
            assert (again.headers["X-Router-Route"], again.headers["X-Router-Layer"]) == (
                "unifi",
                "l0",
            )
    finally:
        cortex.stop()


def test_misroutes_and_requests_reported_with_the_escalation_route_are_examples() -> None:
    def report(expected: str, decided: str | None, plan: tuple[str, ...] = ()) -> FeedbackRecord:
        return FeedbackRecord(
            message="m",
            expected_route=expected,
            decided_route=decided,
            plan=plan,
            config_hash="c",
            route_table_version="v",
        )

    assert report("unifi", "cortex").learnable("cortex")  # an escalation given its server
    assert report("unifi", "proxmox").learnable("cortex")  # a misroute
    assert report("cortex", "unifi").learnable("cortex")  # routed, not a server's job
    assert report("cortex", "cortex").learnable("cortex")  # the endpoint handled it itself
    assert not report("unifi", "unifi").learnable("cortex")  # a confirmation: an outcome
    assert report("unifi", None).learnable("cortex")  # the decision was no longer cached
    # A multi-step escalation confirmed: its parts are servers' tasks, not the endpoint's.
    assert not report("cortex", "cortex", ("unifi", "proxmox")).learnable("cortex")
    assert report("unifi", "cortex", ("unifi", "proxmox")).learnable("cortex")  # one server


async def test_l0_is_saturated_when_its_backlog_would_outlast_max_queue_ms(
    encoder_dir: Path,
) -> None:
    config = l0_config(encoder_dir)
    l0 = layer_of(config, "l0")
    assert l0.max_queue_ms == 50  # the API's default, rendered
    layer = EmbeddingLayer(l0, config, MODELS, store=EncoderStore())
    assert not layer.saturated()  # not built yet
    await layer.prepare()
    await layer.classify("start vm 104")  # one measured encoder call
    batcher = layer._serving[0] if layer._serving else None
    assert batcher is not None and batcher.cost.measured
    assert not layer.saturated()  # nothing queued
    batcher.cost = BatchCost()
    batcher.cost.observe(1, 0.010)
    batcher.cost.observe(2, 0.020)  # 10 ms a text
    batcher.queued_texts = 6  # 60 ms of backlog, over the 50 ms bound
    assert layer.saturated()
    batcher.queued_texts = 4
    assert not layer.saturated()

    unbounded = l0.model_copy(update={"max_queue_ms": None})
    never = EmbeddingLayer(unbounded, config, MODELS, store=EncoderStore())
    await never.prepare()
    await never.classify("start vm 104")
    assert never._serving is not None
    never._serving[0].queued_texts = 10_000
    assert not never.saturated()
