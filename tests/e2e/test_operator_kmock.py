"""The real kopf operator, in-process, against kmock's Kubernetes API emulator (made
faithful by tests/kmock_faithful.py): a mesh's children and status, live edits that touch
only the ConfigMap, RouteTable edits, a model change gated by its download Job, pruning,
and an invalid spec."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml

from routermesh.operator import handlers
from routermesh.operator.kube import Connection, Kube
from routermesh.runtime.contract.readiness import ReadinessReport
from tests.kmock_faithful import VERBS, FaithfulEmulator
from tests.operator_login import TARGET

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
NS = "tools"
GROUP = "/apis/routermesh.io/v1alpha1/namespaces/tools"
BUILTINS = {
    "v1/configmaps": "ConfigMap",
    "v1/persistentvolumeclaims": "PersistentVolumeClaim",
    "v1/services": "Service",
    "v1/events": "Event",
    "v1/pods": "Pod",
    "apps/v1/deployments": "Deployment",
    "batch/v1/jobs": "Job",
    "autoscaling/v2/horizontalpodautoscalers": "HorizontalPodAutoscaler",
    "networking.k8s.io/v1/networkpolicies": "NetworkPolicy",
}
WITH_STATUS = {"Deployment", "Job", "HorizontalPodAutoscaler", "PersistentVolumeClaim", "Pod"}


@pytest.fixture
def kmock_options(kmock_options: dict[str, Any]) -> dict[str, Any]:
    return {**kmock_options, "cls": FaithfulEmulator}


@pytest.fixture
async def cluster(kmock: Any) -> Any:
    for plural, kind in (("routermeshes", "RouterMesh"), ("routetables", "RouteTable")):
        kmock.resources[f"routermesh.io/v1alpha1/{plural}"] = kmock.ResourceInfo(
            kind=kind, singular=kind.lower(), namespaced=True, verbs=VERBS, subresources={"status"}
        )
    for resource, kind in BUILTINS.items():
        kmock.resources[resource] = kmock.ResourceInfo(
            kind=kind,
            singular=kind.lower(),
            namespaced=True,
            verbs=VERBS,
            subresources={"status"} if kind in WITH_STATUS else set(),
        )
    kmock.resources["v1/namespaces"] = kmock.ResourceInfo(
        kind="Namespace", singular="namespace", namespaced=False, verbs=VERBS
    )
    await kmock.post("/api/v1/namespaces", json={"metadata": {"name": NS}})
    TARGET["server"] = str(kmock.url)
    return kmock


@pytest.fixture
async def operator(cluster: Any) -> AsyncIterator[Any]:
    assert handlers.RESYNC_SECONDS == 1.0
    settings = kopf.OperatorSettings()
    settings.scanning.disabled = True
    settings.networking.error_backoffs = [0.1]
    stop, ready = asyncio.Event(), asyncio.Event()
    kube = Kube(Connection(server=str(cluster.url), insecure=True))

    async def probe(pods: list[dict[str, Any]]) -> list[ReadinessReport | None]:
        # No pod network here: each pod "reports" its hash and learned examples in test
        # annotations.
        reports: list[ReadinessReport | None] = []
        for pod in pods:
            notes = pod["metadata"].get("annotations") or {}
            value = notes.get("test/config-hash")
            learned = int(notes.get("test/learned", "0"))
            report = ReadinessReport(
                ready=True, checks={"config": True}, config_hash=value, learned={"l0": learned}
            )
            reports.append(report if value else None)
        return reports

    task = asyncio.create_task(
        kopf.operator(
            settings=settings,
            standalone=True,
            namespaces=[NS],
            memo=kopf.Memo(kube=kube, probe=probe),
            stop_flag=stop,
            ready_flag=ready,
        )
    )
    await asyncio.wait_for(ready.wait(), 20)
    yield cluster
    stop.set()
    # kopf ends its own task by cancellation when the stop flag is set.
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 20)
    assert task.done()


def _sample(name: str) -> dict[str, Any]:
    """A homelab sample; the mesh with L1 and L2 on (the full three-container pod)."""
    body: dict[str, Any] = yaml.safe_load((REPO / f"samples/homelab/{name}.yaml").read_text())
    body["metadata"]["namespace"] = NS
    if body["kind"] == "RouterMesh":
        for layer in ("l1", "l2"):
            body["spec"]["layers"][layer]["enabled"] = True
    return body


def _objects(cluster: Any, plural: str) -> dict[str, dict[str, Any]]:
    return {
        key[2]: dict(obj.raw)
        for key, obj in cluster.objects.items()
        if key[0].plural == plural and not obj.deleted
    }


async def _until(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached in {timeout} s")
        await asyncio.sleep(0.1)


def _status(cluster: Any) -> dict[str, Any]:
    mesh = _objects(cluster, "routermeshes").get("homelab") or {}
    return mesh.get("status") or {}


def _condition(cluster: Any, kind: str) -> tuple[str, str] | None:
    for condition in _status(cluster).get("conditions") or []:
        if condition["type"] == kind:
            return condition["status"], condition["reason"]
    return None


async def _complete_job(cluster: Any, name: str) -> None:
    await cluster.patch(
        f"/apis/batch/v1/namespaces/{NS}/jobs/{name}/status",
        json={"status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}},
    )


async def _edit(cluster: Any, path: str, change: Callable[[dict[str, Any]], None]) -> None:
    plural, name = path.split("/")
    current = _objects(cluster, plural)[name]
    spec = copy.deepcopy(current["spec"])
    change(spec)
    response = await cluster.patch(f"{GROUP}/{path}", json={"spec": spec})
    assert response.status == 200, await response.text()


async def _deployed(operator: Any) -> dict[str, Any]:
    """Create the seed mesh, let its download 'succeed', return its Deployment."""
    await operator.post(f"{GROUP}/routetables", json=_sample("routetable"))
    await operator.post(f"{GROUP}/routermeshes", json=_sample("routermesh"))
    jobs = await _until(lambda: _objects(operator, "jobs"))
    await _complete_job(operator, next(iter(jobs)))
    return await _until(lambda: _objects(operator, "deployments").get("homelab"))  # type: ignore[no-any-return]


async def test_a_mesh_gets_its_children_and_status(operator: Any) -> None:
    await operator.post(f"{GROUP}/routetables", json=_sample("routetable"))
    await operator.post(f"{GROUP}/routermeshes", json=_sample("routermesh"))
    jobs = await _until(lambda: _objects(operator, "jobs"))
    assert len(jobs) == 1 and next(iter(jobs)).startswith("homelab-models-")
    await _until(lambda: _condition(operator, "ModelsReady") == ("False", "DownloadPending"))
    assert "homelab-models" in _objects(operator, "persistentvolumeclaims")
    assert "homelab" in _objects(operator, "services")
    assert _objects(operator, "deployments") == {}  # pods wait for the models
    assert _condition(operator, "Reconciling") == ("True", "DownloadPending")

    await _complete_job(operator, next(iter(jobs)))
    deployment = await _until(lambda: _objects(operator, "deployments").get("homelab"))
    assert [c["name"] for c in deployment["spec"]["template"]["spec"]["containers"]] == [
        "orchestrator",
        "l1",
        "l2",
    ]
    await _until(lambda: "homelab" in _objects(operator, "horizontalpodautoscalers"))
    configmap = _objects(operator, "configmaps")["homelab-config"]
    config = json.loads(configmap["data"]["router.json"])
    await _until(lambda: _condition(operator, "ModelsReady") == ("True", "ModelsDownloaded"))
    status = _status(operator)
    assert status["configHash"] == config["config_hash"]
    assert status["routes"] == 4 and status["endpoint"] == "http://homelab.tools.svc:8080"
    # No kubelet here: the Deployment never reports ready pods.
    await _until(lambda: _condition(operator, "Ready") == ("False", "ReplicasUnavailable"))
    assert _condition(operator, "Available") == ("False", "ReplicasUnavailable")


async def test_a_threshold_edit_changes_only_the_configmap(operator: Any) -> None:
    deployment = await _deployed(operator)
    before = _objects(operator, "configmaps")["homelab-config"]["metadata"]["annotations"]
    await _edit(operator, "routermeshes/homelab", lambda s: s["layers"]["l1"].update(threshold=0.6))
    after = await _until(
        lambda: (
            (a := _objects(operator, "configmaps")["homelab-config"]["metadata"]["annotations"])
            != before
            and a
        )
    )
    assert after["routermesh.io/config-hash"] != before["routermesh.io/config-hash"]
    current = _objects(operator, "deployments")["homelab"]
    assert current["spec"]["template"] == deployment["spec"]["template"]  # no pod restart
    assert len(_objects(operator, "jobs")) == 1  # same models, same Job


async def test_a_routetable_edit_rerenders_the_mesh_config(operator: Any) -> None:
    await _deployed(operator)

    def add_route(spec: dict[str, Any]) -> None:
        spec["routes"].append(
            {
                "name": "nas",
                "description": "TrueNAS storage: pools, datasets, shares and snapshots.",
                "examples": ["how full is the tank pool"],
                "target": {"url": "http://truenas-mcp.mcp.svc:8000/mcp"},
            }
        )

    await _edit(operator, "routetables/homelab", add_route)

    def routes() -> list[str]:
        text = _objects(operator, "configmaps")["homelab-config"]["data"]["router.json"]
        return [r["name"] for r in json.loads(text)["routes"]]

    assert "nas" in await _until(lambda: "nas" in routes() and routes())
    assert await _until(lambda: _status(operator).get("routes") == 5)


async def test_a_model_change_rolls_out_only_after_its_download(operator: Any) -> None:
    deployment = await _deployed(operator)
    first_job = next(iter(_objects(operator, "jobs")))
    new_uri = "hf://HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/smollm2-135m-instruct-q8_0.gguf"
    await _edit(
        operator,
        "routermeshes/homelab",
        lambda s: s["layers"]["l1"].update(model={"uri": new_uri}),
    )
    jobs = await _until(
        lambda: (
            len(_objects(operator, "jobs")) == 1
            and first_job not in _objects(operator, "jobs")
            and _objects(operator, "jobs")
        )
    )
    new_job = next(iter(jobs))
    await asyncio.sleep(1.5)  # a resync or two: still no rollout
    current = _objects(operator, "deployments")["homelab"]
    assert current["spec"]["template"] == deployment["spec"]["template"]
    running = json.loads(_objects(operator, "configmaps")["homelab-config"]["data"]["router.json"])
    assert running["layers"][0]["model"]["uri"] != new_uri  # servers keep finding their model
    assert _condition(operator, "ModelsReady") in {
        ("False", "DownloadPending"),
        ("False", "Downloading"),
    }

    await _complete_job(operator, new_job)
    rolled = await _until(
        lambda: (
            (d := _objects(operator, "deployments")["homelab"])["spec"]["template"]
            != deployment["spec"]["template"]
            and d
        )
    )
    annotations = rolled["spec"]["template"]["metadata"]["annotations"]
    assert annotations["routermesh.io/models"].startswith(new_job.rsplit("-", 1)[1])


async def test_turning_autoscaling_off_prunes_the_hpa(operator: Any) -> None:
    await _deployed(operator)
    await _until(lambda: "homelab" in _objects(operator, "horizontalpodautoscalers"))
    await _edit(
        operator,
        "routermeshes/homelab",
        lambda s: s["scaling"].update(autoscaling=False, replicas=2),
    )
    await _until(lambda: "homelab" not in _objects(operator, "horizontalpodautoscalers"))
    assert await _until(
        lambda: _objects(operator, "deployments")["homelab"]["spec"].get("replicas") == 2
    )


async def test_an_invalid_spec_stalls_with_the_field_and_an_event(operator: Any) -> None:
    await operator.post(f"{GROUP}/routetables", json=_sample("routetable"))
    body = _sample("routermesh")
    body["spec"]["layers"]["l1"]["threshold"] = 1.5  # the API server's schema would refuse it
    await operator.post(f"{GROUP}/routermeshes", json=body)
    await _until(lambda: _condition(operator, "Stalled") == ("True", "InvalidSpec"))
    message = next(c["message"] for c in _status(operator)["conditions"] if c["type"] == "Stalled")
    assert "spec.layers.l1.threshold" in message
    events = await _until(
        lambda: [
            e for e in _objects(operator, "events").values() if e.get("reason") == "InvalidSpec"
        ]
    )
    assert "spec.layers.l1.threshold" in events[0]["message"]
    assert _objects(operator, "jobs") == {} and _objects(operator, "deployments") == {}


async def test_ready_once_pods_are_available_and_run_the_current_config(operator: Any) -> None:
    await _deployed(operator)
    await operator.patch(
        f"/apis/apps/v1/namespaces/{NS}/deployments/homelab/status",
        json={
            "status": {
                "observedGeneration": 1,
                "replicas": 1,
                "readyReplicas": 1,
                "updatedReplicas": 1,
                "conditions": [{"type": "Available", "status": "True"}],
            }
        },
    )
    config_hash = await _until(lambda: _status(operator).get("configHash"))
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "homelab-abc12",
            "namespace": NS,
            "labels": {
                "app.kubernetes.io/name": "router-mesh",
                "app.kubernetes.io/instance": "homelab",
                "app.kubernetes.io/component": "router",
            },
            "annotations": {"test/config-hash": "an-old-hash"},
        },
        "spec": {"containers": []},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    await operator.post(f"/api/v1/namespaces/{NS}/pods", json=pod)
    await _until(lambda: _condition(operator, "ConfigApplied") == ("False", "ConfigPending"))
    assert _condition(operator, "Ready") == ("False", "ConfigPending")
    await operator.patch(
        f"/api/v1/namespaces/{NS}/pods/homelab-abc12",
        json={"metadata": {"annotations": {"test/config-hash": config_hash, "test/learned": "3"}}},
    )
    await _until(lambda: _condition(operator, "Ready") == ("True", "Ready"))
    await _until(lambda: _status(operator).get("learnedExamples") == 3)
    assert _condition(operator, "ConfigApplied") == ("True", "ConfigLoaded")
    assert _condition(operator, "Reconciling") is None  # present only while true
    assert _status(operator)["readyReplicas"] == 1


async def test_deletion_is_left_to_owner_references(operator: Any) -> None:
    await _deployed(operator)
    mesh = _objects(operator, "routermeshes")["homelab"]
    # kopf's own finalizer (it stops the resync timer), under our name; it is released at
    # once on deletion: no deletion handler runs, ownerReferences do the rest.
    assert mesh["metadata"].get("finalizers") == ["routermesh.io/operator"]
    uid = mesh["metadata"]["uid"]
    for plural in ("configmaps", "deployments", "services", "jobs", "persistentvolumeclaims"):
        for child in _objects(operator, plural).values():
            owners = child["metadata"]["ownerReferences"]
            assert [(o["kind"], o["uid"], o["controller"]) for o in owners] == [
                ("RouterMesh", uid, True)
            ]
    response = await operator.delete(f"{GROUP}/routermeshes/homelab")
    assert response.status == 200
    await _until(lambda: "homelab" not in _objects(operator, "routermeshes"))
    # The API server's garbage collector (absent from the emulator) deletes the children.


async def test_the_network_policy_follows_the_spec_and_every_call_is_allowed_by_rbac(
    operator: Any,
) -> None:
    await _deployed(operator)
    assert _objects(operator, "networkpolicies") == {}
    await _edit(
        operator, "routermeshes/homelab", lambda spec: spec.update(networkPolicy={"enabled": True})
    )
    policy = await _until(lambda: _objects(operator, "networkpolicies").get("homelab"))
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    await _edit(
        operator, "routermeshes/homelab", lambda spec: spec.update(networkPolicy={"enabled": False})
    )
    await _until(lambda: "homelab" not in _objects(operator, "networkpolicies"))

    # Every request the operator made in this life cycle (create, apply, prune, status,
    # events, watches) is one the shipped RBAC allows: a verb missing from the Role fails.
    rbac = list(yaml.safe_load_all((REPO / "deploy/operator-rbac.yaml").read_text()))
    allowed: set[tuple[str, str, str]] = set()
    for doc in rbac:
        if doc["kind"] in ("ClusterRole", "Role"):
            for rule in doc["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        allowed |= {(group, resource, verb) for verb in rule["verbs"]}
    # kopf's requests and the reconcile's (httpx); the test's own come from kmock's client.
    used = {c[:3] for c in operator.calls if not c[3].startswith("kmock/")}
    assert ("networking.k8s.io", "networkpolicies", "delete") in used
    assert ("apps", "deployments", "patch") in used
    assert used - allowed == set(), sorted(used - allowed)


async def _mesh_with_head(operator: Any) -> dict[str, dict[str, Any]]:
    """Create the seed mesh with L0's trained head enabled; return its first Jobs."""
    mesh = _sample("routermesh")
    mesh["spec"]["layers"]["l0"] = {
        **mesh["spec"]["layers"].get("l0", {}),
        "head": {"enabled": True},
    }
    await operator.post(f"{GROUP}/routetables", json=_sample("routetable"))
    await operator.post(f"{GROUP}/routermeshes", json=mesh)
    return await _until(lambda: _objects(operator, "jobs"))  # type: ignore[no-any-return]


