"""What the operator's RBAC grants its ServiceAccount (deploy/operator-rbac.yaml, or the
Helm chart rendered with given values), as (group, resource, verb) grants with where they
hold, and how they compare with the requests the operator made (tests/kmock_faithful.py
records them): a request no grant allows, a grant no request uses."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.kmock_faithful import Call

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy/operator-rbac.yaml"
CHART = REPO / "charts/router-mesh-operator"
HELM = shutil.which("helm") or str(REPO / ".cache/helm/helm")
RELEASE_NAMESPACE = "router-mesh-system"


@dataclass(frozen=True)
class Grant:
    """A verb on a resource (``plural`` or ``plural/subresource``) of an API group,
    granted everywhere (``namespace`` None: a ClusterRoleBinding) or in one namespace (a
    RoleBinding)."""

    group: str
    resource: str
    verb: str
    namespace: str | None = None

    def allows(self, call: Call) -> bool:
        resource = f"{call.resource}/{call.subresource}" if call.subresource else call.resource
        return (self.group, self.resource, self.verb) == (call.group, resource, call.verb) and (
            self.namespace is None or self.namespace == call.namespace
        )


EXCEPTIONS: dict[Grant, str] = {
    **{
        Grant("kopf.dev", "clusterkopfpeerings", verb): (
            "kopf peering of a cluster-wide operator, granted only with replicas > 1 (HA): "
            "the tests run kopf standalone"
        )
        for verb in ("get", "list", "watch", "patch")
    },
    **{
        Grant("kopf.dev", "kopfpeerings", verb): (
            "kopf peering of a namespaced operator, granted only with replicas > 1 (HA): "
            "the tests run kopf standalone"
        )
        for verb in ("get", "list", "watch", "patch")
    },
}
"""Grants no emulated request uses, each with the reason it is there all the same."""


def grants(docs: Iterable[Mapping[str, Any]]) -> set[Grant]:
    """What the ServiceAccount(s) among ``docs`` are granted by the bindings among them."""
    docs = [d for d in docs if d]
    accounts = {
        (d["metadata"]["name"], d["metadata"].get("namespace"))
        for d in docs
        if d["kind"] == "ServiceAccount"
    }
    roles = {
        (d["kind"], d["metadata"]["name"]): d.get("rules") or []
        for d in docs
        if d["kind"] in ("ClusterRole", "Role")
    }
    out: set[Grant] = set()
    for binding in docs:
        if binding["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        subjects = {
            (s["name"], s.get("namespace"))
            for s in binding.get("subjects") or []
            if s["kind"] == "ServiceAccount"
        }
        if not subjects & accounts:
            continue
        ref = binding["roleRef"]
        where = (
            None if binding["kind"] == "ClusterRoleBinding" else binding["metadata"]["namespace"]
        )
        for rule in roles[(ref["kind"], ref["name"])]:
            for group in rule.get("apiGroups") or []:
                for resource in rule.get("resources") or []:
                    out |= {Grant(group, resource, verb, where) for verb in rule["verbs"]}
    return out


def deploy_grants() -> set[Grant]:
    return grants(yaml.safe_load_all(DEPLOY.read_text()))


def chart_grants(values: Mapping[str, Any]) -> set[Grant] | None:
    """The chart's grants with ``values`` (None without helm)."""
    if not Path(HELM).is_file():
        return None
    args = [HELM, "template", "rmo", str(CHART), "--namespace", RELEASE_NAMESPACE]
    for key, value in values.items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return grants(yaml.safe_load_all(done.stdout))


def unallowed(calls: Iterable[Call], granted: set[Grant]) -> list[tuple[str, str, str, str]]:
    """(verb, group, resource, namespace) of each request no grant allows."""
    return sorted(
        {
            (c.verb, c.group, f"{c.resource}/{c.subresource}".rstrip("/"), c.namespace or "*")
            for c in calls
            if not any(g.allows(c) for g in granted)
        }
    )


def unused(calls: Iterable[Call], granted: set[Grant]) -> list[Grant]:
    """The grants (wherever they hold) no request used."""
    calls = list(calls)
    return sorted(
        {
            Grant(g.group, g.resource, g.verb)
            for g in granted
            if not any(Grant(g.group, g.resource, g.verb).allows(c) for c in calls)
        },
        key=lambda g: (g.group, g.resource, g.verb),
    )
