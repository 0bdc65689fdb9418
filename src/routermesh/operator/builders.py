"""Pure builders of a RouterMesh's children: plain dicts, no client, no clock.

One function per child (ConfigMap, PVC, download Job, Deployment, Service, HPA, and the
optional NetworkPolicy) and
:func:`desired_children` for the set. The handlers apply what these return with
server-side apply and delete the mesh's children that are no longer in the set.

What the set guarantees:

- every child carries the ``app.kubernetes.io/*`` labels and ``routermesh.io/mesh``, and
  an ownerReference to the RouterMesh (deletion cascades); nothing is copied from the
  parent's labels or annotations, so GitOps tools never mistake a child for their own;
- the config is a mounted directory (never ``subPath``), so a ConfigMap change reaches
  running pods and the orchestrator reloads it: threshold, timeout, route and target
  changes never touch the pod template;
- the pod template changes only with the *active* model set (annotation
  ``routermesh.io/models``) and the spec's pod settings, so a model change rolls the pods
  only once its download Job has succeeded (the caller passes the active set); the
  Deployment itself carries that set (``routermesh.io/model-set``), so it is known even
  when the ConfigMap is gone;
- pods run as a non-root numeric user with a read-only root filesystem, no privilege
  escalation, all capabilities dropped, the RuntimeDefault seccomp profile and no
  service-account token (the restricted Pod Security Standard);
- ``spec.replicas`` is left out when the HPA owns the replica count.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any
from urllib.parse import urlsplit

from routermesh.operator.api import Resources, RouterMesh, SecretKeyRef
from routermesh.operator.modelset import ANNOTATION as MODEL_SET_ANNOTATION
from routermesh.operator.modelset import ModelSet, with_model_set
from routermesh.runtime.contract import config as rc
from routermesh.runtime.contract.models import (
    FetchItem,
    items_digest,
    items_from_config,
    items_to_json,
)

Manifest = dict[str, Any]

MESH_LABEL = "routermesh.io/mesh"
MODELS_ANNOTATION = "routermesh.io/models"
CONFIG_HASH_ANNOTATION = "routermesh.io/config-hash"
MANAGED_BY = "router-mesh-operator"
RUNTIME_UID = 10001
METRICS_PORT = rc.OPERATIONS_PORT
DNS_PORT = 53
DOWNLOAD_BACKOFF_LIMIT = 4
DOWNLOAD_TTL_SECONDS = 86400
"""Finished download Jobs are kept a day for `kubectl logs`; the ConfigMap remembers the
active model set after that."""

_API_VERSION = "routermesh.io/v1alpha1"


def names(mesh: RouterMesh) -> dict[str, str]:
    base = mesh.metadata.name
    return {
        "config": f"{base}-config",
        "models": f"{base}-models",
        "deployment": base,
        "service": base,
        "hpa": base,
        "network_policy": base,
    }


def job_name(mesh: RouterMesh, models_hash: str) -> str:
    return f"{mesh.metadata.name}-models-{models_hash[:8]}"


def training_job_name(mesh: RouterMesh, head: rc.HeadConfig) -> str:
    return f"{mesh.metadata.name}-train-{head.path.rsplit('/', 1)[-1][:10]}"


def l0_head(config: rc.RouterConfig) -> rc.HeadConfig | None:
    """L0's trained head in ``config`` when the layer runs and has one."""
    return next(
        (layer.head for layer in config.layers if layer.name == "l0" and layer.enabled),
        None,
    )


def labels(mesh: RouterMesh, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "router-mesh",
        "app.kubernetes.io/instance": mesh.metadata.name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "router-mesh",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        MESH_LABEL: mesh.metadata.name,
    }


def selector_labels(mesh: RouterMesh) -> dict[str, str]:
    """The Deployment's selector: immutable, so only what never changes."""
    return {
        "app.kubernetes.io/name": "router-mesh",
        "app.kubernetes.io/instance": mesh.metadata.name,
        "app.kubernetes.io/component": "router",
    }


