"""The operator's pure builders: every child validated against the upstream Kubernetes
schemas (1.30 and the newest kubernetes-validate ships), labels and ownership, the
restricted Pod Security Standard, and which children a spec change touches."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from routermesh.operator import api
from routermesh.operator import builders as b
from routermesh.operator.render import render_config
from routermesh.runtime.contract import config as rc
from routermesh.runtime.contract.models import items_from_json
from tests.support import layer_of

REPO = Path(__file__).resolve().parents[2]
VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]


def _mesh(patch: dict[str, Any] | None = None) -> api.RouterMesh:
    """The homelab sample with L1 and L2 on (the full three-container pod), patched."""
    raw = yaml.safe_load((REPO / "samples/homelab/routermesh.yaml").read_text())
    patch = {"spec.layers.l1.enabled": True, "spec.layers.l2.enabled": True, **(patch or {})}
    raw["metadata"].update(
        namespace="tools",
        uid="0b5e8a5c-7f1e-4f43-9a43-5d0f2c1e9a11",
        labels={"argocd.argoproj.io/instance": "homelab-app", "team": "ops"},
        annotations={"kubectl.kubernetes.io/last-applied-configuration": "{}"},
    )
    for path, value in patch.items():
        node = raw
        *parents, leaf = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return api.parse(api.RouterMesh, raw)


def _table() -> api.RouteTable:
    raw = yaml.safe_load((REPO / "samples/homelab/routetable.yaml").read_text())
    raw["metadata"]["namespace"] = "tools"
    return api.parse(api.RouteTable, raw)


def _children(mesh: api.RouterMesh) -> list[dict[str, Any]]:
    config = render_config(mesh, [_table()])
    return b.desired_children(mesh, config, config)


def _by_kind(children: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["kind"]: c for c in children}


HARDENED = yaml.safe_load((REPO / "samples/hardened/routermesh.yaml").read_text())["spec"]


def _hardened() -> api.RouterMesh:
    return _mesh({"spec.api": HARDENED["api"], "spec.networkPolicy": HARDENED["networkPolicy"]})


@pytest.mark.parametrize("version", VERSIONS)
def test_every_child_validates_against_the_upstream_schemas(version: str) -> None:
    fixed = b.build_deployment(_mesh({"spec.scaling.autoscaling": False}), _config())
    children = [
        *_children(_mesh()),
        *_children(_hardened()),
        fixed,
        b.build_download_job(_mesh(), _config()),
    ]
    assert {c["kind"] for c in children} == {
        "ConfigMap",
        "PersistentVolumeClaim",
        "Job",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
    }
    for child in children:
        kubernetes_validate.validate(child, version, strict=True)


def _config(mesh: api.RouterMesh | None = None) -> rc.RouterConfig:
    return render_config(mesh or _mesh(), [_table()])


def test_children_are_labelled_owned_and_copy_nothing_from_the_parent() -> None:
    mesh = _mesh()
    for child in _children(mesh):
        meta = child["metadata"]
        assert meta["namespace"] == "tools"
        assert meta["labels"]["routermesh.io/mesh"] == "homelab"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "router-mesh-operator"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "routermesh.io/v1alpha1",
                "kind": "RouterMesh",
                "name": "homelab",
                "uid": mesh.metadata.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        text = json.dumps(child)
        assert "argocd.argoproj.io" not in text and "last-applied" not in text
        assert "team" not in meta["labels"]


def _restricted_violations(pod: dict[str, Any]) -> list[str]:
    """The Kubernetes restricted Pod Security Standard (v1.30), as the admission checks it."""
    problems = []
    pod_ctx = pod.get("securityContext", {})
    if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
        problems.append("host namespaces")
    allowed_volumes = {"configMap", "emptyDir", "persistentVolumeClaim", "secret", "projected"}
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= allowed_volumes:
            problems.append(f"volume type {kinds}")
    for container in pod.get("initContainers", []) + pod["containers"]:
        problems += _container_violations(container, pod_ctx)
    return problems


def _container_violations(container: dict[str, Any], pod_ctx: dict[str, Any]) -> list[str]:
    problems = []
    ctx = container.get("securityContext", {})
    name = container["name"]
    if ctx.get("privileged"):
        problems.append(f"{name}: privileged")
    if ctx.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{name}: allowPrivilegeEscalation")
    if ctx.get("capabilities", {}).get("drop") != ["ALL"]:
        problems.append(f"{name}: capabilities not dropped")
    if set(ctx.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
        problems.append(f"{name}: capabilities added")
    if not (ctx.get("runAsNonRoot") or pod_ctx.get("runAsNonRoot")):
        problems.append(f"{name}: runAsNonRoot")
    if ctx.get("runAsUser", pod_ctx.get("runAsUser")) == 0:
        problems.append(f"{name}: runAsUser 0")
    seccomp = ctx.get("seccompProfile", pod_ctx.get("seccompProfile", {}))
    if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
        problems.append(f"{name}: seccomp")
    if not ctx.get("readOnlyRootFilesystem"):
        problems.append(f"{name}: writable root filesystem (our own rule)")
    if container.get("ports") and any(p.get("hostPort") for p in container["ports"]):
        problems.append(f"{name}: hostPort")
    return problems


@pytest.mark.parametrize("hardened", [False, True])
def test_pods_meet_the_restricted_pod_security_standard(hardened: bool) -> None:
    mesh = _hardened() if hardened else _mesh()
    kinds = _by_kind([*_children(mesh), b.build_download_job(mesh, _config(mesh))])
    for kind in ("Deployment", "Job"):
        pod = kinds[kind]["spec"]["template"]["spec"]
        assert _restricted_violations(pod) == [], kind
        assert pod["automountServiceAccountToken"] is False
    loose = copy.deepcopy(kinds["Deployment"]["spec"]["template"]["spec"])
    loose["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    assert _restricted_violations(loose) == ["orchestrator: allowPrivilegeEscalation"]


def test_the_deployment_runs_three_containers_on_the_mounted_config() -> None:
    deployment = _by_kind(_children(_mesh()))["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert list(containers) == ["orchestrator", "l1", "l2"]
    ports = {n: c["ports"][0]["containerPort"] for n, c in containers.items()}
    assert ports == {"orchestrator": 8080, "l1": 8081, "l2": 8082}
    for container in containers.values():
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["config"]["mountPath"] == "/etc/router-mesh"
        assert "subPath" not in mounts["config"]  # a subPath mount never sees updates
        assert mounts["models"]["readOnly"] is True
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert probe in container, (container["name"], probe)
    assert containers["l1"]["resources"]["limits"] == {"cpu": "2", "memory": "512Mi"}
    assert containers["l2"]["resources"]["limits"] == {"cpu": "4", "memory": "2Gi"}
    assert containers["orchestrator"]["resources"]["limits"] == {"cpu": "1", "memory": "512Mi"}
    assert containers["l2"]["args"][containers["l2"]["args"].index("--threads") + 1] == "4"
    secrets = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {
        "secret-redis": {"secretName": "router-redis", "items": [{"key": "url", "path": "url"}]},
        "secret-escalation": {
            "secretName": "cortex-credentials",
            "items": [{"key": "token", "path": "token"}],
        },
    }
    orchestrator_mounts = {m["mountPath"] for m in containers["orchestrator"]["volumeMounts"]}
    config = _config()
    assert config.cache.redis_url_file is not None
    assert config.escalation.credentials_file is not None
    assert str(Path(config.cache.redis_url_file).parent) in orchestrator_mounts
    assert str(Path(config.escalation.credentials_file).parent) in orchestrator_mounts
    assert "replicas" not in deployment["spec"]  # the HPA owns it


def test_a_disabled_layer_has_no_container_and_fixed_replicas_without_hpa() -> None:
    mesh = _mesh({"spec.layers.l2": {"enabled": False}, "spec.scaling.autoscaling": False})
    kinds = _by_kind(_children(mesh))
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["orchestrator", "l1"]
    assert kinds["Deployment"]["spec"]["replicas"] == 1
    assert "HorizontalPodAutoscaler" not in kinds


def test_the_hpa_scales_on_cpu_and_p95_latency() -> None:
    hpa = _by_kind(_children(_mesh()))["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 5)
    cpu, latency = hpa["metrics"]
    assert cpu["resource"]["target"]["averageUtilization"] == 70
    assert latency["pods"]["metric"]["name"] == "router_latency_p95_seconds"
    assert latency["pods"]["target"]["averageValue"] == "100m"  # 0.1 s


def test_the_download_job_fetches_the_config_models_and_is_named_by_them() -> None:
    config = _config()
    job = b.build_download_job(_mesh(), config)
    assert job["metadata"]["name"] == f"homelab-models-{b.models_hash(config)[:8]}"
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    items = items_from_json(args[args.index("--items-json") + 1])
    assert [i.uri for i in items] == [layer.model.uri for layer in config.layers]
    assert [i.path for i in items] == [layer.model.path for layer in config.layers]
    assert job["spec"]["backoffLimit"] == b.DOWNLOAD_BACKOFF_LIMIT
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    mounts = job["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "models", "mountPath": "/models"} in mounts  # writable for the Job


def test_a_threshold_change_touches_only_the_configmap() -> None:
    before = _by_kind(_children(_mesh()))
    after = _by_kind(_children(_mesh({"spec.layers.l1": {"enabled": True, "threshold": 0.6}})))
    changed = sorted(k for k in before if before[k] != after[k])
    assert changed == ["ConfigMap"]


def test_a_model_change_waits_for_its_download() -> None:
    old_mesh = _mesh()
    old = _config(old_mesh)
    new_mesh = _mesh(
        {
            "spec.layers.l1": {
                "enabled": True,
                "model": {"uri": "hf://org/other-135m/model.gguf"},
                "threshold": 0.6,
            }
        }
    )
    new = _config(new_mesh)
    pending = b.with_models_of(new, old)  # the new Job has not succeeded yet
    before = _by_kind(b.desired_children(old_mesh, old, old))
    during = _by_kind(b.desired_children(new_mesh, new, pending))
    assert during["Deployment"] == before["Deployment"]  # no rollout yet
    assert "Job" not in before  # an active model set needs no download
    assert during["Job"]["metadata"]["name"] == b.job_name(new_mesh, b.models_hash(new))
    config_during = rc.RouterConfig.from_json(during["ConfigMap"]["data"]["router.json"])
    during_l1, old_l1 = layer_of(config_during, "l1"), layer_of(old, "l1")
    assert during_l1.model == old_l1.model  # servers find their model
    assert during_l1.threshold == 0.6  # everything else applies now
    done = _by_kind(b.desired_children(new_mesh, new, new))
    template = done["Deployment"]["spec"]["template"]
    assert template != before["Deployment"]["spec"]["template"]  # rolls once it succeeded
    assert template["metadata"]["annotations"][b.MODELS_ANNOTATION] == b.models_hash(new)


def test_before_any_download_there_are_no_pods() -> None:
    mesh = _mesh()
    kinds = {c["kind"] for c in b.desired_children(mesh, _config(mesh), None)}
    assert kinds == {"PersistentVolumeClaim", "Job", "Service"}


def test_config_round_trips_through_the_configmap() -> None:
    config = _config()
    configmap = b.build_configmap(_mesh(), config)
    assert b.config_from_configmap(configmap) == config
    assert configmap["metadata"]["annotations"][b.CONFIG_HASH_ANNOTATION] == config.config_hash
    assert b.config_from_configmap({"data": {"router.json": "{broken"}}) is None
    assert b.config_from_configmap(None) is None


@pytest.mark.parametrize(
    ("limits", "requests", "threads"),
    [
        ({"cpu": "2"}, None, 2),
        ({"cpu": "500m"}, None, 1),
        (None, {"cpu": "2500m"}, 3),
        (None, None, 1),
    ],
)
def test_threads_follow_the_cpu_limit(
    limits: dict[str, str] | None, requests: dict[str, str] | None, threads: int
) -> None:
    assert b.cpu_threads(api.Resources(limits=limits, requests=requests)) == threads


def test_learning_from_tool_calls_is_off_unless_the_mesh_asks_for_it() -> None:
    assert _config(_hardened()).api.learn_from_tool_calls is False
    asked = _mesh({"spec.api": {**HARDENED["api"], "learnFromToolCalls": True}})
    assert _config(asked).api.learn_from_tool_calls is True


def test_the_api_token_comes_from_a_mounted_secret_and_health_has_its_own_port() -> None:
    mesh = _hardened()
    config = _config(mesh)
    assert config.api.token_file == f"{rc.SECRETS_DIR}/api/token"
    assert config.api.max_message_chars == 8192
    assert "router-api-token" not in config.to_json()  # a path, never the Secret or value
    deployment = _by_kind(_children(mesh))["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "secret-api")
    assert volume["secret"] == {
        "secretName": "router-api-token",
        "items": [{"key": "token", "path": "token"}],
    }
    orchestrator = pod["containers"][0]
    mount = next(m for m in orchestrator["volumeMounts"] if m["name"] == "secret-api")
    assert mount == {"name": "secret-api", "mountPath": f"{rc.SECRETS_DIR}/api", "readOnly": True}
    args = orchestrator["args"]
    assert args[args.index("--ops-port") + 1] == str(rc.OPERATIONS_PORT)
    ports = {p["name"]: p["containerPort"] for p in orchestrator["ports"]}
    assert ports == {"http": rc.ORCHESTRATOR_PORT, "ops": rc.OPERATIONS_PORT}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert orchestrator[probe]["httpGet"]["port"] == "ops"  # probes carry no token
    service = _by_kind(_children(mesh))["Service"]
    targets = {p["name"]: p["targetPort"] for p in service["spec"]["ports"]}
    assert targets == {"http": "http", "metrics": "ops"}
    # Without a token Secret: no secret volume for it and no token file in the config.
    plain = _by_kind(_children(_mesh()))["Deployment"]["spec"]["template"]["spec"]
    assert all(v["name"] != "secret-api" for v in plain["volumes"])
    assert _config().api.token_file is None


def test_the_network_policy_opens_only_the_router_ports_and_the_known_endpoints() -> None:
    assert "NetworkPolicy" not in _by_kind(_children(_mesh()))  # opt-in
    policy = _by_kind(_children(_hardened()))["NetworkPolicy"]
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": b.selector_labels(_hardened())}
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    api_rule, ops_rule = spec["ingress"]
    assert api_rule["ports"] == [{"protocol": "TCP", "port": rc.ORCHESTRATOR_PORT}]
    assert api_rule["from"] == HARDENED["networkPolicy"]["apiFrom"]
    assert ops_rule["ports"] == [{"protocol": "TCP", "port": rc.OPERATIONS_PORT}]
    assert ops_rule["from"] == HARDENED["networkPolicy"]["operationsFrom"]

    def to_namespace(name: str) -> dict[str, Any]:
        selector = {"matchLabels": {"kubernetes.io/metadata.name": name}}
        return {"to": [{"namespaceSelector": selector}]}

    assert spec["egress"] == [
        {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
        to_namespace("mcp"),  # the four Service targets, once
        to_namespace("agents"),  # the escalation Service
        {"ports": [{"protocol": "TCP", "port": 6379}]},  # Redis, its URL in a Secret
    ]
    # Without peers, any client may reach the two ports; URL targets open their port only.
    open_mesh = _mesh(
        {
            "spec.networkPolicy": {
                "enabled": True,
                "extraEgress": [{"ports": [{"protocol": "TCP", "port": 4317}]}],
            },
            "spec.cache.redis": {"url": "redis://redis.infra.svc:6379/0"},
            "spec.escalation.target": {"url": "https://api.example.com/v1/escalate"},
        }
    )
    loose = _by_kind(_children(open_mesh))["NetworkPolicy"]["spec"]
    assert all("from" not in rule for rule in loose["ingress"])
    assert {"ports": [{"protocol": "TCP", "port": 443}]} in loose["egress"]
    assert to_namespace("infra") in loose["egress"]
    assert loose["egress"][-1] == {"ports": [{"protocol": "TCP", "port": 4317}]}


# --- L0's trained head -------------------------------------------------------------------------

HEAD = {"enabled": True, "epochs": 2}


def test_a_head_gets_an_artifact_path_keyed_by_its_inputs() -> None:
    config = _config(_mesh({"spec.layers.l0.head": HEAD}))
    head = layer_of(config, "l0").head
    assert head is not None
    assert head.path.startswith(f"{rc.HEADS_DIR}/") and len(head.path.split("/")[1]) == 16
    assert head.base.uri == api.DEFAULT_HEAD_BASE.uri
    assert head.base.path == rc.model_dir_name(api.DEFAULT_HEAD_BASE.uri)
    # The same inputs give the same key; new training settings or examples a new one.
    assert layer_of(_config(_mesh({"spec.layers.l0.head": HEAD})), "l0").head == head
    other = _config(_mesh({"spec.layers.l0.head": {**HEAD, "epochs": 3}}))
    assert layer_of(other, "l0").head.path != head.path  # type: ignore[union-attr]
    table = _table()
    changed = table.model_copy(
        update={
            "spec": table.spec.model_copy(
                update={
                    "routes": [
                        table.spec.routes[0].model_copy(update={"examples": ["a new example"]}),
                        *table.spec.routes[1:],
                    ]
                }
            )
        }
    )
    moved = render_config(_mesh({"spec.layers.l0.head": HEAD}), [changed])
    assert layer_of(moved, "l0").head.path != head.path  # type: ignore[union-attr]
    # A threshold is not a training input.
    same = _config(_mesh({"spec.layers.l0.head": HEAD, "spec.layers.l0.threshold": 0.7}))
    assert layer_of(same, "l0").head == head
    # Nor is the head's own threshold or calibration: set them, and the artifact stays.
    settings = {"threshold": 0.94, "calibration": {"slope": 0.7, "intercept": 0.9}}
    tuned = layer_of(_config(_mesh({"spec.layers.l0.head": {**HEAD, **settings}})), "l0").head
    assert tuned is not None and tuned.path == head.path
    assert (tuned.threshold, tuned.calibration) == (0.94, (0.7, 0.9))
    # Off by default: no head, no Job.
    assert layer_of(_config(), "l0").head is None


def test_the_download_job_also_fetches_the_head_base() -> None:
    config = _config(_mesh({"spec.layers.l0.head": HEAD}))
    head = layer_of(config, "l0").head
    assert head is not None
    job = b.build_download_job(_mesh({"spec.layers.l0.head": HEAD}), config)
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    items = items_from_json(args[args.index("--items-json") + 1])
    assert (head.base.uri, head.base.path) in [(i.uri, i.path) for i in items]


@pytest.mark.parametrize("version", VERSIONS)
def test_the_training_job_validates_and_trains_the_configs_head(version: str) -> None:
    mesh = _mesh({"spec.layers.l0.head": HEAD})
    config = _config(mesh)
    head = layer_of(config, "l0").head
    assert head is not None
    job = b.build_training_job(mesh, head)
    kubernetes_validate.validate(job, version, strict=True)
    assert job["metadata"]["name"] == b.training_job_name(mesh, head)
    pod = job["spec"]["template"]["spec"]
    assert _restricted_violations(pod) == []
    container = pod["containers"][0]
    args = container["args"]
    assert args[0] == "train-head"
    assert args[args.index("--expect-path") + 1] == head.path
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["models"] == {"name": "models", "mountPath": "/models"}  # writes the artifact
    assert mounts["config"]["readOnly"] is True
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "3Gi"}


def test_the_training_job_is_desired_once_the_models_are_active_until_trained() -> None:
    mesh = _mesh({"spec.layers.l0.head": HEAD})
    config = _config(mesh)
    head = layer_of(config, "l0").head
    assert head is not None
    name = b.training_job_name(mesh, head)

    def jobs(active: rc.RouterConfig | None, trained: bool = False) -> list[str]:
        return [
            c["metadata"]["name"]
            for c in b.desired_children(mesh, config, active, head_trained=trained)
            if c["kind"] == "Job"
        ]

    assert name not in jobs(None)  # the base encoder is not downloaded yet
    old = _config()  # the running set before the head was enabled
    assert name not in jobs(b.with_models_of(config, old))
    assert name in jobs(config)
    assert jobs(config, trained=True) == []  # a Job gone after its TTL is not made again


def test_the_largest_table_fits_its_configmap_and_pod_with_both_judges() -> None:
    """64 routes x 50 examples of the longest length (the API's limits): the ConfigMap stays
    under the API server's 1 MiB, the pod gets both model servers, and every child
    validates; the judges' prompts do not grow with the table (their context is the
    layer's, 4096 tokens by default, read by serve-model from the config)."""
    routes = [
        {
            "name": f"svc{i:02d}",
            "description": "d" * api.MAX_DESCRIPTION_LENGTH,
            "examples": [
                f"e{i:02d}-{j:02d}-" + "x" * (api.MAX_EXAMPLE_LENGTH - 7) for j in range(50)
            ],
            "target": {"url": f"http://svc{i:02d}.mcp.svc:8000/mcp"},
        }
        for i in range(api.MAX_ROUTES_PER_TABLE)
    ]
    table = api.parse(
        api.RouteTable,
        {
            "apiVersion": api.API_GROUP_VERSION,
            "kind": "RouteTable",
            "metadata": {
                "name": "homelab",
                "namespace": "tools",
                "labels": {"routermesh.io/mesh": "homelab"},
            },
            "spec": {"routes": routes},
        },
    )
    mesh = _mesh()
    config = render_config(mesh, [table])
    children = _by_kind(b.desired_children(mesh, config, config))
    data = children["ConfigMap"]["data"]
    assert sum(len(v.encode()) for v in data.values()) < 1024 * 1024
    containers = children["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["orchestrator", "l1", "l2"]
    assert {layer.name: layer.context_tokens for layer in config.layers if layer.name != "l0"} == {
        "l1": 4096,
        "l2": 4096,
    }
    for child in children.values():
        kubernetes_validate.validate(child, VERSIONS[-1], strict=True)
