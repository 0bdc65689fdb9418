"""The operator's RBAC (deploy/operator-rbac.yaml and the Helm chart's): valid objects, no
wildcards, the chart granting what the file grants, and in the chart's per-namespace mode
only namespaced resources bound per namespace.

What the rules must grant is not written here: tests/e2e/test_operator_kmock.py derives
it from the requests the operator made against the API emulator and checks both ways
(every request allowed, every grant used) with tests/rbac.py."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from tests.rbac import DEPLOY, Grant, chart_grants, deploy_grants

RBAC = list(yaml.safe_load_all(DEPLOY.read_text()))
CLUSTER_SCOPED = {"namespaces", "customresourcedefinitions", "clusterkopfpeerings"}


def test_rbac_objects_are_valid_and_have_no_wildcards() -> None:
    for doc in RBAC:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    for grant in deploy_grants():
        assert "*" not in (grant.group, grant.resource, grant.verb), grant


def test_the_file_binds_its_role_cluster_wide_to_the_operators_account() -> None:
    grants = deploy_grants()
    assert grants, "no binding grants the operator's ServiceAccount anything"
    assert {g.namespace for g in grants} == {None}


def _anywhere(grants: set[Grant]) -> set[tuple[str, str, str]]:
    return {(g.group, g.resource, g.verb) for g in grants}


def test_the_chart_grants_what_the_file_grants() -> None:
    chart = chart_grants({})
    if chart is None:
        pytest.skip("helm not found: run `bash scripts/get-helm.sh`")
    assert _anywhere(chart) == _anywhere(deploy_grants())
    assert {g.namespace for g in chart} == {None}  # cluster-wide by default


def test_per_namespace_the_chart_binds_namespaced_rules_only_there() -> None:
    chart = chart_grants({"watchNamespaces": ["tools", "lab"]})
    if chart is None:
        pytest.skip("helm not found: run `bash scripts/get-helm.sh`")
    everywhere = {g for g in chart if g.namespace is None}
    # A RoleBinding cannot grant a cluster-scoped resource: those stay cluster-wide.
    assert {g.resource for g in everywhere} == {"namespaces", "customresourcedefinitions"}
    per_namespace = chart - everywhere
    assert {g.namespace for g in per_namespace} == {"tools", "lab"}
    assert not {g.resource for g in per_namespace} & CLUSTER_SCOPED
    assert _anywhere({g for g in per_namespace if g.namespace == "tools"}) == _anywhere(
        {g for g in per_namespace if g.namespace == "lab"}
    )
    assert _anywhere(chart) == _anywhere(deploy_grants())