def owner_reference(mesh: RouterMesh) -> dict[str, Any]:
    return {
        "apiVersion": _API_VERSION,
        "kind": "RouterMesh",
        "name": mesh.metadata.name,
        "uid": mesh.metadata.uid or "",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(
    mesh: RouterMesh, name: str, component: str, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": mesh.metadata.namespace,
        "labels": labels(mesh, component),
        "ownerReferences": [owner_reference(mesh)],
    }
    if annotations:
        metadata["annotations"] = annotations
    return metadata


def model_items(config: rc.RouterConfig) -> list[FetchItem]:
    """What the download Job fetches for ``config`` (its enabled layers and example sets)."""
    return items_from_config(config)


def models_hash(config: rc.RouterConfig) -> str:
    return items_digest(model_items(config))


# --- security ------------------------------------------------------------------------------------


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUNTIME_UID,
        "runAsGroup": RUNTIME_UID,
        "fsGroup": RUNTIME_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _resources(resources: Resources) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if resources.requests:
        out["requests"] = dict(resources.requests)
    if resources.limits:
        out["limits"] = dict(resources.limits)
    return out


def cpu_threads(resources: Resources) -> int:
    """Threads for a model server: its CPU limit (else request), rounded up; at least 1."""
    quantity = (resources.limits or {}).get("cpu") or (resources.requests or {}).get("cpu")
    if not quantity:
        return 1
    text = str(quantity)
    value = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    return max(1, math.ceil(value))


# --- children ------------------------------------------------------------------------------------


def build_configmap(mesh: RouterMesh, config: rc.RouterConfig) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(
            mesh,
            names(mesh)["config"],
            "config",
            {CONFIG_HASH_ANNOTATION: config.config_hash},
        ),
        "data": {rc.CONFIG_FILENAME: config.to_json()},
    }


def build_pvc(mesh: RouterMesh) -> Manifest:
    storage = mesh.spec.storage
    spec: dict[str, Any] = {
        "accessModes": list(storage.access_modes),
        "resources": {"requests": {"storage": storage.size}},
    }
    if storage.storage_class_name:
        spec["storageClassName"] = storage.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _metadata(mesh, names(mesh)["models"], "models"),
        "spec": spec,
    }


def _image(mesh: RouterMesh) -> dict[str, Any]:
    return {"image": mesh.spec.images.runtime, "imagePullPolicy": mesh.spec.images.pull_policy}


def _pod_common(mesh: RouterMesh) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(),
    }
    images = mesh.spec.images
    if images.pull_secrets:
        spec["imagePullSecrets"] = [{"name": ref.name} for ref in images.pull_secrets]
    scheduling = mesh.spec.scheduling
    if scheduling.node_selector:
        spec["nodeSelector"] = dict(scheduling.node_selector)
    if scheduling.tolerations:
        spec["tolerations"] = [
            t.model_dump(by_alias=True, exclude_none=True) for t in scheduling.tolerations
        ]
    if scheduling.affinity:
        spec["affinity"] = scheduling.affinity
    if scheduling.priority_class_name:
        spec["priorityClassName"] = scheduling.priority_class_name
    return spec


def build_download_job(mesh: RouterMesh, config: rc.RouterConfig) -> Manifest:
    """The Job filling the models volume for ``config``'s model set; its name carries the
    set's hash, so a new set gets a new Job (a Job's pod template is immutable)."""
    digest = models_hash(config)
    container = {
        "name": "fetch-models",
        **_image(mesh),
        "args": [
            "fetch-models",
            "--models-dir",
            rc.MODELS_DIR,
            "--items-json",
            items_to_json(model_items(config)),
        ],
        "volumeMounts": [
            {"name": "models", "mountPath": rc.MODELS_DIR},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir
        ],
        "resources": {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"cpu": "1", "memory": "1Gi"},
        },
        "securityContext": container_security_context(),
    }
    # Each retry resumes: fetch-models keeps partial downloads on the volume.
    return _job(
        mesh,
        _metadata(mesh, job_name(mesh, digest), "models", {MODELS_ANNOTATION: digest}),
        "models",
        container,
        [],
        backoff=DOWNLOAD_BACKOFF_LIMIT,
        tmp="256Mi",
    )


def _job(
    mesh: RouterMesh,
    metadata: dict[str, Any],
    component: str,
    container: dict[str, Any],
    volumes: list[dict[str, Any]],
    *,
    backoff: int,
    tmp: str,
) -> Manifest:
    """A run-to-completion Job on the models volume (and ``volumes``), kept a day."""
    pod_spec = {
        **_pod_common(mesh),
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": [
            *volumes,
            {"name": "models", "persistentVolumeClaim": {"claimName": names(mesh)["models"]}},
            {"name": "tmp", "emptyDir": {"sizeLimit": tmp}},
        ],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": backoff,
            "ttlSecondsAfterFinished": DOWNLOAD_TTL_SECONDS,
            "template": {"metadata": {"labels": labels(mesh, component)}, "spec": pod_spec},
        },
    }


TRAINING_BACKOFF_LIMIT = 2


