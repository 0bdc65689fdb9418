"""One reconcile of a RouterMesh: render, decide the active model set, apply the desired
children, prune the undesired, observe, and compute the status.

Level-based: everything is read back from the cluster on each call (the running
ConfigMap remembers the active model set, the Job's status says whether a new one
succeeded), so a timer calling this converges from any state. The kopf handlers stay a
few lines around :func:`reconcile_mesh`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from routermesh.operator import api
from routermesh.operator import builders as b
from routermesh.operator.conditions import DeploymentState, JobPhase, Observed, evaluate
from routermesh.operator.kube import Kube
from routermesh.operator.render import RenderError, render_config
from routermesh.runtime.contract import config as rc
from routermesh.runtime.contract.readiness import ReadinessReport

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


ConfigProbe = Callable[[list[dict[str, Any]]], Awaitable[list[ReadinessReport | None]]]
"""What each router pod reports on ``/readyz`` (None: no usable answer), in pod order."""


@dataclass
class Result:
    status: dict[str, Any]
    events: list[tuple[str, str, str]] = field(default_factory=list)
    """(type, reason, message) to post on the RouterMesh."""


async def probe_readiness(
    pods: list[dict[str, Any]], port: int = rc.OPERATIONS_PORT
) -> list[ReadinessReport | None]:
    """What each router pod reports on ``/readyz``: the typed report whether the pod is
    ready or not (503 carries the same body); None when it gives no usable answer."""

    async def one(client: httpx.AsyncClient, pod: dict[str, Any]) -> ReadinessReport | None:
        ip = (pod.get("status") or {}).get("podIP")
        if not ip:
            return None
        try:
            response = await client.get(f"http://{ip}:{port}/readyz")
            return ReadinessReport.model_validate_json(response.content)
        except (httpx.HTTPError, ValueError):
            return None

    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
        return list(await asyncio.gather(*(one(client, pod) for pod in pods)))


def job_phase(job: dict[str, Any] | None) -> tuple[JobPhase, str]:
    if job is None:
        return "absent", ""
    status = job.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return "succeeded", ""
        if condition.get("type") == "Failed":
            return "failed", condition.get("message") or condition.get("reason") or "failed"
    if (status.get("succeeded") or 0) >= 1:
        return "succeeded", ""
    return "running", ""


def deployment_state(deployment: dict[str, Any] | None) -> DeploymentState | None:
    if deployment is None:
        return None
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    replicas = status.get("replicas") or spec.get("replicas") or 0
    conditions = status.get("conditions") or []
    available = any(c.get("type") == "Available" and c.get("status") == "True" for c in conditions)
    stuck = any(
        c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded"
        for c in conditions
    )
    generation = (deployment.get("metadata") or {}).get("generation")
    current = (
        status.get("observedGeneration") == generation
        and (status.get("updatedReplicas") or 0) >= replicas
    )
    return DeploymentState(
        replicas=replicas,
        ready_replicas=status.get("readyReplicas") or 0,
        updated_replicas=status.get("updatedReplicas") or 0,
        available=available,
        current=current,
        stuck=stuck,
    )


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _previous(body: dict[str, Any]) -> list[api.Condition]:
    raw = (body.get("status") or {}).get("conditions") or []
    out = []
    for item in raw:
        try:
            out.append(api.Condition.model_validate(item))
        except ValueError:
            continue
    return out


def _problem_status(body: dict[str, Any], reason: str, message: str, now: str) -> dict[str, Any]:
    generation = (body.get("metadata") or {}).get("generation") or 0
    observed = Observed(generation=generation, problem=message, problem_reason=reason)
    conditions = evaluate(observed, _previous(body), now)
    return {
        "observedGeneration": generation,
        "conditions": [c.model_dump(by_alias=True, exclude_none=True) for c in conditions],
    }


def parse_tables(bodies: Iterable[dict[str, Any]]) -> list[api.RouteTable]:
    """The valid tables among ``bodies`` (an invalid table is reported on its own status)."""
    tables = []
    for body in bodies:
        try:
            tables.append(api.parse(api.RouteTable, _spec_only(body)))
        except api.InvalidSpecError:
            continue
    return tables


def _spec_only(body: dict[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {
            key: meta[key]
            for key in ("name", "namespace", "labels", "annotations", "generation", "uid")
            if key in meta
        },
        "spec": body.get("spec") or {},
    }


async def reconcile_mesh(
    kube: Kube,
    body: dict[str, Any],
    table_bodies: Iterable[dict[str, Any]],
    *,
    probe: ConfigProbe = probe_readiness,
    now: str | None = None,
) -> Result:
    now = now or _now()
    try:
        mesh = api.parse(api.RouterMesh, _spec_only(body))
    except api.InvalidSpecError as error:
        message = "; ".join(error.problems)
        return Result(
            _problem_status(body, "InvalidSpec", message, now),
            [("Warning", "InvalidSpec", message)],
        )
    try:
        config = render_config(mesh, parse_tables(table_bodies))
    except RenderError as error:
        return Result(
            _problem_status(body, "RenderFailed", str(error), now),
            [("Warning", "RenderFailed", str(error))],
        )
    namespace = mesh.metadata.namespace or "default"
    names = b.names(mesh)
    digest = b.models_hash(config)
    job = await kube.get("batch/v1", "Job", namespace, b.job_name(mesh, digest))
    phase, job_message = job_phase(job)
    running = b.config_from_configmap(await kube.get("v1", "ConfigMap", namespace, names["config"]))
    deployment = await kube.get("apps/v1", "Deployment", namespace, names["deployment"])
    deployed_models = (
        (((deployment or {}).get("spec") or {}).get("template", {}).get("metadata", {}))
        .get("annotations", {})
        .get(b.MODELS_ANNOTATION)
    )
    models_active = (
        phase == "succeeded"
        or (running is not None and b.models_hash(running) == digest)
        or deployed_models == digest
    )
    if models_active:
        active: rc.RouterConfig | None = config
    elif running is not None:
        active = b.with_models_of(config, running)
    else:
        active = None
    head = b.l0_head(config)
    training_phase, training_message, head_trained = await _training(kube, mesh, head, body)
    desired = b.desired_children(mesh, config, active, head_trained=head_trained)
    for manifest in desired:
        if manifest["kind"] in b.CREATE_ONLY:
            meta = manifest["metadata"]
            found = await kube.get(
                manifest["apiVersion"], manifest["kind"], namespace, meta["name"]
            )
            if found is not None:
                continue
        await kube.apply(manifest)
    # The current set's Jobs stay (for their logs) until their TTL, even once done.
    await prune(
        kube,
        mesh,
        desired,
        keep={("Job", b.job_name(mesh, digest))}
        | ({("Job", b.training_job_name(mesh, head))} if head else set()),
    )

    deployment = await kube.get("apps/v1", "Deployment", namespace, names["deployment"])
    pods = await _ready_pods(kube, mesh)
    reports = [r for r in (await probe(pods) if pods else []) if r is not None]
    reported = [r.config_hash for r in reports if r.config_hash is not None]
    generation = mesh.metadata.generation or 0
    observed = Observed(
        generation=generation,
        job=phase,
        job_message=job_message,
        models_active=models_active,
        deployment=deployment_state(deployment),
        config_hash=active.config_hash if active else config.config_hash,
        pods_on_config=sum(1 for h in reported if active and h == active.config_hash),
        pods_reporting=len(reported),
    )
    conditions = evaluate(observed, _previous(body), now)
    state = deployment_state(deployment)
    status = api.RouterMeshStatus(
        observed_generation=generation,
        conditions=conditions,
        replicas=state.replicas if state else 0,
        ready_replicas=state.ready_replicas if state else 0,
        routes=len(config.routes),
        # The config the pods are to run (the model set pending a download excluded).
        config_hash=(active or config).config_hash,
        endpoint=f"http://{names['service']}.{namespace}.svc:{rc.ORCHESTRATOR_PORT}",
        learned_examples=max((r.learned_total for r in reports), default=None),
        thresholds=threshold_status(reports),
        head=head_status(
            mesh,
            head=head,
            phase=training_phase,
            message=training_message,
            reports=reports,
            models_active=models_active,
            trained=head_trained,
        ),
    )
    events = _head_events(body, status.head, training_message)
    if phase == "failed" and not models_active:
        events.append(("Warning", "DownloadFailed", job_message or "model download failed"))
    previous_ready = next((c for c in _previous(body) if c.type == "Ready"), None)
    ready = next(c for c in conditions if c.type == "Ready")
    if previous_ready is None or previous_ready.status != ready.status:
        kind = "Normal" if ready.status == "True" else "Warning"
        events.append((kind, ready.reason, ready.message))
    return Result(status.model_dump(by_alias=True, exclude_none=True, mode="json"), events)


def threshold_status(reports: list[ReadinessReport]) -> list[api.ThresholdStatus] | None:
    """The adaptive thresholds of the ready pod with the most outcomes (with Redis every
    replica replays the same feedback, so they agree); None without adaptive layers."""
    best = max(
        (r for r in reports if r.thresholds),
        key=lambda r: sum(t.samples for t in r.thresholds.values()),
        default=None,
    )
    if best is None:
        return None
    statuses = []
    for layer, report in sorted(best.thresholds.items()):
        try:
            statuses.append(
                api.ThresholdStatus.model_validate({"layer": layer, **report.model_dump()})
            )
        except ValueError:
            continue  # a pod of another version: skipped, not fatal
    return statuses or None


def _head_events(
    body: dict[str, Any], head: api.HeadStatus | None, message: str
) -> list[tuple[str, str, str]]:
    """A TrainingFailed event when the head's training has just failed (not on every pass)."""
    failed_before = ((body.get("status") or {}).get("head") or {}).get("state") == "Failed"
    if head is not None and head.state == "Failed" and not failed_before:
        return [("Warning", "TrainingFailed", message or "head training failed")]
    return []


