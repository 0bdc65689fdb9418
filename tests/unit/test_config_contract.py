"""The runtime config contract and the one function that renders it."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from routermesh.operator import api
from routermesh.operator.render import (
    RenderError,
    label_selector_matches,
    render_config,
    selected_tables,
)
from routermesh.runtime.contract import config as rc

REPO = Path(__file__).resolve().parents[2]
MESH_DOC = yaml.safe_load((REPO / "samples/homelab/routermesh.yaml").read_text())
TABLE_DOC = yaml.safe_load((REPO / "samples/homelab/routetable.yaml").read_text())


def mesh(edit: Any = None, namespace: str = "ops") -> api.RouterMesh:
    doc = copy.deepcopy(MESH_DOC)
    doc["metadata"]["namespace"] = namespace
    if edit:
        edit(doc)
    return api.parse(api.RouterMesh, doc)


def table(edit: Any = None, name: str = "homelab", namespace: str = "ops") -> api.RouteTable:
    doc = copy.deepcopy(TABLE_DOC)
    doc["metadata"].update(name=name, namespace=namespace)
    if edit:
        edit(doc)
    return api.parse(api.RouteTable, doc)


def render(mesh_edit: Any = None, table_edit: Any = None) -> rc.RouterConfig:
    return render_config(mesh(mesh_edit), [table(table_edit)])


def test_render_is_deterministic_and_sealed() -> None:
    first, second = render(), render()
    assert first == second and first.to_json() == second.to_json()
    assert len(first.config_hash) == 64 and len(first.route_table_version) == 64
    first.verify_digests()
    assert first.route_names == ("unifi", "proxmox", "grafana", "elastic", "cortex")


def test_rendered_content() -> None:
    config = render()
    assert config.mesh == rc.MeshRef(name="homelab", namespace="ops")
    unifi = config.routes[0]
    assert unifi.target == "http://unifi-mcp.mcp.svc:8000/mcp"
    assert unifi.source == "ops/homelab" and len(unifi.examples) == 10
    assert [(layer.name, layer.kind) for layer in config.layers] == [
        ("l0", "embedding"),
        ("l1", "generative"),
        ("l2", "generative"),
    ]
    assert [layer.url for layer in config.layers] == [
        "",
        "http://127.0.0.1:8081",
        "http://127.0.0.1:8082",
    ]
    assert config.threshold_for("l0", "unifi") == 0.5
    assert config.threshold_for("l1", "unifi") == 0.85
    assert config.threshold_for("l2", "unifi") == 0.75
    assert config.escalation.target == "http://cortex.agents.svc:8080/v1/escalate"
    assert config.cache.backend == "redis" and config.cache.ttl_seconds == 3600


def test_secrets_are_referenced_as_files_never_inlined() -> None:
    config = render()
    assert config.escalation.credentials_file == "/var/run/secrets/router-mesh/escalation/token"
    assert config.cache.redis_url_file == "/var/run/secrets/router-mesh/redis/url"
    assert config.cache.redis_url is None


def _threshold(doc: dict[str, Any]) -> None:
    doc["spec"]["layers"]["l1"]["threshold"] = 0.9


def _timeout(doc: dict[str, Any]) -> None:
    doc["spec"]["layers"]["l2"]["timeoutMs"] = 900


def _target(doc: dict[str, Any]) -> None:
    doc["spec"]["routes"][0]["target"] = {"url": "http://10.0.0.5:9000/mcp"}


def _route_threshold(doc: dict[str, Any]) -> None:
    doc["spec"]["routes"][1]["thresholds"] = {"l1": 0.95}


def _example(doc: dict[str, Any]) -> None:
    doc["spec"]["routes"][0]["examples"].append("rename the guest network")


def _description(doc: dict[str, Any]) -> None:
    doc["spec"]["routes"][2]["description"] += " Also Loki logs."


def _new_route(doc: dict[str, Any]) -> None:
    doc["spec"]["routes"].append(
        {"name": "homeassistant", "description": "lights", "target": {"url": "http://ha:8123/"}}
    )


def _model(doc: dict[str, Any]) -> None:
    doc["spec"]["layers"]["l1"]["model"] = {"uri": "https://models.example/tiny.gguf"}


def _ttl(doc: dict[str, Any]) -> None:
    doc["spec"]["cache"]["ttlSeconds"] = 60


# (change, on the mesh?, changes the route-table version?)
CHANGES = [
    ("mesh threshold", _threshold, True, True),
    ("mesh timeout", _timeout, True, False),
    ("cache ttl", _ttl, True, False),
    ("route target", _target, False, False),
    ("per-route threshold", _route_threshold, False, True),
    ("route example", _example, False, True),
    ("route description", _description, False, True),
    ("new route", _new_route, False, True),
    ("layer model", _model, True, True),
]


@pytest.mark.parametrize(
    ("edit", "on_mesh", "new_version"), [c[1:] for c in CHANGES], ids=[c[0] for c in CHANGES]
)
def test_every_change_gives_a_new_hash(edit: Any, on_mesh: bool, new_version: bool) -> None:
    before = render()
    after = render(mesh_edit=edit) if on_mesh else render(table_edit=edit)
    assert after.config_hash != before.config_hash
    assert (after.route_table_version != before.route_table_version) is new_version


def test_per_route_threshold_override() -> None:
    config = render(table_edit=_route_threshold)
    assert config.threshold_for("l1", "proxmox") == 0.95
    assert config.threshold_for("l2", "proxmox") == 0.75
    with pytest.raises(KeyError):
        config.threshold_for("l9", "proxmox")


def test_json_round_trip_and_tamper_detection() -> None:
    config = render()
    again = rc.RouterConfig.from_json(config.to_json())
    assert again == config
    again.verify_digests()
    data = json.loads(config.to_json())
    data["layers"][0]["threshold"] = 0.1
    tampered = rc.RouterConfig.model_validate(data)
    with pytest.raises(ValueError, match="digests do not match"):
        tampered.verify_digests()


def test_load_from_a_configmap_style_directory(tmp_path: Path) -> None:
    # A ConfigMap volume: the key is a link into a timestamped folder behind `..data`.
    config = render()
    data = tmp_path / "..2026_11_26_10_00_00.000"
    data.mkdir()
    (data / rc.CONFIG_FILENAME).write_text(config.to_json())
    (tmp_path / "..data").symlink_to(data.name)
    (tmp_path / rc.CONFIG_FILENAME).symlink_to(f"..data/{rc.CONFIG_FILENAME}")
    assert rc.RouterConfig.load(tmp_path) == config


def test_contract_rejects_bad_configs() -> None:
    good = json.loads(render().to_json())
    for mutate, message in [
        (lambda d: d["routes"].append(dict(d["routes"][0])), "duplicate route names"),
        (lambda d: d["routes"][0].update(name="cortex"), "escalation route"),
        (lambda d: d["routes"][0].update(thresholds={"l7": 0.5}), "unknown layers"),
        (lambda d: d["layers"][0].update(threshold=2), "less than or equal to 1"),
        (lambda d: d.update(routes=[]), "at least 1"),
        (lambda d: d.update(surprise=True), "Extra inputs"),
        (lambda d: d["cache"].update(redis_url_file=None), "needs redis_url"),
    ]:
        data = copy.deepcopy(good)
        mutate(data)
        with pytest.raises(ValidationError, match=message):
            rc.RouterConfig.model_validate(data)


def test_route_defined_in_two_tables_is_a_render_error() -> None:
    with pytest.raises(RenderError, match="'unifi' is defined in RouteTables ops/a and ops/b"):
        render_config(
            mesh(lambda d: d["spec"].update(routeTables={"names": ["a", "b"]})),
            [table(name="a"), table(name="b")],
        )


def test_a_route_name_that_begins_another_is_a_render_error() -> None:
    def prefixed(doc: dict[str, Any]) -> None:
        doc["spec"]["routes"][0]["name"] = "grafana-logs"

    with pytest.raises(RenderError, match="route name 'grafana' begins 'grafana-logs'"):
        render(table_edit=prefixed)

    def escalation_prefix(doc: dict[str, Any]) -> None:
        doc["spec"]["routes"][0]["name"] = "cortex-logs"

    with pytest.raises(RenderError, match="'cortex' begins 'cortex-logs'"):
        render(table_edit=escalation_prefix)


def test_route_named_like_the_escalation_route_is_a_render_error() -> None:
    def collide(doc: dict[str, Any]) -> None:
        doc["spec"]["routes"][0]["name"] = "cortex"

    with pytest.raises(RenderError, match="escalation route"):
        render(table_edit=collide)


def test_no_selected_table_is_a_render_error() -> None:
    with pytest.raises(RenderError, match="no RouteTable selected"):
        render_config(mesh(), [table(namespace="elsewhere")])


def test_selection_by_name_and_selector_in_the_mesh_namespace() -> None:
    named = mesh(lambda d: d["spec"].update(routeTables={"names": ["b"]}))
    tables = [table(name="a"), table(name="b"), table(name="c", namespace="other")]
    assert [t.metadata.name for t in selected_tables(named, tables)] == ["b"]
    by_label = mesh()  # sample selects routermesh.io/mesh=homelab
    unlabelled = table(name="z", edit=lambda d: d["metadata"].pop("labels"))
    assert [t.metadata.name for t in selected_tables(by_label, [*tables, unlabelled])] == ["a", "b"]


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ({}, {"a": "1"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
        (
            {"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]},
            {"a": "2"},
            True,
        ),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, {}, False),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
        (
            {"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]},
            {"a": "1"},
            False,
        ),
        ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": ""}, True),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": ""}, False),
    ],
)
def test_label_selector_semantics(
    selector: dict[str, Any], labels: dict[str, str], matches: bool
) -> None:
    parsed = api.LabelSelector.model_validate(selector)
    assert label_selector_matches(parsed, labels) is matches


def test_service_target_defaults_to_the_table_namespace() -> None:
    def local_service(doc: dict[str, Any]) -> None:
        doc["spec"]["routes"][0]["target"] = {"service": {"name": "unifi", "port": 80}}

    assert render(table_edit=local_service).routes[0].target == "http://unifi.ops.svc:80/"


def test_examples_from_lands_in_the_config() -> None:
    sha = "a" * 64

    def with_set(doc: dict[str, Any]) -> None:
        doc["spec"]["examplesFrom"] = {"uri": "https://data.example/homelab.jsonl", "sha256": sha}

    config = render(table_edit=with_set)
    (source,) = config.examples_from
    assert source.uri == "https://data.example/homelab.jsonl" and source.sha256 == sha
    assert source.path.startswith("examples/ops-homelab-") and source.path.endswith(".jsonl")
    assert source.source == "ops/homelab"


def test_model_dir_names_are_readable_and_distinct() -> None:
    a = rc.model_dir_name("hf://org-a/repo/model.gguf")
    b = rc.model_dir_name("hf://org-b/repo/model.gguf")
    assert a.startswith("model.gguf-") and b.startswith("model.gguf-") and a != b
    assert "/" not in rc.model_dir_name("hf://org/repo@main/")


@pytest.mark.parametrize(
    ("label", "name"),
    [
        ("credit_cards", "credit-cards"),
        ("Kitchen and Dining", "kitchen-and-dining"),
        ("__x__", "x"),
        ("qa", "qa"),
    ],
)
def test_route_name_from_label(label: str, name: str) -> None:
    assert rc.route_name_from_label(label) == name


def test_a_layers_slots_reach_the_config_and_stay_bounded() -> None:
    def two_slots(doc: dict[str, Any]) -> None:
        doc["spec"]["layers"]["l2"]["maxInFlight"] = 2

    config = render(mesh_edit=two_slots)
    slots = {layer.name: layer.max_in_flight for layer in config.layers}
    assert slots["l2"] == 2 and slots["l1"] == 1

    def too_many(doc: dict[str, Any]) -> None:
        doc["spec"]["layers"]["l1"]["maxInFlight"] = 9

    with pytest.raises(api.InvalidSpecError, match=r"spec\.layers\.l1\.maxInFlight"):
        mesh(too_many)
