"""RouterMesh status conditions from what the operator observed: pure, no client, no clock.

A chain of small checks, each returning a condition (cert-manager's policy-chain style);
:func:`evaluate` joins them and keeps ``lastTransitionTime`` where a status did not
change. Conventions (kstatus): ``Ready`` summarizes; ``Reconciling`` and ``Stalled`` are
present only while True; reasons are CamelCase, messages are for humans.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from routermesh.operator.api import Condition

JobPhase = Literal["absent", "running", "succeeded", "failed"]

FAILURES = frozenset({"ProgressDeadlineExceeded", "DownloadFailed"})
"""Reasons that mean the controller cannot make progress by itself."""


@dataclass(frozen=True)
class DeploymentState:
    replicas: int
    ready_replicas: int
    updated_replicas: int
    available: bool
    current: bool
    """The Deployment controller has observed the latest spec and rolled it out."""
    stuck: bool = False
    """The rollout exceeded its progress deadline (Progressing False): a failure, not work
    in progress."""


@dataclass(frozen=True)
class Observed:
    generation: int
    problem: str | None = None
    """An invalid spec or a config that cannot be rendered: the message names the field."""
    problem_reason: str = "InvalidSpec"
    job: JobPhase = "absent"
    job_message: str = ""
    models_active: bool = False
    """The pods' model set is the spec's (its download succeeded)."""
    deployment: DeploymentState | None = None
    config_hash: str | None = None
    pods_expected: int = 0
    """Ready replicas: every one is to run ``config_hash``."""
    pods_on_config: int = 0
    """Of those, the ones that report ``config_hash``."""
    pods_reporting: int = 0
    """Of those, the ones that answered with a config at all (the rest are silent)."""


@dataclass(frozen=True)
class Verdict:
    type: str
    ok: bool
    reason: str
    message: str


def _models(o: Observed) -> Verdict:
    if o.models_active:
        return Verdict("ModelsReady", True, "ModelsDownloaded", "the models are on the volume")
    if o.job == "failed":
        return Verdict("ModelsReady", False, "DownloadFailed", o.job_message or "download failed")
    if o.job == "running":
        return Verdict("ModelsReady", False, "Downloading", "the model-download Job is running")
    return Verdict("ModelsReady", False, "DownloadPending", "the model-download Job is starting")


def _available(o: Observed) -> Verdict:
    d = o.deployment
    if d is None:
        return Verdict("Available", False, "NoDeployment", "router pods wait for the models")
    if d.stuck:
        return Verdict(
            "Available",
            False,
            "ProgressDeadlineExceeded",
            f"the router pods do not become ready ({d.ready_replicas}/{d.replicas})",
        )
    if d.available and d.ready_replicas > 0:
        return Verdict(
            "Available", True, "MinimumReplicasAvailable", f"{d.ready_replicas} router pod(s) ready"
        )
    return Verdict(
        "Available", False, "ReplicasUnavailable", f"{d.ready_replicas}/{d.replicas} pods ready"
    )


def _config(o: Observed) -> Verdict:
    short = (o.config_hash or "")[:12]
    if not o.pods_expected:
        return Verdict("ConfigApplied", False, "NoPods", f"no router pod reports config {short}")
    # A pod that does not answer may run anything: applied means every ready replica said so.
    if o.pods_on_config >= o.pods_expected:
        return Verdict(
            "ConfigApplied", True, "ConfigLoaded", f"{o.pods_expected} pod(s) run config {short}"
        )
    silent = o.pods_expected - o.pods_reporting
    return Verdict(
        "ConfigApplied",
        False,
        "ConfigPending",
        f"{o.pods_on_config}/{o.pods_expected} pods run config {short}"
        + (f" ({silent} not answering)" if silent > 0 else ""),
    )


def verdicts(o: Observed) -> list[Verdict]:
    """Every condition's verdict, Ready last."""
    if o.problem is not None:
        stalled = Verdict("Stalled", True, o.problem_reason, o.problem)
        return [stalled, Verdict("Ready", False, o.problem_reason, o.problem)]
    parts = [_models(o), _available(o), _config(o)]
    out = list(parts)
    if o.job == "failed" and not o.models_active:
        out.append(Verdict("Stalled", True, "DownloadFailed", parts[0].message))
    else:
        progressing = not o.models_active or (o.deployment is not None and not o.deployment.current)
        failing = next((p for p in parts if not p.ok), None)
        if failing is not None and failing.reason in FAILURES:
            pass  # a failure, not progress: Ready False without Reconciling (Degraded)
        elif failing is not None:
            out.append(Verdict("Reconciling", True, failing.reason, failing.message))
        elif progressing:
            out.append(
                Verdict("Reconciling", True, "RollingOut", "the router pods are rolling out")
            )
    failing = next((p for p in parts if not p.ok), None)
    rolling = o.deployment is not None and not o.deployment.current
    if failing is not None:
        out.append(Verdict("Ready", False, failing.reason, failing.message))
    elif rolling:
        message = "the router pods are rolling out"
        out.append(Verdict("Ready", False, "RollingOut", message))
    else:
        out.append(Verdict("Ready", True, "Ready", parts[1].message))
    return out


MAX_NAMED_TARGETS = 20
"""Routes a TargetsAvailable message names; the rest are counted."""


def targets(routes: int, unavailable: list[str]) -> Verdict | None:
    """TargetsAvailable: whether the routes' MCP servers answer (None: no MCP route is
    reported). Never part of Ready: while a server is down the router fails its requests
    open to the fallback route, so the mesh still serves."""
    if not routes:
        return None
    if not unavailable:
        return Verdict(
            "TargetsAvailable", True, "TargetsAvailable", f"{routes} MCP server(s) answer"
        )
    named = ", ".join(unavailable[:MAX_NAMED_TARGETS])
    if len(unavailable) > MAX_NAMED_TARGETS:
        named += f" and {len(unavailable) - MAX_NAMED_TARGETS} more"
    return Verdict(
        "TargetsAvailable",
        False,
        "TargetUnavailable",
        f"{len(unavailable)}/{routes} MCP server(s) do not answer (routes {named}): their "
        "requests go to their fallbackRoute or the escalation route",
    )


def condition(v: Verdict, previous: list[Condition] | None, generation: int, now: str) -> Condition:
    """``v`` as a condition, keeping the previous ``lastTransitionTime`` while its status
    is unchanged."""
    status: Literal["True", "False"] = "True" if v.ok else "False"
    old = next((c for c in previous or [] if c.type == v.type), None)
    since = old.last_transition_time if old is not None and old.status == status else now
    return Condition(
        type=v.type,
        status=status,
        observed_generation=generation,
        last_transition_time=since,
        reason=v.reason,
        message=v.message,
    )


def evaluate(o: Observed, previous: list[Condition] | None, now: str) -> list[Condition]:
    """The conditions to write: one per verdict; ``Reconciling``/``Stalled`` only when True."""
    return [condition(v, previous, o.generation, now) for v in verdicts(o)]
