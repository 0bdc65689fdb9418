"""What the cluster says about a mesh's children: Job phases, the Deployment's rollout,
and which config each ready router pod reports on ``/readyz``.

The readers of objects are pure (:func:`job_phase`, :func:`deployment_state`,
:func:`config_rollout`); :func:`observe_pods` and :func:`probe_readiness` do the I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from routermesh.operator import api
from routermesh.operator import builders as b
from routermesh.operator.conditions import DeploymentState, JobPhase
from routermesh.operator.kube import Kube
from routermesh.runtime.contract import config as rc
from routermesh.runtime.contract.readiness import ReadinessReport

ConfigProbe = Callable[[list[dict[str, Any]]], Awaitable[list[ReadinessReport | None]]]
"""What each router pod reports on ``/readyz`` (None: no usable answer), in pod order."""


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
    """A Job's phase and, when it failed, why."""
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


@dataclass(frozen=True)
class ConfigRollout:
    expected: int
    """Ready replicas: each is to run the active config."""
    on_config: int
    """Those whose report carries the active config's hash."""
    reporting: int
    """Those that answered with a config hash at all."""


def config_rollout(
    reports: list[ReadinessReport | None], ready_replicas: int, active_hash: str | None
) -> ConfigRollout:
    """How many of the ready replicas run ``active_hash``. A pod that does not answer
    counts as not running it: ``expected`` is the larger of the ready pods listed and
    the Deployment's ready replicas (a pod list that lags the Deployment hides nobody)."""
    hashes = [r.config_hash for r in reports if r is not None and r.config_hash is not None]
    return ConfigRollout(
        expected=max(len(reports), ready_replicas),
        on_config=sum(1 for h in hashes if active_hash is not None and h == active_hash),
        reporting=len(hashes),
    )


def is_ready(pod: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


async def observe_pods(
    kube: Kube, mesh: api.RouterMesh, probe: ConfigProbe
) -> list[ReadinessReport | None]:
    """The report of each ready router pod (None for one that gives no usable answer)."""
    pods = await kube.list(
        "v1", "Pod", mesh.metadata.namespace or "default", b.selector_labels(mesh)
    )
    ready = [pod for pod in pods if is_ready(pod)]
    return await probe(ready) if ready else []
