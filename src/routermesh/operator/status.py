"""A RouterMesh's status and the events to post, from what one reconcile gathered
(:class:`Facts`) and the previous status: pure, no client, no clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from routermesh.operator import api
from routermesh.operator import builders as b
from routermesh.operator.conditions import DeploymentState, JobPhase, Observed, evaluate
from routermesh.operator.gating import Gate
from routermesh.operator.observe import config_rollout
from routermesh.runtime.contract import config as rc
from routermesh.runtime.contract.readiness import ReadinessReport

Event = tuple[str, str, str]
"""(type, reason, message) to post on the RouterMesh."""


@dataclass
class Result:
    status: dict[str, Any]
    events: list[Event] = field(default_factory=list)


@dataclass(frozen=True)
class Facts:
    """What one reconcile read back after applying the children."""

    config: rc.RouterConfig
    """The freshly rendered config."""
    gate: Gate
    job: JobPhase
    """The phase of ``config``'s download Job."""
    job_message: str
    deployment: DeploymentState | None
    reports: list[ReadinessReport | None]
    """What each ready router pod answered (None: nothing usable)."""
    head: rc.HeadConfig | None = None
    training: JobPhase = "absent"
    training_message: str = ""
    head_trained: bool = False


def previous_conditions(body: dict[str, Any]) -> list[api.Condition]:
    raw = (body.get("status") or {}).get("conditions") or []
    out = []
    for item in raw:
        try:
            out.append(api.Condition.model_validate(item))
        except ValueError:
            continue
    return out


def problem_result(body: dict[str, Any], reason: str, message: str, now: str) -> Result:
    """Stalled on a spec that cannot be parsed or rendered (the message names the field)."""
    generation = (body.get("metadata") or {}).get("generation") or 0
    observed = Observed(generation=generation, problem=message, problem_reason=reason)
    conditions = evaluate(observed, previous_conditions(body), now)
    status = {
        "observedGeneration": generation,
        "conditions": [c.model_dump(by_alias=True, exclude_none=True) for c in conditions],
    }
    return Result(status, [("Warning", reason, message)])


def mesh_result(body: dict[str, Any], mesh: api.RouterMesh, facts: Facts, now: str) -> Result:
    active, config = facts.gate.active, facts.config
    # The config the pods are to run (the model set pending a download excluded).
    config_hash = (active or config).config_hash
    rollout = config_rollout(
        facts.reports,
        facts.deployment.ready_replicas if facts.deployment else 0,
        active.config_hash if active else None,
    )
    generation = mesh.metadata.generation or 0
    observed = Observed(
        generation=generation,
        job=facts.job,
        job_message=facts.job_message,
        models_active=facts.gate.models_active,
        deployment=facts.deployment,
        config_hash=config_hash,
        pods_expected=rollout.expected,
        pods_on_config=rollout.on_config,
        pods_reporting=rollout.reporting,
    )
    previous = previous_conditions(body)
    conditions = evaluate(observed, previous, now)
    reports = [r for r in facts.reports if r is not None]
    names = b.names(mesh)
    namespace = mesh.metadata.namespace or "default"
    state = facts.deployment
    status = api.RouterMeshStatus(
        observed_generation=generation,
        conditions=conditions,
        replicas=state.replicas if state else 0,
        ready_replicas=state.ready_replicas if state else 0,
        routes=len(config.routes),
        config_hash=config_hash,
        endpoint=f"http://{names['service']}.{namespace}.svc:{rc.ORCHESTRATOR_PORT}",
        learned_examples=max((r.learned_total for r in reports), default=None),
        thresholds=threshold_status(reports),
        head=head_status(
            mesh,
            head=facts.head,
            phase=facts.training,
            message=facts.training_message,
            reports=reports,
            models_active=facts.gate.models_active,
            trained=facts.head_trained,
        ),
    )
    events = head_events(body, status.head, facts.training_message)
    if facts.job == "failed" and not facts.gate.models_active:
        events.append(("Warning", "DownloadFailed", facts.job_message or "model download failed"))
    events += ready_events(previous, conditions)
    return Result(status.model_dump(by_alias=True, exclude_none=True, mode="json"), events)


def ready_events(previous: list[api.Condition], conditions: list[api.Condition]) -> list[Event]:
    """One event when Ready changes (or first appears), none on every pass."""
    before = next((c for c in previous if c.type == "Ready"), None)
    ready = next(c for c in conditions if c.type == "Ready")
    if before is not None and before.status == ready.status:
        return []
    return [("Normal" if ready.status == "True" else "Warning", ready.reason, ready.message)]


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


def head_events(body: dict[str, Any], head: api.HeadStatus | None, message: str) -> list[Event]:
    """A TrainingFailed event when the head's training has just failed (not on every pass)."""
    failed_before = ((body.get("status") or {}).get("head") or {}).get("state") == "Failed"
    if head is not None and head.state == "Failed" and not failed_before:
        return [("Warning", "TrainingFailed", message or "head training failed")]
    return []


def head_trained(body: dict[str, Any], head: rc.HeadConfig | None, phase: JobPhase) -> bool:
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
