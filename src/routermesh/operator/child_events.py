"""Which watch events of a mesh's own Jobs and Deployments are worth a reconcile: those
that change what the reconcile reads of them (a Job's outcome, a Deployment's rollout),
or remove one. Our own applies write these objects too; their events change none of
that, so they trigger nothing (no reconcile loop). Pure: the kopf handler feeds it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

MESH_API_VERSION = "routermesh.io/v1alpha1"


def owning_mesh(body: Mapping[str, Any]) -> str | None:
    """The name of the RouterMesh that owns ``body`` (None: not one of ours)."""
    for owner in (body.get("metadata") or {}).get("ownerReferences") or []:
        if owner.get("kind") == "RouterMesh" and owner.get("apiVersion") == MESH_API_VERSION:
            return str(owner.get("name"))
    return None


def observed_state(kind: str, body: Mapping[str, Any]) -> str:
    """What the reconcile reads of a Job or a Deployment, as a comparable string."""
    status = body.get("status") or {}
    conditions = [
        (c.get("type"), c.get("status"), c.get("reason"), c.get("message"))
        for c in status.get("conditions") or []
    ]
    fields: dict[str, Any]
    if kind == "Job":
        fields = {"succeeded": status.get("succeeded"), "conditions": conditions}
    else:
        fields = {
            # A spec change (ours or someone's kubectl edit) is reconciled too: the
            # operator's template wins again at once.
            "generation": (body.get("metadata") or {}).get("generation"),
            "observed": status.get("observedGeneration"),
            "replicas": status.get("replicas"),
            "ready": status.get("readyReplicas"),
            "updated": status.get("updatedReplicas"),
            "conditions": [c[:3] for c in conditions],
        }
    return json.dumps(fields, sort_keys=True, default=str)


class ChildTracker:
    """The last seen state of each owned child: :meth:`changed` says whether an event
    moved it on."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str, str], str] = {}

    def changed(
        self, kind: str, namespace: str, name: str, body: Mapping[str, Any], *, deleted: bool
    ) -> bool:
        key = (kind, namespace, name)
        if deleted:
            self._seen.pop(key, None)
            return True
        state = observed_state(kind, body)
        # Never seen: compared with a child just created (no status yet), so the initial
        # listing of a running cluster reconciles only meshes whose children moved on.
        before = self._seen.get(key, observed_state(kind, {"metadata": body.get("metadata")}))
        self._seen[key] = state
        return state != before
