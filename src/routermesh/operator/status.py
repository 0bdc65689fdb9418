"""A RouterMesh's status and the events to post, from what one reconcile gathered
(:class:`Facts`) and the previous status: pure, no client, no clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from routermesh.operator import api
from routermesh.operator import builders as b
from routermesh.operator.conditions import (
    DeploymentState,
    JobPhase,
    Observed,
    condition,
    evaluate,
    targets,
)
from routermesh.operator.gating import Gate
from routermesh.operator.observe import config_rollout
from routermesh.runtime.contract import config as rc
from routermesh.runtime.contract.readiness import McpReport, ReadinessReport

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
    servers = mcp_servers(active or config, reports)
    verdict = targets(len(servers), [s.route for s in servers if not s.available])
    if verdict is not None:  # before Ready, which stays last
        conditions.insert(len(conditions) - 1, condition(verdict, previous, generation, now))
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
        mcp_servers=servers or None,
    )
    events = head_events(body, status.head, facts.training_message)
    if facts.job == "failed" and not facts.gate.models_active:
        events.append(("Warning", "DownloadFailed", facts.job_message or "model download failed"))
    events += ready_events(previous, conditions)
    events += target_events(body, active or config, servers)
    out = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    if not servers and (body.get("status") or {}).get("mcpServers"):
        out["mcpServers"] = None  # a merge patch removes only what it names
    return Result(out, events)


def ready_events(previous: list[api.Condition], conditions: list[api.Condition]) -> list[Event]:
    """One event when Ready changes (or first appears), none on every pass."""
    before = next((c for c in previous if c.type == "Ready"), None)
    ready = next(c for c in conditions if c.type == "Ready")
    if before is not None and before.status == ready.status:
        return []
    return [("Normal" if ready.status == "True" else "Warning", ready.reason, ready.message)]


def _timestamp(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


_NEVER = datetime.min.replace(tzinfo=UTC)


def _cut(text: str | None, limit: int) -> str | None:
    return text if text is None or len(text) <= limit else text[: limit - 3] + "..."


def mcp_servers(
    config: rc.RouterConfig, reports: list[ReadinessReport]
) -> list[api.McpServerStatus]:
    """status.mcpServers: each MCP route of ``config`` that a ready pod reports, by route.

    The details (tools, names, server, errors) are those of the pod that read the route's
    tool list most recently. ``available`` is False only when every reporting pod finds
    the server unavailable: each pod pings the server and fails its requests open on its
    own, so while any pod reaches it the route still serves through that pod, and one pod
    that cannot (its node's network, a pod not yet past its first ping) is that pod's
    trouble, not the server's. A report for another URL (a pod still on an older config)
    is left out."""
    out = []
    for route in config.routes:
        if route.mcp is None:
            continue
        seen: list[McpReport] = [
            entry
            for report in reports
            if (entry := report.mcp.get(route.name)) is not None
            and (not entry.url or entry.url == route.target)
        ]
        if not seen:
            continue
        latest = max(seen, key=lambda e: (_timestamp(e.refreshed_at) or _NEVER, e.available))
        refreshed = _timestamp(latest.refreshed_at)
        out.append(
            api.McpServerStatus(
                route=route.name,
                url=_cut(latest.url or route.target, 2048),
                available=any(e.available for e in seen),
                tools=latest.tools,
                tool_names=[name[:128] for name in latest.tool_names[: api.MAX_STATUS_TOOL_NAMES]]
                or None,
                refreshed_at=(
                    refreshed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if refreshed else None
                ),
                last_error=_cut(latest.last_error, api.MAX_STATUS_ERROR_CHARS),
                notes=[
                    note
                    for n in latest.notes[: api.MAX_STATUS_NOTES]
                    if (note := _cut(n, api.MAX_STATUS_ERROR_CHARS))
                ]
                or None,
                server=_cut(latest.server, 256),
            )
        )
    return out


def target_events(
    body: dict[str, Any], config: rc.RouterConfig, servers: list[api.McpServerStatus]
) -> list[Event]:
    """TargetUnavailable when a route's server stops answering (or is first seen down),
    TargetAvailable when it answers again: once per change, compared with the last
    status, not on every pass."""
    before = {
        entry.get("route"): entry.get("available")
        for entry in (body.get("status") or {}).get("mcpServers") or []
        if isinstance(entry, dict)
    }
    fallbacks = {
        r.name: (r.mcp.fallback_route if r.mcp else None) or config.escalation.route
        for r in config.routes
    }
    events: list[Event] = []
    for server in servers:
        was = before.get(server.route)
        if not server.available and was is not False:
            why = f": {server.last_error}" if server.last_error else ""
            events.append(
                (
                    "Warning",
                    "TargetUnavailable",
                    f"route {server.route}: MCP server {server.url} does not answer{why}; its "
                    f"requests go to {fallbacks.get(server.route)}",
                )
            )
        elif server.available and was is False:
            events.append(
                (
                    "Normal",
                    "TargetAvailable",
                    f"route {server.route}: MCP server {server.url} answers again "
                    f"({server.tools} tools)",
                )
            )
    return events


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
    generic = next((h.generic_rows for h in loaded if h.generic_rows is not None), None)
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
            "mode": head.mode,
            "job": b.training_job_name(mesh, head),
            "message": message or None if state == "Failed" else None,
            "holdoutAccuracy": accuracy,
            "genericRows": generic,
            "pods": len(loaded),
        }
    )