async def _ready_pods(kube: Kube, mesh: api.RouterMesh) -> list[dict[str, Any]]:
    return [
        pod
        for pod in await kube.list(
            "v1", "Pod", mesh.metadata.namespace or "default", b.selector_labels(mesh)
        )
        if any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (pod.get("status") or {}).get("conditions") or []
        )
    ]


async def _training(
    kube: Kube, mesh: api.RouterMesh, head: rc.HeadConfig | None, body: dict[str, Any]
) -> tuple[JobPhase, str, bool]:
    """The head's training Job phase, its failure message and whether it is trained."""
    if head is None:
        return "absent", "", False
    namespace = mesh.metadata.namespace or "default"
    phase, message = job_phase(
        await kube.get("batch/v1", "Job", namespace, b.training_job_name(mesh, head))
    )
    return phase, message, _head_trained(body, head, phase)


def _head_trained(body: dict[str, Any], head: rc.HeadConfig | None, phase: JobPhase) -> bool:
    """Whether ``head``'s artifact is known to be on the volume: its Job succeeded, or the
    last status said so for the same path (the Job may be gone after its TTL)."""
    if head is None:
        return False
    if phase == "succeeded":
        return True
    previous = ((body.get("status") or {}).get("head")) or {}
    return previous.get("path") == head.path and previous.get("state") in ("Trained", "Loaded")


