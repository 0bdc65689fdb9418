"""The CRDs in crds/ are generated from the API types, valid, structural, and usable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import celpy
import kubernetes_validate
import pytest
import yaml

from routermesh.operator import crdgen

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "crds"
NEWEST = kubernetes_validate.latest_version()


def _crds() -> list[dict[str, Any]]:
    return [yaml.safe_load(p.read_text()) for p in sorted(CRD_DIR.glob("*.yaml"))]


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)]
    for name, sub in node.get("properties", {}).items():
        out += _walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        out += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        out += _walk(node["additionalProperties"], f"{path}[*]")
    return out


def test_committed_crds_match_the_generator() -> None:
    assert crdgen.drift(CRD_DIR) == [], "run `router-mesh crds generate` and commit crds/"


def test_drift_is_detected(tmp_path: Path) -> None:
    crdgen.generate(tmp_path)
    assert crdgen.drift(tmp_path) == []
    target = tmp_path / "routermesh.io_routetables.yaml"
    target.write_text(target.read_text().replace("maxItems: 64", "maxItems: 65"))
    (tmp_path / "stray.yaml").write_text("{}\n")
    assert crdgen.drift(tmp_path) == ["routermesh.io_routetables.yaml", "stray.yaml"]


@pytest.mark.parametrize("version", ["1.30.0", NEWEST])
def test_crds_validate_against_upstream_schema(version: str) -> None:
    for crd in _crds():
        kubernetes_validate.validate(crd, version, strict=True)


def test_schemas_are_structural() -> None:
    for crd in _crds():
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in _walk(schema):
            typed = "type" in node
            assert typed or node.get("x-kubernetes-int-or-string"), f"{path} has no type"
            assert "$ref" not in node and "default" not in node and "title" not in node, path
            assert "nullable" not in node, path
            if node.get("type") == "object":
                assert (
                    "properties" in node
                    or "additionalProperties" in node
                    or node.get("x-kubernetes-preserve-unknown-fields")
                    or path.endswith("metadata")
                ), f"{path}: object without a schema"
            if typed and node["type"] != "object":
                assert "properties" not in node, path


def test_every_field_is_documented() -> None:
    """`kubectl explain` shows descriptions: each spec field a user sets has one."""
    for crd in _crds():
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        spec = schema["properties"]["spec"]
        undocumented = [
            path
            for path, node in _walk(spec, ".spec")
            if "description" not in node
            and not path.endswith("[]")
            and not path.endswith("[*]")
            and "matchExpressions[]" not in path
            and "tolerations[]" not in path
            and "pullSecrets[]" not in path
        ]
        assert undocumented == [], undocumented


def test_cel_rules_compile() -> None:
    env = celpy.Environment()
    rules = [
        rule["rule"]
        for crd in _crds()
        for _, node in _walk(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
        for rule in node.get("x-kubernetes-validations", [])
    ]
    assert len(rules) >= 6
    for rule in rules:
        env.compile(rule)


def test_names_columns_and_status_subresource() -> None:
    by_kind = {crd["spec"]["names"]["kind"]: crd for crd in _crds()}
    assert set(by_kind) == {"RouterMesh", "RouteTable"}
    mesh = by_kind["RouterMesh"]["spec"]
    assert mesh["scope"] == "Namespaced"
    assert mesh["names"]["shortNames"] == ["rmesh"]
    version = mesh["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if "priority" not in c]
    assert columns == ["Ready", "Reason", "Replicas", "Routes", "Age"]
    routes = by_kind["RouteTable"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    routes_list = routes["properties"]["spec"]["properties"]["routes"]
    assert routes_list["x-kubernetes-list-type"] == "map"
    assert routes_list["x-kubernetes-list-map-keys"] == ["name"]


def test_unsupported_schema_constructs_are_refused() -> None:
    with pytest.raises(crdgen.SchemaConversionError, match="unsupported"):
        crdgen._convert({"type": "null"}, {}, "x")
    with pytest.raises(crdgen.SchemaConversionError, match="union"):
        crdgen._convert({"anyOf": [{"type": "integer"}, {"type": "boolean"}]}, {}, "x")