def build_training_job(mesh: RouterMesh, head: rc.HeadConfig) -> Manifest:
    """The Job that trains L0's head into ``head.path`` on the models volume (the name
    carries the path's key). It reads the mesh's ConfigMap and refuses to train if that is
    not yet the config it was made for (``--expect-path``; the retry sees the new one)."""
    container = {
        "name": "train-head",
        **_image(mesh),
        "args": [
            "train-head",
            "--config-dir",
            rc.CONFIG_DIR,
            "--models-dir",
            rc.MODELS_DIR,
            "--layer",
            "l0",
            "--expect-path",
            head.path,
        ],
        "volumeMounts": [
            {"name": "config", "mountPath": rc.CONFIG_DIR, "readOnly": True},
            {"name": "models", "mountPath": rc.MODELS_DIR},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir
        ],
        "resources": _resources(mesh.spec.layers.l0.head.resources),
        "securityContext": container_security_context(),
    }
    return _job(
        mesh,
        _metadata(mesh, training_job_name(mesh, head), "training"),
        "training",
        container,
        [{"name": "config", "configMap": {"name": names(mesh)["config"]}}],
        backoff=TRAINING_BACKOFF_LIMIT,
        tmp="1Gi",
    )


def _secret_volume(use: str, ref: SecretKeyRef) -> tuple[dict[str, Any], dict[str, Any]]:
    volume = {
        "name": f"secret-{use}",
        "secret": {"secretName": ref.name, "items": [{"key": ref.key, "path": ref.key}]},
    }
    mount = {"name": f"secret-{use}", "mountPath": f"{rc.SECRETS_DIR}/{use}", "readOnly": True}
    return volume, mount


def _mcp_secret_volumes(config: rc.RouterConfig) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """One read-only mount per Secret that routes' MCP credentials come from, at the
    folder their ``credentials_file`` names (``MCP_SECRETS_DIR``), with only the keys
    they name. Optional: a missing Secret or key leaves the file absent, the server
    refuses the orchestrator and only that route is unavailable (it fails open and the
    status says why) instead of the whole router pod never starting."""
    prefix = f"{rc.MCP_SECRETS_DIR}/"
    keys: dict[str, set[str]] = {}
    for route in config.routes:
        path = route.mcp.credentials_file if route.mcp else None
        if path and path.startswith(prefix):
            secret, key = path[len(prefix) :].split("/", 1)
            keys.setdefault(secret, set()).add(key)
    out = []
    for secret in sorted(keys):
        name = f"secret-mcp-{hashlib.sha256(secret.encode()).hexdigest()[:12]}"
        volume = {
            "name": name,
            "secret": {
                "secretName": secret,
                "items": [{"key": key, "path": key} for key in sorted(keys[secret])],
                "optional": True,
            },
        }
        mount = {"name": name, "mountPath": prefix + secret, "readOnly": True}
        out.append((volume, mount))
    return out


def _http_probe(path: str, port: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 2,
    }


