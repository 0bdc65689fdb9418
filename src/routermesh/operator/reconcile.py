"""One reconcile of a RouterMesh: parse and render, gate the model set, apply the desired
children and prune the rest, observe, and compute the status and events.

Level-based: everything is read back from the cluster on each call (the running
ConfigMap and the Deployment remember the active model set, the Job's status says
whether a new one succeeded), so any trigger (a spec change, an owned child's change,
the resync) converges from any state. Each step is its own module, testable without a
cluster: :mod:`render`, :mod:`gating`, :mod:`builders`, :mod:`children`, :mod:`observe`,
:mod:`status`. This module only reads and sequences them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from routermesh.operator import api
from routermesh.operator import builders as b
from routermesh.operator.children import PRUNED_KINDS, apply_children, kept, prune
from routermesh.operator.gating import Gate, gate_models
from routermesh.operator.kube import Kube
from routermesh.operator.metrics import MODEL_GATE
from routermesh.operator.observe import (
    ConfigProbe,
    deployment_state,
    job_phase,
    observe_pods,
    probe_readiness,
)
from routermesh.operator.render import RenderError, render_config
from routermesh.operator.status import Facts, Result, head_trained, mesh_result, problem_result
from routermesh.runtime.contract import config as rc

__all__ = ["PRUNED_KINDS", "ConfigProbe", "Result", "parse_tables", "probe_readiness"]

log = logging.getLogger("routermesh.operator")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


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


def parse_and_render(
    body: dict[str, Any], table_bodies: Iterable[dict[str, Any]], now: str
) -> tuple[api.RouterMesh, rc.RouterConfig] | Result:
    """The mesh and its config, or the Stalled result naming what is wrong."""
    try:
        mesh = api.parse(api.RouterMesh, _spec_only(body))
    except api.InvalidSpecError as error:
        return problem_result(body, "InvalidSpec", "; ".join(error.problems), now)
    try:
        return mesh, render_config(mesh, parse_tables(table_bodies))
    except RenderError as error:
        return problem_result(body, "RenderFailed", str(error), now)


def _record(mesh: api.RouterMesh, gate: Gate) -> None:
    MODEL_GATE.labels(decision=gate.decision).inc()
    level = logging.WARNING if gate.hold else logging.DEBUG
    log.log(
        level,
        "model set: %s",
        gate.decision,
        extra={
            "object": {"namespace": mesh.metadata.namespace, "name": mesh.metadata.name},
            "decision": gate.decision,
            "models_active": gate.models_active,
        },
    )


async def reconcile_mesh(
    kube: Kube,
    body: dict[str, Any],
    table_bodies: Iterable[dict[str, Any]],
    *,
    probe: ConfigProbe = probe_readiness,
    now: str | None = None,
) -> Result:
    now = now or _now()
    parsed = parse_and_render(body, table_bodies, now)
    if isinstance(parsed, Result):
        return parsed
    mesh, config = parsed
    namespace = mesh.metadata.namespace or "default"
    deployment_name = b.names(mesh)["deployment"]
    download = b.job_name(mesh, b.models_hash(config))
    job, job_message = job_phase(await kube.get("batch/v1", "Job", namespace, download))
    gate = gate_models(
        config,
        job=job,
        running=b.config_from_configmap(
            await kube.get("v1", "ConfigMap", namespace, b.names(mesh)["config"])
        ),
        deployment=await kube.get("apps/v1", "Deployment", namespace, deployment_name),
    )
    _record(mesh, gate)
    head = b.l0_head(config)
    training = b.training_job_name(mesh, head) if head else None
    training_phase, training_message = job_phase(
        await kube.get("batch/v1", "Job", namespace, training) if training else None
    )
    trained = head_trained(body, head, training_phase)

    desired = b.desired_children(mesh, config, gate.active, head_trained=trained)
    await apply_children(kube, desired)
    jobs = [download] + ([training] if training else [])
    await prune(kube, mesh, desired, keep=kept(mesh, jobs, hold_pods=gate.hold))

    deployment = await kube.get("apps/v1", "Deployment", namespace, deployment_name)
    facts = Facts(
        config=config,
        gate=gate,
        job=job,
        job_message=job_message,
        deployment=deployment_state(deployment),
        reports=await observe_pods(kube, mesh, probe),
        head=head,
        training=training_phase,
        training_message=training_message,
        head_trained=trained,
    )
    return mesh_result(body, mesh, facts, now)
