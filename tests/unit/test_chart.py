"""The Helm chart with a real helm (scripts/get-helm.sh): lint --strict with the defaults
and with every optional feature, every rendered object validated against the upstream
schemas, CRDs and RBAC in sync with the repository's, alerts and dashboard queries only
over metrics the runtime exports, and the Argo CD health check run against its cases."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import lupa
import pytest
import yaml

from routermesh.operator import metrics as operator_metrics
from routermesh.runtime.metrics import RouterMetrics

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts/router-mesh-operator"
ALL_FEATURES = CHART / "ci/all-features-values.yaml"
HELM = shutil.which("helm") or str(REPO / ".cache/helm/helm")
ARGO = REPO / "gitops/argocd/resource_customizations/routermesh.io/RouterMesh"
NOT_UPSTREAM = {"monitoring.coreos.com/v1", "kopf.dev/v1"}
"""API groups kubernetes-validate has no schema for (prometheus-operator's, kopf's)."""

needs_helm = pytest.mark.skipif(
    not Path(HELM).is_file(), reason="helm not found: run `bash scripts/get-helm.sh`"
)


def helm(*args: str) -> str:
    done = subprocess.run([HELM, *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def render(*values: Path) -> list[dict[str, Any]]:
    args = ["template", "rmo", str(CHART), "--namespace", "router-mesh-system"]
    for path in values:
        args += ["-f", str(path)]
    return [doc for doc in yaml.safe_load_all(helm(*args)) if doc]


@needs_helm
@pytest.mark.parametrize("values", [[], [ALL_FEATURES]], ids=["defaults", "all-features"])
def test_lint_strict(values: list[Path]) -> None:
    helm("lint", "--strict", str(CHART), *[a for v in values for a in ("-f", str(v))])


@needs_helm
@pytest.mark.parametrize("values", [[], [ALL_FEATURES]], ids=["defaults", "all-features"])
def test_rendered_objects_validate(values: list[Path]) -> None:
    docs = render(*values)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "ServiceAccount", "ClusterRole", "CustomResourceDefinition"} <= kinds
    for doc in docs:
        if doc["apiVersion"] in NOT_UPSTREAM:
            continue
        for version in ("1.30.0", kubernetes_validate.latest_version()):
            kubernetes_validate.validate(doc, version, strict=True)


@needs_helm
def test_values_schema_refuses_bad_values() -> None:
    done = subprocess.run(
        [HELM, "template", "rmo", str(CHART), "--set", "replicas=0", "--set", "logLevel=loud"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert "replicas" in done.stderr and "logLevel" in done.stderr


@needs_helm
def test_single_replica_recreates_and_ha_peers() -> None:
    single = next(d for d in render() if d["kind"] == "Deployment")
    assert single["spec"]["strategy"] == {"type": "Recreate"}
    assert not any(
        "--peering" in a for a in single["spec"]["template"]["spec"]["containers"][0]["args"]
    )
    docs = render(ALL_FEATURES)
    ha = next(d for d in docs if d["kind"] == "Deployment")
    assert ha["spec"]["replicas"] == 2
    assert (
        "--peering=rmo-router-mesh-operator"
        in ha["spec"]["template"]["spec"]["containers"][0]["args"]
    )
    assert {d["metadata"]["namespace"] for d in docs if d["kind"] == "KopfPeering"} == {
        "tools",
        "agents",
    }


def test_chart_crds_are_the_repositorys() -> None:
    for crd in (REPO / "crds").glob("*.yaml"):
        assert (CHART / "files/crds" / crd.name).read_text() == crd.read_text(), crd.name
    assert {p.name for p in (CHART / "files/crds").glob("*.yaml")} == {
        p.name for p in (REPO / "crds").glob("*.yaml")
    }


@needs_helm
def test_crds_are_kept_on_uninstall_unless_told() -> None:
    kept = [d for d in render() if d["kind"] == "CustomResourceDefinition"]
    assert all(d["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep" for d in kept)
    assert len(kept) == 2
    off = CHART / "ci" / "no-crds.yaml"
    docs = render_values({"crds": {"enabled": False}})
    assert not [d for d in docs if d["kind"] == "CustomResourceDefinition"], off


def render_values(values: dict[str, Any]) -> list[dict[str, Any]]:
    args = ["template", "rmo", str(CHART), "--namespace", "router-mesh-system"]
    for key, value in _flatten(values):
        args += ["--set", f"{key}={value}"]
    return [doc for doc in yaml.safe_load_all(helm(*args)) if doc]


def _flatten(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in values.items():
        if isinstance(value, dict):
            out += _flatten(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", str(value).lower() if isinstance(value, bool) else value))
    return out


@needs_helm
def test_application_rules_are_the_checked_rbac() -> None:
    deploy = next(
        d
        for d in yaml.safe_load_all((REPO / "deploy/operator-rbac.yaml").read_text())
        if d["kind"] == "ClusterRole"
    )
    chart = {d["metadata"]["name"]: d for d in render() if d["kind"] == "ClusterRole"}
    combined = (
        chart["rmo-router-mesh-operator-framework"]["rules"]
        + chart["rmo-router-mesh-operator-application"]["rules"]
    )
    assert sorted(map(json.dumps, combined)) == sorted(map(json.dumps, deploy["rules"]))
    view = chart["rmo-router-mesh-operator-view"]
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"


def _metric_names() -> set[str]:
    """Every series name the runtime and the operator export (labelled metrics with no
    child yet have no samples, so names come from the families and their types)."""
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
    names = set()
    families = list(RouterMetrics().registry.collect())
    for metric in (
        operator_metrics.RECONCILES,
        operator_metrics.RECONCILE_SECONDS,
        operator_metrics.MESHES,
    ):
        families += list(metric.collect())
    for family in families:
        names.add(family.name)
        names.update(family.name + suffix for suffix in suffixes.get(family.type, []))
    return names


@needs_helm
def test_alerts_and_dashboard_use_only_exported_metrics() -> None:
    docs = render(ALL_FEATURES)
    rule = next(d for d in docs if d["kind"] == "PrometheusRule")
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]] == [
        "RouterMeshEscalationRateHigh",
        "RouterMeshCacheHitRateLow",
        "RouterMeshLatencyHigh",
        "RouterMeshTargetUnavailable",
        "RouterMeshModelDownloadFailed",
        "RouterMeshOperatorReconcileErrors",
    ]
    dashboard = json.loads(
        next(d for d in docs if d["kind"] == "ConfigMap")["data"]["router-mesh.json"]
    )
    exprs += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    known = _metric_names() | {"kube_job_status_failed"}
    used = {m for e in exprs for m in re.findall(r"\b((?:router|kube)_[a-z0-9_]+)", e)}
    assert used - known == set()
    assert "> 0.15" in exprs[0] and "< 0.5" in exprs[1] and "> 0.1" in exprs[2]


def _lua_table(runtime: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return runtime.table_from({k: _lua_table(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([_lua_table(runtime, v) for v in value])
    return value


def _health(obj: dict[str, Any]) -> dict[str, str]:
    runtime = lupa.LuaRuntime(unpack_returned_tuples=True)
    script = (ARGO / "health.lua").read_text()
    function = runtime.eval(f"function(obj)\n{script}\nend")
    result = function(_lua_table(runtime, obj))
    return {"status": result["status"], "message": result["message"]}


@pytest.mark.parametrize(
    "case",
    yaml.safe_load((ARGO / "health_test.yaml").read_text())["tests"],
    ids=lambda c: Path(c["inputPath"]).stem,
)
def test_argocd_health_check(case: dict[str, Any]) -> None:
    obj = yaml.safe_load((ARGO / case["inputPath"]).read_text())
    assert _health(obj) == case["healthStatus"]


def test_the_argocd_cm_patch_carries_the_same_script() -> None:
    patch = yaml.safe_load((REPO / "gitops/argocd/argocd-cm-patch.yaml").read_text())
    embedded = patch["data"]["resource.customizations.health.routermesh.io_RouterMesh"]
    assert embedded.strip() == (ARGO / "health.lua").read_text().strip()