def _orchestrator(mesh: RouterMesh, secret_mounts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": "orchestrator",
        **_image(mesh),
        "args": [
            "orchestrator",
            "--config-dir",
            rc.CONFIG_DIR,
            "--port",
            str(rc.ORCHESTRATOR_PORT),
            # Health and metrics on their own port: never behind the API token, and a
            # NetworkPolicy can open each port to different clients.
            "--ops-port",
            str(rc.OPERATIONS_PORT),
            "--log-level",
            mesh.spec.orchestrator.log_level,
        ],
        "ports": [
            {"name": "http", "containerPort": rc.ORCHESTRATOR_PORT, "protocol": "TCP"},
            {"name": "ops", "containerPort": rc.OPERATIONS_PORT, "protocol": "TCP"},
        ],
        # L0's encoder runs in this container: as many threads as its CPU allows, not the
        # node's core count (which would only be throttled).
        "env": [
            {
                "name": "ROUTER_MESH_L0_THREADS",
                "value": str(cpu_threads(mesh.spec.orchestrator.resources)),
            }
        ],
        "startupProbe": _http_probe("/healthz", "ops", 2, 30),
        "livenessProbe": _http_probe("/healthz", "ops", 10, 3),
        # /readyz: config loaded and every layer's model server answering and warm.
        "readinessProbe": _http_probe("/readyz", "ops", 5, 3),
        "resources": _resources(mesh.spec.orchestrator.resources),
        "securityContext": container_security_context(),
        "volumeMounts": [
            {"name": "config", "mountPath": rc.CONFIG_DIR, "readOnly": True},
            {"name": "models", "mountPath": rc.MODELS_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir
            *secret_mounts,
        ],
    }


def _model_server(mesh: RouterMesh, layer: rc.LayerConfig, resources: Resources) -> dict[str, Any]:
    port = rc.LAYER_PORTS[layer.name]
    port_name = f"{layer.name}-http"
    return {
        "name": layer.name,
        **_image(mesh),
        "args": [
            "serve-model",
            "--layer",
            layer.name,
            "--config-dir",
            rc.CONFIG_DIR,
            "--models-dir",
            rc.MODELS_DIR,
            "--threads",
            str(cpu_threads(resources)),
            # The pod network: kubelet probes reach it there; the Service exposes only :8080.
            "--host",
            "0.0.0.0",  # noqa: S104
        ],
        "ports": [{"name": port_name, "containerPort": port, "protocol": "TCP"}],
        # Loading a model takes seconds (llama.cpp) to minutes (vLLM compiles).
        "startupProbe": _http_probe("/health", port_name, 5, 60),
        "livenessProbe": _http_probe("/health", port_name, 10, 6),
        "readinessProbe": _http_probe("/health", port_name, 5, 3),
        "resources": _resources(resources),
        "securityContext": container_security_context(),
        "volumeMounts": [
            {"name": "config", "mountPath": rc.CONFIG_DIR, "readOnly": True},
            {"name": "models", "mountPath": rc.MODELS_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir
        ],
    }


def build_deployment(mesh: RouterMesh, active: rc.RouterConfig) -> Manifest:
    """The router pods, serving the *active* model set (whose download has succeeded)."""
    spec = mesh.spec
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": names(mesh)["config"]}},
        {
            "name": "models",
            "persistentVolumeClaim": {"claimName": names(mesh)["models"], "readOnly": True},
        },
        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
    ]
    secret_mounts = []
    secrets = [
        ("redis", spec.cache.redis.url_secret_ref if spec.cache.redis else None),
        ("escalation", spec.escalation.credentials_secret_ref),
        ("api", spec.api.token_secret_ref),
    ]
    for use, ref in secrets:
        if ref is not None:
            volume, mount = _secret_volume(use, ref)
            volumes.append(volume)
            secret_mounts.append(mount)
    for volume, mount in _mcp_secret_volumes(active):
        volumes.append(volume)
        secret_mounts.append(mount)
    layer_resources = {"l1": spec.layers.l1.resources, "l2": spec.layers.l2.resources}
    containers = [_orchestrator(mesh, secret_mounts)] + [
        _model_server(mesh, layer, layer_resources[layer.name])
        for layer in active.layers
        if layer.enabled and layer.kind == "generative"  # L0 runs in the orchestrator
    ]
    pod_labels = {**labels(mesh, "router"), **selector_labels(mesh)}
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(mesh)},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        },
        "template": {
            "metadata": {
                "labels": pod_labels,
                "annotations": {MODELS_ANNOTATION: models_hash(active)},
            },
            "spec": {
                **_pod_common(mesh),
                "terminationGracePeriodSeconds": 30,
                "containers": containers,
                "volumes": volumes,
            },
        },
    }
    if not spec.scaling.autoscaling:
        deployment_spec["replicas"] = spec.scaling.replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        # The active model set, for when the running ConfigMap is gone or unreadable.
        "metadata": _metadata(
            mesh,
            names(mesh)["deployment"],
            "router",
            {MODEL_SET_ANNOTATION: ModelSet.of(active).to_annotation()},
        ),
        "spec": deployment_spec,
    }


def build_service(mesh: RouterMesh) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(mesh, names(mesh)["service"], "router"),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(mesh),
            "ports": [
                {"name": "http", "port": rc.ORCHESTRATOR_PORT, "targetPort": "http"},
                # Health and /metrics (never behind the API token); a named Service port
                # lets a ServiceMonitor select it.
                {"name": "metrics", "port": METRICS_PORT, "targetPort": "ops"},
            ],
        },
    }


def build_hpa(mesh: RouterMesh) -> Manifest:
    scaling = mesh.spec.scaling
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(mesh, names(mesh)["hpa"], "router"),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": names(mesh)["deployment"],
            },
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": scaling.target_cpu_utilization_percentage,
                        },
                    },
                },
                {
                    # Served to the HPA by prometheus-adapter (or KEDA) from the
                    # orchestrator's sliding-window gauge.
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": "router_latency_p95_seconds"},
                        "target": {
                            "type": "AverageValue",
                            "averageValue": _seconds_quantity(scaling.target_p95_latency_ms),
                        },
                    },
                },
            ],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }


