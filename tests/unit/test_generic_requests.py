"""The packaged generic requests a tuned encoder learns as one more class: the corpus as
shipped, its draw for a table (sources, nearness, count), the clause judgement and prior
of an encoder tuned with them, and the RouterMesh field that asks for them (rendering,
its key, refusal for a head, the CRD's CEL rule); training with the real models is in
``test_encoder_tuning.py``."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import celpy
import numpy as np
import pytest
import yaml

from routermesh.operator import api
from routermesh.operator.render import render_config
from routermesh.runtime import generic_requests
from routermesh.runtime.calibration import TUNED_GENERIC_PRIOR, TUNED_PRIOR
from routermesh.runtime.contract.config import (
    GENERIC_REQUESTS_VERSION,
    HeadConfig,
    ModelRef,
    RouterConfig,
)
from routermesh.runtime.embedding import _clause_confidence, _tuned_prior
from routermesh.runtime.example_index import Features, Judgement
from routermesh.runtime.head_artifact import HeadManifest

REPO = Path(__file__).resolve().parents[2]
MESH = yaml.safe_load((REPO / "samples/homelab/routermesh.yaml").read_text())
TABLE = yaml.safe_load((REPO / "samples/homelab/routetable.yaml").read_text())
CRD = REPO / "crds/routermesh.io_routermeshes.yaml"


def rendered(head: dict[str, Any]) -> RouterConfig:
    doc = copy.deepcopy(MESH)
    doc["spec"].setdefault("layers", {}).setdefault("l0", {})["head"] = {"enabled": True, **head}
    return render_config(api.parse(api.RouterMesh, doc), [api.parse(api.RouteTable, TABLE)])


def test_the_packaged_corpus_holds_both_sources_in_its_drawn_order() -> None:
    both = generic_requests.load(("hwu64", "clinc150"))
    hwu64 = generic_requests.load(("hwu64",))
    clinc150 = generic_requests.load(("clinc150",))
    assert (len(both), len(hwu64), len(clinc150)) == (1200, 452, 748)
    assert both[:3] == [
        "turn my plug on",
        "it's good to see you",
        "i have a meeting tomorrow morning at ten please remind me",
    ]
    assert hwu64[:2] == [
        "turn my plug on",
        "i have a meeting tomorrow morning at ten please remind me",
    ]
    assert generic_requests.load(()) == []


def test_a_bad_corpus_line_names_its_number(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        '{"text": "play some jazz", "source": "hwu64"}\n{"text": "x", "source": "web"}\n'
    )
    with pytest.raises(generic_requests.CorpusError, match=r"corpus\.jsonl:2"):
        generic_requests.load(("hwu64",), corpus)
    with pytest.raises(generic_requests.CorpusError, match="unreadable"):
        generic_requests.load(("hwu64",), tmp_path / "missing.jsonl")


def test_requests_near_the_tables_evidence_are_left_out_and_the_rest_capped() -> None:
    texts = ["a", "b", "c", "d"]
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, 0.6]])
    evidence = np.array([[1.0, 0.0]])  # cosine to it: a 1.0, b 0.0, c 0.6, d 0.8
    assert generic_requests.unlike(texts, vectors, evidence) == ["b"]  # c: as near as NEAR
    assert generic_requests.unlike(texts, vectors, evidence, near=0.9) == ["b", "c", "d"]
    assert generic_requests.unlike(texts, vectors, evidence, near=0.9, rows=2) == ["b", "c"]


def _judgement(confidence: float, in_scope: float) -> Judgement:
    features = Features(route=0, share=0.5, best=0.7, margin=0.1)
    return Judgement(route="proxmox", confidence=confidence, in_scope=in_scope, features=features)


def test_a_clause_is_judged_by_its_route_alone_only_when_asked() -> None:
    assert _clause_confidence(_judgement(0.3, 0.4), by_route=True) == pytest.approx(0.75)
    assert _clause_confidence(_judgement(0.3, 0.4), by_route=False) == pytest.approx(0.3)
    assert _clause_confidence(_judgement(0.5, 0.5), by_route=True) == pytest.approx(1.0)
    assert _clause_confidence(_judgement(0.0, 0.0), by_route=True) == 0.0


def _manifest(mode: str, generic_rows: int) -> HeadManifest:
    return HeadManifest(
        mode=mode,  # type: ignore[arg-type]
        routes=("unifi", "cortex"),
        examples_digest="ab" * 32,
        weights=[],
        bias=[],
        calibration=[],
        examples=20,
        holdout=0,
        holdout_accuracy=None,
        epochs=4,
        seed=0,
        max_tokens=48,
        base="hf://sentence-transformers/all-MiniLM-L6-v2",
        seconds=1.0,
        created=1.0,
        generic_requests=("hwu64",) if generic_rows else (),
        generic_rows=generic_rows,
    )


def test_each_tuned_encoder_gets_the_prior_measured_on_tables_tuned_its_way() -> None:
    assert _tuned_prior(None) is None
    assert _tuned_prior(_manifest("head", 0)) is None
    assert _tuned_prior(_manifest("encoder", 0)) is TUNED_PRIOR
    assert _tuned_prior(_manifest("encoder", 300)) is TUNED_GENERIC_PRIOR


def test_the_manifest_records_them_and_one_without_them_is_written_as_before() -> None:
    with_them = _manifest("encoder", 300).model_copy(update={"generic_version": "ab12" * 4})
    written = json.loads(with_them.to_json())
    assert (written["generic_requests"], written["generic_rows"]) == (["hwu64"], 300)
    assert written["generic_version"] == "ab12ab12ab12ab12"
    assert HeadManifest.model_validate(written) == with_them
    # Without them, the fields (and so the digest) of a tuned encoder's head.json before
    # they existed.
    assert list(json.loads(_manifest("encoder", 0).to_json())) == [
        "format",
        "mode",
        "routes",
        "examples_digest",
        "weights",
        "bias",
        "calibration",
        "examples",
        "holdout",
        "holdout_accuracy",
        "epochs",
        "seed",
        "max_tokens",
        "base",
        "seconds",
        "created",
    ]


def test_the_packaged_corpus_is_the_version_the_contract_names() -> None:
    assert generic_requests.version() == GENERIC_REQUESTS_VERSION
    assert generic_requests.version_for(("hwu64",)) == GENERIC_REQUESTS_VERSION


def test_the_corpus_version_covers_its_rows_and_the_draw(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"text": "play some jazz", "source": "hwu64"}\n')
    first = generic_requests.version(corpus)
    corpus.write_text('{"text": "play some blues", "source": "hwu64"}\n')
    generic_requests.version.cache_clear()
    assert generic_requests.version(corpus) != first
    assert len(first) == 16 and generic_requests.version_for(()) == ""


def test_a_tuned_encoder_learns_them_when_asked_and_each_choice_has_its_key() -> None:
    alone = rendered({"mode": "encoder"}).layers[0].head
    empty = rendered({"mode": "encoder", "genericRequests": []}).layers[0].head
    both = rendered({"mode": "encoder", "genericRequests": ["hwu64", "clinc150"]}).layers[0].head
    turned = rendered({"mode": "encoder", "genericRequests": ["clinc150", "hwu64"]}).layers[0].head
    one = rendered({"mode": "encoder", "genericRequests": ["clinc150"]}).layers[0].head
    head = rendered({}).layers[0].head
    assert alone is not None and empty is not None and both is not None
    assert one is not None and head is not None
    assert (alone.generic_requests, empty.generic_requests, head.generic_requests) == ((), (), ())
    assert (both.generic_requests, one.generic_requests) == (("clinc150", "hwu64"), ("clinc150",))
    assert turned is not None and turned.path == both.path  # a set: the order changes nothing
    # Without them, the key an encoder tuned before the field existed had (its artifact
    # stays); each choice of corpora is its own artifact.
    assert alone.path == empty.path == "heads/93076f2094f5a510"
    assert len({alone.path, both.path, one.path, head.path}) == 4


def test_a_head_with_generic_requests_is_refused_at_the_edge_and_by_the_crd() -> None:
    with pytest.raises(ValueError, match="tuned encoder only"):
        rendered({"genericRequests": ["hwu64"]})
    with pytest.raises(ValueError, match="genericRequests"):
        rendered({"mode": "encoder", "genericRequests": ["wikipedia"]})
    with pytest.raises(ValueError, match="twice"):
        rendered({"enabled": False, "mode": "encoder", "genericRequests": ["hwu64", "hwu64"]})
    with pytest.raises(ValueError, match="generic_requests"):
        HeadConfig(
            base=ModelRef(uri="packaged", path="base"),
            path="heads/x",
            generic_requests=("hwu64",),
        )
    with pytest.raises(ValueError, match="twice"):
        HeadConfig(
            mode="encoder",
            base=ModelRef(uri="packaged", path="base"),
            path="heads/x",
            generic_requests=("hwu64", "hwu64"),
        )
    schema = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    head = schema["properties"]["spec"]["properties"]["layers"]["properties"]["l0"]["properties"][
        "head"
    ]
    assert head["properties"]["genericRequests"]["x-kubernetes-list-type"] == "set"
    (rule,) = head["x-kubernetes-validations"]
    env = celpy.Environment()
    program = env.program(env.compile(rule["rule"]))

    def holds(obj: dict[str, Any]) -> bool:
        return bool(program.evaluate({"self": celpy.json_to_cel(obj)}))

    assert holds({"genericRequests": ["hwu64"], "mode": "encoder"})
    assert holds({"genericRequests": []})
    assert holds({"mode": "head"})
    assert not holds({"genericRequests": ["hwu64"]})
    assert not holds({"genericRequests": ["hwu64"], "mode": "head"})
