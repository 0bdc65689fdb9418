"""Writing a mesh's children: apply the desired ones, prune the undesired."""

from __future__ import annotations

import logging
from typing import Any

from routermesh.operator import api
from routermesh.operator import builders as b
from routermesh.operator.kube import FIELD_MANAGER, Kube
from routermesh.operator.metrics import PRUNED

PRUNED_KINDS = (
    ("v1", "ConfigMap"),
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("batch/v1", "Job"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
)
"""Children deleted when no longer desired. The models PVC is never pruned: it lives as
long as the RouterMesh (ownerReference), so a spec edit never throws the models away."""

log = logging.getLogger("routermesh.operator")


def kept(mesh: api.RouterMesh, job_names: list[str], *, hold_pods: bool) -> set[tuple[str, str]]:
    """(kind, name) of the children that stay though not desired: the current Jobs (for
    their logs, until their TTL) and, with ``hold_pods``, the running pods' Deployment,
    HPA and ConfigMap (their model set is unknown: see :mod:`gating`)."""
    keep = {("Job", name) for name in job_names}
    if hold_pods:
        names = b.names(mesh)
        keep |= {
            ("Deployment", names["deployment"]),
            ("HorizontalPodAutoscaler", names["hpa"]),
            ("ConfigMap", names["config"]),
        }
    return keep


HANDOVER_MANAGER = "router-mesh-handover"
"""Holds a Deployment's replica count while the operator lets go of it for the HPA."""


def _replicas_owned_by_operator_only(deployment: dict[str, Any]) -> bool:
    owners = [
        entry.get("manager")
        for entry in (deployment.get("metadata") or {}).get("managedFields") or []
        if "f:replicas" in ((entry.get("fieldsV1") or {}).get("f:spec") or {})
    ]
    return owners == [FIELD_MANAGER]


async def _hand_replicas_over(kube: Kube, manifest: dict[str, Any]) -> None:
    """Before a Deployment apply that leaves ``spec.replicas`` to the HPA: if only the
    operator owned it, a second manager takes the current count first. Otherwise the API
    server removes the field the operator stops applying and the Deployment drops to one
    replica until the HPA scales it back (the Kubernetes docs' handover for server-side
    apply)."""
    if "replicas" in manifest["spec"]:
        return
    meta = manifest["metadata"]
    current = await kube.get(manifest["apiVersion"], "Deployment", meta["namespace"], meta["name"])
    if current is None or not _replicas_owned_by_operator_only(current):
        return
    replicas = (current.get("spec") or {}).get("replicas")
    if not isinstance(replicas, int):
        return
    await kube.apply(
        {
            "apiVersion": manifest["apiVersion"],
            "kind": "Deployment",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "spec": {"replicas": replicas},
        },
        field_manager=HANDOVER_MANAGER,
    )
    log.info(
        "replica count handed over to the HPA",
        extra={"event": "replicas_handover", "deployment": meta["name"], "replicas": replicas},
    )


async def apply_children(kube: Kube, desired: list[dict[str, Any]]) -> None:
    """Server-side apply each manifest; a kind of :data:`builders.CREATE_ONLY` only when
    missing."""
    for manifest in desired:
        meta = manifest["metadata"]
        if manifest["kind"] in b.CREATE_ONLY:
            found = await kube.get(
                manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"]
            )
            if found is not None:
                continue
        if manifest["kind"] == "Deployment":
            await _hand_replicas_over(kube, manifest)
        await kube.apply(manifest)


async def prune(
    kube: Kube,
    mesh: api.RouterMesh,
    desired: list[dict[str, Any]],
    keep: set[tuple[str, str]] | None = None,
) -> list[str]:
    """Delete this mesh's children of :data:`PRUNED_KINDS` that are not in ``desired``
    (nor in ``keep``: (kind, name) pairs left alone); returns ``Kind/name`` of each."""
    namespace = mesh.metadata.namespace or "default"
    wanted = {(m["kind"], m["metadata"]["name"]) for m in desired} | (keep or set())
    deleted = []
    for api_version, kind in PRUNED_KINDS:
        for item in await kube.list(
            api_version, kind, namespace, {b.MESH_LABEL: mesh.metadata.name}
        ):
            meta = item.get("metadata") or {}
            owners = meta.get("ownerReferences") or []
            owned = any(
                o.get("uid") == mesh.metadata.uid and o.get("kind") == "RouterMesh" for o in owners
            )
            if not owned or (kind, meta.get("name")) in wanted:
                continue
            await kube.delete(api_version, kind, namespace, meta["name"])
            PRUNED.labels(kind=kind).inc()
            log.info(
                "pruned %s/%s: no longer desired",
                kind,
                meta["name"],
                extra={"object": {"namespace": namespace, "name": mesh.metadata.name}},
            )
            deleted.append(f"{kind}/{meta['name']}")
    return deleted