def _egress_to(url: str) -> dict[str, Any]:
    """An egress rule reaching ``url``: an in-cluster Service (``name.ns.svc``) by its
    namespace on any port (a policy sees the pod's port, which the Service may map), any
    other host by the URL's port (a host name has no address a policy can name)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    labels_ = host.split(".")
    if len(labels_) >= 3 and labels_[2] == "svc":
        namespace = {"kubernetes.io/metadata.name": labels_[1]}
        return {"to": [{"namespaceSelector": {"matchLabels": namespace}}]}
    default = 443 if parts.scheme in ("https", "rediss") else 80
    return {"ports": [{"protocol": "TCP", "port": parts.port or default}]}


def build_network_policy(mesh: RouterMesh, config: rc.RouterConfig) -> Manifest:
    """Ingress to the router pods only on the API and operations ports (from the peers the
    spec names, else any); egress only to DNS, the targets, the escalation endpoint and
    Redis. Model servers talk to the orchestrator over the pod's loopback, which no
    NetworkPolicy filters; the download Job is not selected (it fetches from the sources)."""
    policy = mesh.spec.network_policy

    def ingress(port: int, peers: list[dict[str, Any]] | None) -> dict[str, Any]:
        rule: dict[str, Any] = {"ports": [{"protocol": "TCP", "port": port}]}
        if peers is not None:
            rule["from"] = peers
        return rule

    urls = [route.target for route in config.routes if route.target]
    if config.escalation.target:
        urls.append(config.escalation.target)
    if config.cache.redis_url:
        urls.append(config.cache.redis_url)
    egress: list[dict[str, Any]] = [
        {
            "ports": [
                {"protocol": "UDP", "port": DNS_PORT},
                {"protocol": "TCP", "port": DNS_PORT},
            ]
        }
    ]
    for url in urls:
        rule = _egress_to(url)
        if rule not in egress:
            egress.append(rule)
    if config.cache.redis_url_file:
        egress.append({"ports": [{"protocol": "TCP", "port": policy.redis_port}]})
    egress += policy.extra_egress or []
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(mesh, names(mesh)["network_policy"], "router"),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(mesh)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                ingress(rc.ORCHESTRATOR_PORT, policy.api_from),
                ingress(rc.OPERATIONS_PORT, policy.operations_from),
            ],
            "egress": egress,
        },
    }


def _seconds_quantity(milliseconds: int) -> str:
    """A duration in ms as a Kubernetes quantity in seconds (``100`` -> ``100m``)."""
    return f"{milliseconds}m"


def desired_children(
    mesh: RouterMesh,
    config: rc.RouterConfig,
    active: rc.RouterConfig | None,
    head_trained: bool = False,
) -> list[Manifest]:
    """Everything ``mesh`` should own now.

    ``config`` is the freshly rendered config; ``active`` is the same config with the
    model set whose download has succeeded (``config`` itself once its Job succeeded, or
    ``None`` before any did: then no pods yet). The ConfigMap carries ``active`` so a model
    server restarting mid-download still finds its model. The download Job is desired only
    while ``config``'s model set is not active: once it is, a Job removed by its TTL is
    not created again. The same holds for the training Job of L0's head: desired once
    ``config`` is active (its base encoder and example sets are on the volume) until the
    head is known trained (``head_trained``).
    """
    children = [build_pvc(mesh), build_service(mesh)]
    if mesh.spec.network_policy.enabled:
        children.append(build_network_policy(mesh, active or config))
    if active is None or models_hash(active) != models_hash(config):
        children.append(build_download_job(mesh, config))
    if active is not None:
        children += [build_configmap(mesh, active), build_deployment(mesh, active)]
        if mesh.spec.scaling.autoscaling:
            children.append(build_hpa(mesh))
    head = l0_head(config)
    if head is not None and not head_trained and active is not None and active == config:
        children.append(build_training_job(mesh, head))
    return children


CREATE_ONLY = frozenset({"Job", "PersistentVolumeClaim"})
"""Kinds applied only when missing: a Job's pod template is immutable, and a PVC's class,
access modes and size (but growth) cannot change; a new model set gets a new Job name."""


def with_models_of(config: rc.RouterConfig, source: rc.RouterConfig) -> rc.RouterConfig:
    """``config`` with the model set of ``source`` (see :func:`modelset.with_model_set`)."""
    return with_model_set(config, ModelSet.of(source))


def config_from_configmap(configmap: dict[str, Any] | None) -> rc.RouterConfig | None:
    """The config an existing ConfigMap holds (``None`` when absent or unreadable)."""
    if not configmap:
        return None
    text = (configmap.get("data") or {}).get(rc.CONFIG_FILENAME)
    if not text:
        return None
    try:
        return rc.RouterConfig.from_json(text)
    except ValueError:
        return None
