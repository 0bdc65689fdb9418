"""The operator against a real cluster (kind, k3d, ...) when KUBECONFIG points at one: the
kmock scenarios that need a real API server's behaviour (server-side apply, status
subresources, garbage collection). The operator runs in-process in a fresh namespace; the
download Job's success is simulated by patching its status (the runtime image is not
pulled in CI clusters). Without a cluster these tests are skipped and say so."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml

from routermesh.operator import handlers  # noqa: F401 - registers the handlers
from routermesh.operator.kube import Kube, connection_from_kubeconfig
from tests.operator_login import TARGET
from tests.support import kubectl, needs_cluster

REPO = Path(__file__).resolve().parents[2]
pytestmark = needs_cluster("operator checks")

# The download Jobs of samples/homelab as is, then with another L0 model, written out.
FIRST_JOB = "homelab-models-d15319ff"
NEW_L0 = "hf://Xenova/all-MiniLM-L12-v2"
SECOND_JOB = "homelab-models-0bf79e00"
MESH = ("routermesh.io/v1alpha1", "RouterMesh")


@pytest.fixture
async def cluster() -> AsyncIterator[tuple[Kube, str]]:
    done = kubectl(
        "apply", "--server-side", "--field-manager=router-mesh-tests", "-f", str(REPO / "crds")
    )
    assert done.returncode == 0, done.stderr
    namespace = f"router-mesh-e2e-{uuid.uuid4().hex[:6]}"
    assert kubectl("create", "namespace", namespace).returncode == 0
    kube = Kube(connection_from_kubeconfig())
    settings = kopf.OperatorSettings()
    settings.networking.error_backoffs = [0.5]
    stop, ready = asyncio.Event(), asyncio.Event()
    TARGET["server"] = "kubeconfig"
    task = asyncio.create_task(
        kopf.operator(
            settings=settings,
            standalone=True,
            namespaces=[namespace],
            memo=kopf.Memo(kube=kube),
            stop_flag=stop,
            ready_flag=ready,
        )
    )
    try:
        await asyncio.wait_for(ready.wait(), 60)
        yield kube, namespace
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, 30)
        kubectl("delete", "namespace", namespace, "--wait=false")


async def _until(check: Callable[[], Any], timeout: float = 120.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert asyncio.get_running_loop().time() < deadline, "not reached in time"
        await asyncio.sleep(1)


def _apply(
    namespace: str, sample: str, change: Callable[[dict[str, Any]], None] | None = None
) -> None:
    body = yaml.safe_load((REPO / f"samples/homelab/{sample}.yaml").read_text())
    if change:
        change(body)
    done = kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(body))
    assert done.returncode == 0, done.stderr


async def test_the_operator_on_a_real_cluster(cluster: tuple[Kube, str]) -> None:
    kube, ns = cluster
    _apply(ns, "routetable")
    _apply(ns, "routermesh")

    async def job() -> dict[str, Any] | None:
        jobs = await kube.list("batch/v1", "Job", ns, {"routermesh.io/mesh": "homelab"})
        return jobs[0] if jobs else None

    first = await _until(job)
    assert first["metadata"]["name"] == FIRST_JOB
    assert await kube.get("v1", "PersistentVolumeClaim", ns, "homelab-models")
    assert await kube.get("apps/v1", "Deployment", ns, "homelab") is None  # waits for models
    complete_job(ns, first["metadata"]["name"])

    deployment = await _until(lambda: kube.get("apps/v1", "Deployment", ns, "homelab"))
    assert await _until(
        lambda: kube.get("autoscaling/v2", "HorizontalPodAutoscaler", ns, "homelab")
    )
    before = await kube.get("v1", "ConfigMap", ns, "homelab-config")
    assert before is not None

    def lower_threshold(body: dict[str, Any]) -> None:
        body["spec"]["layers"]["l1"]["threshold"] = 0.6
        body["spec"]["scaling"]["autoscaling"] = False

    _apply(ns, "routermesh", lower_threshold)

    async def changed() -> bool:
        now = await kube.get("v1", "ConfigMap", ns, "homelab-config")
        return bool(now and now["data"] != before["data"])

    await _until(changed)
    await _until(lambda: _gone(kube, ns))  # the HPA is pruned
    current = await kube.get("apps/v1", "Deployment", ns, "homelab")
    assert current is not None
    assert current["spec"]["template"] == deployment["spec"]["template"]  # no restart

    def add_route(body: dict[str, Any]) -> None:
        body["spec"]["routes"].append(
            {
                "name": "nas",
                "description": "TrueNAS storage pools and shares.",
                "target": {"url": "http://truenas-mcp.mcp.svc:8000/mcp"},
            }
        )

    _apply(ns, "routetable", add_route)

    async def five_routes() -> bool:
        now = await kube.get("v1", "ConfigMap", ns, "homelab-config")
        return bool(now and len(json.loads(now["data"]["router.json"])["routes"]) == 5)

    await _until(five_routes)

    def new_model(body: dict[str, Any]) -> None:
        lower_threshold(body)
        body["spec"]["layers"]["l0"]["model"] = {"uri": NEW_L0}  # a new model set

    _apply(ns, "routermesh", new_model)

    async def second_job() -> dict[str, Any] | None:
        jobs = await kube.list("batch/v1", "Job", ns, {"routermesh.io/mesh": "homelab"})
        fresh = [j for j in jobs if j["metadata"]["name"] != FIRST_JOB]
        return fresh[0] if fresh else None

    second = await _until(second_job)
    assert second["metadata"]["name"] == SECOND_JOB

    async def reconciled_pending() -> bool:
        """The operator reconciled this generation of the spec (its status says so) and
        found the new models still downloading: that reconcile applied the Deployment."""
        mesh = await kube.get(*MESH, ns, "homelab") or {}
        status = mesh.get("status") or {}
        models = [c for c in status.get("conditions") or [] if c["type"] == "ModelsReady"]
        return bool(
            mesh
            and status.get("observedGeneration") == mesh["metadata"]["generation"]
            and models
            and models[0]["status"] == "False"
        )

    await _until(reconciled_pending)
    waiting = await kube.get("apps/v1", "Deployment", ns, "homelab")
    assert waiting is not None
    assert waiting["spec"]["template"] == deployment["spec"]["template"]  # no rollout yet
    complete_job(ns, SECOND_JOB)

    async def rolled() -> bool:
        now = await kube.get("apps/v1", "Deployment", ns, "homelab")
        return bool(now and now["spec"]["template"] != deployment["spec"]["template"])

    await _until(rolled)

    assert kubectl("delete", "routermesh", "homelab", "-n", ns).returncode == 0
    await _until(lambda: _deployment_gone(kube, ns))  # garbage-collected by ownerReference


def complete_job(ns: str, name: str) -> None:
    status = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    done = kubectl(
        "patch",
        "job",
        name,
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )
    if done.returncode != 0:
        pytest.skip(f"this cluster refuses a simulated Job completion: {done.stderr.strip()}")


async def _gone(kube: Kube, ns: str) -> bool:
    return await kube.get("autoscaling/v2", "HorizontalPodAutoscaler", ns, "homelab") is None


async def _deployment_gone(kube: Kube, ns: str) -> bool:
    return await kube.get("apps/v1", "Deployment", ns, "homelab") is None