async def test_a_trained_head_gets_its_job_after_the_download_and_shows_in_status(
    operator: Any,
) -> None:
    jobs = await _mesh_with_head(operator)
    assert [name.split("-")[1] for name in jobs] == ["models"]  # no training before the models
    download = next(iter(jobs))
    fetch_args = jobs[download]["spec"]["template"]["spec"]["containers"][0]["args"]
    items = json.loads(fetch_args[fetch_args.index("--items-json") + 1])
    assert any(i["uri"] == "hf://sentence-transformers/all-MiniLM-L6-v2" for i in items)
    await _until(lambda: (_status(operator).get("head") or {}).get("state") == "Pending")

    await _complete_job(operator, download)
    training = await _until(
        lambda: [n for n in _objects(operator, "jobs") if n.startswith("homelab-train-")]
    )
    config = json.loads(_objects(operator, "configmaps")["homelab-config"]["data"]["router.json"])
    head = next(layer for layer in config["layers"] if layer["name"] == "l0")["head"]
    job = _objects(operator, "jobs")[training[0]]
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "train-head" and args[args.index("--expect-path") + 1] == head["path"]
    await _until(lambda: (_status(operator).get("head") or {}).get("state") == "Training")
    assert _status(operator)["head"]["job"] == training[0]

    await _complete_job(operator, training[0])
    await _until(lambda: (_status(operator).get("head") or {}).get("state") == "Trained")
    assert _status(operator)["head"]["path"] == head["path"]
    # The finished Job stays for its logs; no second one is made.
    await asyncio.sleep(1.0)
    assert [n for n in _objects(operator, "jobs") if n.startswith("homelab-train-")] == training


async def test_a_failed_training_is_reported_and_routing_goes_on(operator: Any) -> None:
    jobs = await _mesh_with_head(operator)
    await _complete_job(operator, next(iter(jobs)))
    training = await _until(
        lambda: [n for n in _objects(operator, "jobs") if n.startswith("homelab-train-")]
    )
    message = "a trained head needs about 300 examples or more"
    await operator.patch(
        f"/apis/batch/v1/namespaces/{NS}/jobs/{training[0]}/status",
        json={"status": {"conditions": [{"type": "Failed", "status": "True", "message": message}]}},
    )
    await _until(lambda: (_status(operator).get("head") or {}).get("state") == "Failed")
    assert _status(operator)["head"]["message"] == message
    assert "homelab" in _objects(operator, "deployments")  # the pods route with the base