def head_status(
    mesh: api.RouterMesh,
    *,
    head: rc.HeadConfig | None,
    phase: JobPhase,
    message: str,
    reports: list[ReadinessReport],
    models_active: bool,
    trained: bool,
) -> api.HeadStatus | None:
    """status.head from the training Job and what the ready pods report."""
    if head is None:
        return None
    loaded = [
        report
        for r in reports
        if (report := r.heads.get("l0")) and report.state == "loaded" and report.path == head.path
    ]
    accuracy = next((h.holdout_accuracy for h in loaded if h.holdout_accuracy is not None), None)
    state: str
    if loaded:
        state = "Loaded"
    elif trained:
        state = "Trained"
    elif phase == "failed":
        state = "Failed"
    elif phase == "running" or models_active:
        state = "Training"
    else:
        state = "Pending"  # the base encoder or the example sets are still downloading
    return api.HeadStatus.model_validate(
        {
            "state": state,
            "path": head.path,
            "job": b.training_job_name(mesh, head),
            "message": message or None if state == "Failed" else None,
            "holdoutAccuracy": accuracy,
            "pods": len(loaded),
        }
    )


async def prune(
    kube: Kube,
    mesh: api.RouterMesh,
    desired: list[dict[str, Any]],
    keep: set[tuple[str, str]] | None = None,
) -> list[str]:
    """Delete this mesh's children of :data:`PRUNED_KINDS` that are not in ``desired``
    (nor in ``keep``: (kind, name) pairs left alone)."""
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
            deleted.append(f"{kind}/{meta['name']}")
    return deleted
