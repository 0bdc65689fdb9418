"""The operator's RBAC (deploy/operator-rbac.yaml): valid objects, no wildcards, and every
call the reconcile makes is allowed, with no verb the code never uses."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import yaml

from routermesh.operator import kube, reconcile

REPO = Path(__file__).resolve().parents[2]
RBAC = list(yaml.safe_load_all((REPO / "deploy/operator-rbac.yaml").read_text()))


def _rules() -> dict[tuple[str, str], set[str]]:
    role = next(doc for doc in RBAC if doc["kind"] == "ClusterRole")
    allowed: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                allowed.setdefault((group, resource), set()).update(rule["verbs"])
    return allowed


def _group(api_version: str) -> str:
    return api_version.split("/", maxsplit=1)[0] if "/" in api_version else ""


def test_rbac_objects_are_valid_and_have_no_wildcards() -> None:
    for doc in RBAC:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    for (group, resource), verbs in _rules().items():
        assert "*" not in verbs and resource != "*" and group != "*"


def test_every_call_of_the_reconcile_is_allowed_and_nothing_more() -> None:
    # The calls the code makes: apply = patch (+ create on 404), get, list, delete (prune).
    children = {
        "ConfigMap",
        "Service",
        "PersistentVolumeClaim",
        "Deployment",
        "Job",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
    }
    needed: dict[tuple[str, str], set[str]] = {}
    for (api_version, kind), plural in kube.PLURALS.items():
        key = (_group(api_version), plural)
        if kind in children:
            needed[key] = {"get", "list", "create", "patch"}
    for api_version, kind in reconcile.PRUNED_KINDS:
        needed[(_group(api_version), kube.PLURALS[(api_version, kind)])].add("delete")
    needed[("", "pods")] = {"list"}
    needed[("routermesh.io", "routermeshes")] = {"get", "list", "watch", "patch"}
    needed[("routermesh.io", "routetables")] = {"get", "list", "watch", "patch"}
    needed[("routermesh.io", "routermeshes/status")] = {"get", "patch"}
    needed[("routermesh.io", "routetables/status")] = {"get", "patch"}
    allowed = _rules()
    for key, verbs in needed.items():
        assert verbs <= allowed.get(key, set()), (key, verbs - allowed.get(key, set()))
    application = {
        k: v
        for k, v in allowed.items()
        if k[0] not in ("apiextensions.k8s.io",) and k[1] not in ("namespaces", "events")
    }
    for key, verbs in application.items():
        assert verbs <= needed.get(key, set()), (key, verbs - needed.get(key, set()))
