"""The real kopf operator, in-process, against kmock's Kubernetes API emulator (made
faithful by tests/kmock_faithful.py, server-side apply included): a mesh's children and
status, live edits that touch only the ConfigMap, RouteTable edits, a model change gated
by its download Job, pruning, an invalid spec; what server-side apply does to the
children (fields the operator stops applying go, other managers' fields stay); and the
RBAC the operator needs, derived from every request it made.

"Nothing happened" is asserted only after something shows the operator looked: a
reconcile ends with a status write (:func:`_reconciled`), so two more of them mean at
least one whole reconcile ran after the change. Expected names and digests are written
out: a change in how the operator names its children fails here."""

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
from tests.kmock_faithful import SESSION_CALLS, VERBS, Call, FaithfulEmulator
from tests.operator_login import TARGET
from tests.rbac import EXCEPTIONS, Grant, chart_grants, deploy_grants, unallowed, unused

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
WITH_STATUS = {
    "Deployment",
    "Job",
    "HorizontalPodAutoscaler",
    "PersistentVolumeClaim",
    "Pod",
    "Service",
}
"""The kinds with a status subresource on a real API server."""

# The names and digests of the seed mesh (samples/homelab, L1 and L2 on), written out.
FIRST_JOB = "homelab-models-18644974"
NEW_L1 = "hf://HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/smollm2-135m-instruct-q8_0.gguf"
NEW_JOB = "homelab-models-55d22073"
NEW_MODELS = "55d22073665aa53766b2e0407754690d5723d7f661f65c963e93d244a4c6cd67"
HEAD_JOB = "homelab-models-433e22b0"
TRAIN_JOB = "homelab-train-47cb51cd47"
HEAD_PATH = "heads/47cb51cd4766466e"
OPERATOR = "router-mesh-operator"
"""The operator's field manager."""


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
    # The CRDs are there as on a cluster: kopf scans for them (and for the namespaces)
    # as the deployed operator does, so its RBAC for that is exercised too.
    kmock.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = kmock.ResourceInfo(
        kind="CustomResourceDefinition",
        singular="customresourcedefinition",
        namespaced=False,
        verbs=VERBS,
    )
    for path in sorted((REPO / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        response = await kmock.post(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd
        )
        assert response.status in (200, 201), await response.text()
    response = await kmock.post("/api/v1/namespaces", json={"metadata": {"name": NS}})
    assert response.status in (200, 201), await response.text()
    TARGET["server"] = str(kmock.url)
    return kmock


@pytest.fixture
async def operator(cluster: Any) -> AsyncIterator[Any]:
    assert handlers.RESYNC_SECONDS == 1.0
    settings = kopf.OperatorSettings()
    settings.networking.error_backoffs = [0.1]
    stop, ready = asyncio.Event(), asyncio.Event()
    kube = Kube(Connection(server=str(cluster.url), insecure=True))

    async def probe(pods: list[dict[str, Any]]) -> list[ReadinessReport | None]:
        # No pod network here: each pod "reports" its hash, learned examples and MCP
        # servers (JSON) in test annotations.
        reports: list[ReadinessReport | None] = []
        for pod in pods:
            notes = pod["metadata"].get("annotations") or {}
            value = notes.get("test/config-hash")
            learned = int(notes.get("test/learned", "0"))
            report = ReadinessReport(
                ready=True,
                checks={"config": True},
                config_hash=value,
                learned={"l0": learned},
                mcp=json.loads(notes.get("test/mcp") or "{}"),
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


def _status_writes(cluster: Any, name: str = "homelab") -> int:
    """How many times the operator wrote the mesh's status: every reconcile ends so."""
    return sum(
        1
        for call in cluster.calls
        if not call.by_test
        and (call.verb, call.resource, call.subresource, call.name)
        == ("patch", "routermeshes", "status", name)
    )


async def _reconciled(cluster: Any, passes: int = 2) -> None:
    """Wait for ``passes`` more reconciles to end: the first may have begun before this
    call, so two mean at least one whole reconcile saw the state as it is now."""
    start = _status_writes(cluster)
    await _until(lambda: _status_writes(cluster) >= start + passes)


def _generation(cluster: Any) -> int:
    return int(_objects(cluster, "routermeshes")["homelab"]["metadata"]["generation"])


async def _complete_job(cluster: Any, name: str) -> None:
    await cluster.patch(
        f"/apis/batch/v1/namespaces/{NS}/jobs/{name}/status",
        json={"status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}},
    )


async def _edit(cluster: Any, path: str, change: Callable[[dict[str, Any]], None]) -> None:
    """Change the object's spec as `kubectl apply` of the edited file would: what
    ``change`` drops is removed too."""
    plural, name = path.split("/")
    current = _objects(cluster, plural)[name]
    spec = copy.deepcopy(current["spec"])
    change(spec)
    response = await cluster.patch(
        f"{GROUP}/{path}",
        json={"spec": _merge_patch(current["spec"], spec)},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert response.status == 200, await response.text()


def _merge_patch(current: Any, wanted: Any) -> Any:
    """The JSON merge patch from ``current`` to ``wanted`` (null for a dropped key)."""
    if not isinstance(current, dict) or not isinstance(wanted, dict):
        return wanted
    out = {key: None for key in current if key not in wanted}
    for key, value in wanted.items():
        out[key] = _merge_patch(current[key], value) if key in current else value
    return out


async def _deployed(operator: Any) -> dict[str, Any]:
    """Create the seed mesh, let its download 'succeed', return its Deployment."""
    await operator.post(f"{GROUP}/routetables", json=_sample("routetable"))
    await operator.post(f"{GROUP}/routermeshes", json=_sample("routermesh"))
    await _until(lambda: FIRST_JOB in _objects(operator, "jobs"))
    await _complete_job(operator, FIRST_JOB)
    return await _until(lambda: _objects(operator, "deployments").get("homelab"))  # type: ignore[no-any-return]


def _owned_by(manager: str, obj: dict[str, Any], *path: str) -> bool:
    """Whether ``manager`` owns the field at ``path`` (f: elements) per managedFields."""
    for entry in obj["metadata"].get("managedFields") or []:
        node = entry.get("fieldsV1") or {}
        for name in path:
            node = node.get(name) if isinstance(node, dict) else None
        if entry["manager"] == manager and node is not None:
            return True
    return False


async def test_a_mesh_gets_its_children_and_status(operator: Any) -> None:
    await operator.post(f"{GROUP}/routetables", json=_sample("routetable"))
    await operator.post(f"{GROUP}/routermeshes", json=_sample("routermesh"))
    jobs = await _until(lambda: _objects(operator, "jobs"))
    assert list(jobs) == [FIRST_JOB]
    await _until(lambda: _condition(operator, "ModelsReady") == ("False", "DownloadPending"))
    assert "homelab-models" in _objects(operator, "persistentvolumeclaims")
    assert "homelab" in _objects(operator, "services")
    assert _objects(operator, "deployments") == {}  # pods wait for the models
    assert _condition(operator, "Reconciling") == ("True", "DownloadPending")

    await _complete_job(operator, FIRST_JOB)
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
    # Every child is the operator's by server-side apply, nobody else's.
    for plural, name in (
        ("configmaps", "homelab-config"),
        ("deployments", "homelab"),
        ("services", "homelab"),
        ("horizontalpodautoscalers", "homelab"),
        ("persistentvolumeclaims", "homelab-models"),
        ("jobs", FIRST_JOB),
    ):
        child = _objects(operator, plural)[name]
        writers = {
            (e["manager"], e["operation"])
            for e in child["metadata"]["managedFields"]
            if e.get("subresource") != "status"
        }
        assert writers == {(OPERATOR, "Apply")}, (plural, writers)


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
    await _until(lambda: _status(operator).get("observedGeneration") == _generation(operator))
    current = _objects(operator, "deployments")["homelab"]
    assert current["spec"]["template"] == deployment["spec"]["template"]  # no pod restart
    assert list(_objects(operator, "jobs")) == [FIRST_JOB]  # same models, same Job


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
    await _edit(
        operator,
        "routermeshes/homelab",
        lambda s: s["layers"]["l1"].update(model={"uri": NEW_L1}),
    )
    await _until(lambda: list(_objects(operator, "jobs")) == [NEW_JOB])
    # The operator has seen the new spec, and reconciled again since: still no rollout.
    await _until(lambda: _status(operator).get("observedGeneration") == _generation(operator))
    await _reconciled(operator)
    current = _objects(operator, "deployments")["homelab"]
    assert current["spec"]["template"] == deployment["spec"]["template"]
    running = json.loads(_objects(operator, "configmaps")["homelab-config"]["data"]["router.json"])
    assert running["layers"][0]["model"]["uri"] != NEW_L1  # servers keep finding their model
    assert _condition(operator, "ModelsReady") in {
        ("False", "DownloadPending"),
        ("False", "Downloading"),
    }

    await _complete_job(operator, NEW_JOB)
    rolled = await _until(
        lambda: (
            (d := _objects(operator, "deployments")["homelab"])["spec"]["template"]
            != deployment["spec"]["template"]
            and d
        )
    )
    assert rolled["spec"]["template"]["metadata"]["annotations"] == {
        "routermesh.io/models": NEW_MODELS
    }


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
    await _reconciled(operator)  # and it stays so: nothing created meanwhile
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
    # configHash may predate the status patch: wait for a reconcile that read the patch, or a
    # slow one that read the Deployment before it could list the pod below with stale replicas.
    await _until(lambda: _condition(operator, "Available") == ("True", "MinimumReplicasAvailable"))
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
    # kopf's own finalizer, under our name; it is released at once on deletion: no
    # deletion handler runs, ownerReferences do the rest.
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


async def test_the_network_policy_follows_the_spec(operator: Any) -> None:
    await _deployed(operator)
    assert _objects(operator, "networkpolicies") == {}
    extra = {"to": [{"ipBlock": {"cidr": "10.9.0.0/16"}}]}
    await _edit(
        operator,
        "routermeshes/homelab",
        lambda spec: spec.update(networkPolicy={"enabled": True, "extraEgress": [extra]}),
    )
    policy = await _until(lambda: _objects(operator, "networkpolicies").get("homelab"))
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["egress"][-1] == extra
    await _edit(
        operator, "routermeshes/homelab", lambda spec: spec.update(networkPolicy={"enabled": True})
    )
    await _until(
        lambda: extra not in _objects(operator, "networkpolicies")["homelab"]["spec"]["egress"]
    )
    await _edit(
        operator, "routermeshes/homelab", lambda spec: spec.update(networkPolicy={"enabled": False})
    )
    await _until(lambda: "homelab" not in _objects(operator, "networkpolicies"))


# --- server-side apply ---------------------------------------------------------------------------


def _pod_spec(cluster: Any) -> dict[str, Any]:
    return _objects(cluster, "deployments")["homelab"]["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def _container(cluster: Any, name: str) -> dict[str, Any]:
    return next(c for c in _pod_spec(cluster)["containers"] if c["name"] == name)


async def test_what_the_operator_stops_applying_leaves_the_children(operator: Any) -> None:
    """A merge of the applied manifest would keep each of these: only server-side apply's
    removal of the applier's own omitted fields takes them away."""
    await _deployed(operator)
    await _edit(
        operator,
        "routermeshes/homelab",
        lambda s: s.update(scheduling={"nodeSelector": {"disk": "ssd"}}),
    )
    await _until(lambda: _pod_spec(operator).get("nodeSelector") == {"disk": "ssd"})
    assert _container(operator, "l1")["resources"]["limits"] == {"cpu": "2", "memory": "512Mi"}

    def relax(spec: dict[str, Any]) -> None:
        del spec["scheduling"]
        spec["layers"]["l1"]["resources"] = {"requests": {"cpu": "2", "memory": "512Mi"}}
        spec["scaling"].update(autoscaling=False, replicas=2)

    await _edit(operator, "routermeshes/homelab", relax)
    await _until(lambda: "nodeSelector" not in _pod_spec(operator))
    assert _container(operator, "l1")["resources"] == {"requests": {"cpu": "2", "memory": "512Mi"}}
    assert _objects(operator, "deployments")["homelab"]["spec"]["replicas"] == 2

    # Autoscaling back on: the operator no longer applies spec.replicas. Removed, it would
    # fall to the API server's default, 1, until the HPA scales: a handover manager takes
    # the count first, so the two replicas keep running and the HPA moves on from there.
    await _edit(operator, "routermeshes/homelab", lambda s: s["scaling"].update(autoscaling=True))
    await _until(
        lambda: (
            not _owned_by(
                OPERATOR, _objects(operator, "deployments")["homelab"], "f:spec", "f:replicas"
            )
        )
    )
    deployment = _objects(operator, "deployments")["homelab"]
    assert deployment["spec"]["replicas"] == 2
    assert _owned_by("router-mesh-handover", deployment, "f:spec", "f:replicas")


async def test_fields_of_other_managers_survive_the_operators_applies(operator: Any) -> None:
    await _deployed(operator)
    path = f"/apis/apps/v1/namespaces/{NS}/deployments/homelab"
    # The HPA's scale (kube-controller-manager), a user's server-side apply of a label and
    # an env var, each under its own field manager.
    scaled = await operator.patch(
        path,
        params={"fieldManager": "kube-controller-manager"},
        json={"spec": {"replicas": 3}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert scaled.status == 200, await scaled.text()
    users = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "homelab", "labels": {"team": "infra"}},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "orchestrator",
                            "env": [{"name": "HTTPS_PROXY", "value": "p:3128"}],
                        }
                    ]
                }
            }
        },
    }
    applied = await operator.patch(
        path,
        params={"fieldManager": "kubectl"},
        json=users,
        headers={"Content-Type": "application/apply-patch+yaml"},
    )
    assert applied.status == 200, await applied.text()
    # A spec edit the operator applies to the Deployment's pod template.
    await _edit(
        operator,
        "routermeshes/homelab",
        lambda s: s.update(scheduling={"nodeSelector": {"disk": "ssd"}}),
    )
    await _until(lambda: _pod_spec(operator).get("nodeSelector") == {"disk": "ssd"})
    await _reconciled(operator)
    deployment = _objects(operator, "deployments")["homelab"]
    assert deployment["spec"]["replicas"] == 3
    assert deployment["metadata"]["labels"]["team"] == "infra"
    assert _container(operator, "orchestrator")["env"] == [
        {"name": "ROUTER_MESH_L0_THREADS", "value": "1"},
        {"name": "HTTPS_PROXY", "value": "p:3128"},
    ]
    assert _owned_by("kube-controller-manager", deployment, "f:spec", "f:replicas")
    assert _owned_by(OPERATOR, deployment, "f:spec", "f:template", "f:spec", "f:nodeSelector")

    # Autoscaling off: the operator applies replicas again and, forcing, takes them over.
    await _edit(
        operator,
        "routermeshes/homelab",
        lambda s: s["scaling"].update(autoscaling=False, replicas=2),
    )
    await _until(lambda: _objects(operator, "deployments")["homelab"]["spec"]["replicas"] == 2)
    deployment = _objects(operator, "deployments")["homelab"]
    assert _owned_by(OPERATOR, deployment, "f:spec", "f:replicas")
    assert not _owned_by("kube-controller-manager", deployment, "f:spec", "f:replicas")


def _stale(kind: str, api_version: str, uid: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "homelab-stale", "labels": {"routermesh.io/mesh": "homelab"}}
    if uid is not None:
        meta["ownerReferences"] = [
            {
                "apiVersion": "routermesh.io/v1alpha1",
                "kind": "RouterMesh",
                "name": "homelab",
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return {"apiVersion": api_version, "kind": kind, "metadata": meta}


STALE = {
    "configmaps": ("ConfigMap", "/api/v1"),
    "services": ("Service", "/api/v1"),
    "deployments": ("Deployment", "/apis/apps/v1"),
    "horizontalpodautoscalers": ("HorizontalPodAutoscaler", "/apis/autoscaling/v2"),
    "jobs": ("Job", "/apis/batch/v1"),
    "networkpolicies": ("NetworkPolicy", "/apis/networking.k8s.io/v1"),
}


async def _plant_stale_children(operator: Any) -> None:
    """A child of each pruned kind the mesh owns but no longer wants (say, left by an
    older operator's naming); and a user's ConfigMap that only carries the label."""
    uid = _objects(operator, "routermeshes")["homelab"]["metadata"]["uid"]
    for plural, (kind, prefix) in STALE.items():
        body = _stale(kind, prefix.removeprefix("/api/").removeprefix("/apis/"), uid)
        response = await operator.post(f"{prefix}/namespaces/{NS}/{plural}", json=body)
        assert response.status in (200, 201), await response.text()
    notes = _stale("ConfigMap", "v1", None)
    notes["metadata"]["name"] = "homelab-notes"
    await operator.post(f"/api/v1/namespaces/{NS}/configmaps", json=notes)


async def test_children_the_mesh_no_longer_wants_are_pruned_and_others_kept(
    operator: Any,
) -> None:
    await _deployed(operator)
    await _plant_stale_children(operator)
    for plural in STALE:
        await _until(lambda p=plural: "homelab-stale" not in _objects(operator, p))  # type: ignore[misc]
    await _reconciled(operator)
    assert "homelab-notes" in _objects(operator, "configmaps")  # not the mesh's
    assert "homelab-config" in _objects(operator, "configmaps")


# --- the head ------------------------------------------------------------------------------------


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
    assert list(jobs) == [HEAD_JOB]  # no training before the models
    fetch_args = jobs[HEAD_JOB]["spec"]["template"]["spec"]["containers"][0]["args"]
    items = json.loads(fetch_args[fetch_args.index("--items-json") + 1])
    assert any(i["uri"] == "hf://sentence-transformers/all-MiniLM-L6-v2" for i in items)
    await _until(lambda: (_status(operator).get("head") or {}).get("state") == "Pending")

    await _complete_job(operator, HEAD_JOB)
    await _until(lambda: TRAIN_JOB in _objects(operator, "jobs"))
    config = json.loads(_objects(operator, "configmaps")["homelab-config"]["data"]["router.json"])
    head = next(layer for layer in config["layers"] if layer["name"] == "l0")["head"]
    assert head["path"] == HEAD_PATH
    job = _objects(operator, "jobs")[TRAIN_JOB]
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "train-head" and args[args.index("--expect-path") + 1] == HEAD_PATH
    await _until(lambda: (_status(operator).get("head") or {}).get("state") == "Training")
    assert _status(operator)["head"]["job"] == TRAIN_JOB

    await _complete_job(operator, TRAIN_JOB)
    await _until(lambda: (_status(operator).get("head") or {}).get("state") == "Trained")
    assert _status(operator)["head"]["path"] == HEAD_PATH
    # The finished Job stays for its logs; no second one is made by the reconciles after.
    await _reconciled(operator)
    assert sorted(_objects(operator, "jobs")) == [HEAD_JOB, TRAIN_JOB]


async def test_a_failed_training_is_reported_and_routing_goes_on(operator: Any) -> None:
    await _mesh_with_head(operator)
    await _complete_job(operator, HEAD_JOB)
    await _until(lambda: TRAIN_JOB in _objects(operator, "jobs"))
    message = "a trained head needs about 300 examples or more"
    await operator.patch(
        f"/apis/batch/v1/namespaces/{NS}/jobs/{TRAIN_JOB}/status",
        json={"status": {"conditions": [{"type": "Failed", "status": "True", "message": message}]}},
    )
    await _until(lambda: (_status(operator).get("head") or {}).get("state") == "Failed")
    assert _status(operator)["head"]["message"] == message
    assert "homelab" in _objects(operator, "deployments")  # the pods route with the base


# --- RBAC, derived from the requests ------------------------------------------------------------


def _named(grants: list[Grant]) -> list[str]:
    return [f"{g.verb} {g.group or 'core'}/{g.resource}" for g in grants]


def _operators(calls: set[Call]) -> set[Call]:
    """The operator's requests: not the tests' own, and in the namespace the operators of
    this module watch or cluster-wide (the emulator's own unit tests record requests of
    theirs in other namespaces into the same session)."""
    return {call for call in calls if not call.by_test and call.namespace in (NS, None, "")}


async def test_the_rbac_allows_every_request_of_the_operator_and_no_more(operator: Any) -> None:
    """Drive every path that calls the API (create, apply, prune of each kind, status,
    events, watches, the RouteTable path), then hold the shipped RBAC against all the
    requests the operator made in this session: each one is allowed, and each rule is
    used by one (or listed in tests/rbac.py with the reason it is not)."""
    await _deployed(operator)
    await _edit(
        operator,
        "routetables/homelab",
        lambda s: s["routes"].append(
            {
                "name": "nas",
                "description": "TrueNAS storage: pools, datasets, shares and snapshots.",
                "examples": ["how full is the tank pool"],
                "target": {"url": "http://truenas-mcp.mcp.svc:8000/mcp"},
            }
        ),
    )
    await _until(lambda: _status(operator).get("routes") == 5)
    await _edit(
        operator, "routermeshes/homelab", lambda s: s.update(networkPolicy={"enabled": True})
    )
    await _until(lambda: "homelab" in _objects(operator, "networkpolicies"))
    await _plant_stale_children(operator)
    for plural in STALE:
        await _until(lambda p=plural: "homelab-stale" not in _objects(operator, p))  # type: ignore[misc]
    await _reconciled(operator)

    calls = _operators(SESSION_CALLS)
    # The paths above did reach the API (a scenario that stopped early proves nothing).
    done = {(c.verb, c.group, c.resource, c.subresource) for c in calls}
    assert {
        ("create", "", "events", ""),
        ("patch", "routermesh.io", "routermeshes", "status"),
        ("patch", "routermesh.io", "routetables", "status"),
        ("delete", "networking.k8s.io", "networkpolicies", ""),
        ("list", "", "pods", ""),
        ("watch", "apiextensions.k8s.io", "customresourcedefinitions", ""),
    } <= done
    deploy = deploy_grants()
    denied, idle = unallowed(calls, deploy), _named(unused(calls, deploy))
    assert not denied, f"deploy/operator-rbac.yaml does not allow: {denied}"
    assert not idle, f"deploy/operator-rbac.yaml grants, and no request uses: {idle}"
    for values, scope in (({}, "cluster-wide"), ({"watchNamespaces": [NS]}, f"only {NS}")):
        chart = chart_grants(values)
        if chart is None:
            pytest.skip("helm not found: run `bash scripts/get-helm.sh` (chart RBAC unchecked)")
        denied, idle = unallowed(calls, chart), _named(unused(calls, chart))
        assert not denied, f"the chart's RBAC ({scope}) does not allow: {denied}"
        assert not idle, f"the chart's RBAC ({scope}) grants, and no request uses: {idle}"
    # With replicas > 1 the chart adds kopf's peering: the listed exceptions, and only them.
    ha = chart_grants({"replicas": 2})
    assert ha is not None
    assert set(unused(calls, ha)) == set(EXCEPTIONS)
