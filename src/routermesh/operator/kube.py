"""A small async Kubernetes REST client for the operator's own calls (apply, get, list,
delete, status), over httpx.

kopf watches and calls handlers; what the handlers write goes through this client, so
it is one object a test can point at an API emulator. Apply is server-side apply
(``application/apply-patch+yaml`` with a JSON body, one field manager, ``force``): the
API server creates a missing object, removes the fields this manager applied before and
no longer applies, and leaves the fields other managers own (an HPA's replicas, a user's
label). Every write names the same field manager, so the object's managedFields tell the
operator's fields from everyone else's.
"""

from __future__ import annotations

import contextlib
import re
import ssl
import time
from collections.abc import Generator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx


def _version() -> str:
    try:
        return metadata.version("router-mesh")
    except metadata.PackageNotFoundError:
        return "unknown"


FIELD_MANAGER = "router-mesh-operator"
USER_AGENT = f"{FIELD_MANAGER}/{_version()}"
"""The API server names the field manager of a write without ``fieldManager`` after the
User-Agent's product: the operator's, not its HTTP library's."""
IN_CLUSTER_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105 - a path
TOKEN_REFRESH_SECONDS = 60.0

# (apiVersion, kind) -> plural; every kind the operator writes or reads is namespaced.
PLURALS: dict[tuple[str, str], str] = {
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "PersistentVolumeClaim"): "persistentvolumeclaims",
    ("v1", "Service"): "services",
    ("v1", "Pod"): "pods",
    ("batch/v1", "Job"): "jobs",
    ("apps/v1", "Deployment"): "deployments",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscalers",
    ("networking.k8s.io/v1", "NetworkPolicy"): "networkpolicies",
    ("routermesh.io/v1alpha1", "RouterMesh"): "routermeshes",
    ("routermesh.io/v1alpha1", "RouteTable"): "routetables",
}


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def collection_path(api_version: str, kind: str, namespace: str) -> str:
    plural = PLURALS[(api_version, kind)]
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{prefix}/namespaces/{namespace}/{plural}"


def object_path(api_version: str, kind: str, namespace: str, name: str) -> str:
    return f"{collection_path(api_version, kind, namespace)}/{name}"


@dataclass(frozen=True)
class Connection:
    server: str
    token: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False
    token_file: str | None = None


def connection_from_kubeconfig() -> Connection:
    """In-cluster credentials when running in a pod, else the current kubeconfig context."""
    from kubernetes import client, config  # noqa: PLC0415 - only outside tests

    configuration = client.Configuration()
    token_file = None
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        token_file = IN_CLUSTER_TOKEN  # projected tokens rotate: re-read the file
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    api_key = configuration.api_key or {}
    raw = api_key.get("BearerToken") or api_key.get("authorization") or ""
    token = re.sub(r"^bearer\s+", "", str(raw), flags=re.IGNORECASE)
    return Connection(
        server=configuration.host,
        token=token or None,
        token_file=token_file,
        ca_file=configuration.ssl_ca_cert,
        cert_file=configuration.cert_file,
        key_file=configuration.key_file,
        insecure=not configuration.verify_ssl,
    )


class _BearerAuth(httpx.Auth):
    """The bearer token, re-read from its file at most once a minute (rotation)."""

    def __init__(self, token: str | None, token_file: str | None) -> None:
        self._token = token
        self._file = token_file
        self._read_at = 0.0

    def _current(self) -> str | None:
        if self._file and time.monotonic() - self._read_at > TOKEN_REFRESH_SECONDS:
            with contextlib.suppress(OSError):
                self._token = Path(self._file).read_text().strip() or self._token
            self._read_at = time.monotonic()
        return self._token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._current()
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        yield request


class Kube:
    def __init__(self, connection: Connection) -> None:
        context = ssl.create_default_context(cafile=connection.ca_file or None)
        if connection.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if connection.cert_file and connection.key_file:  # client-certificate auth
            context.load_cert_chain(connection.cert_file, connection.key_file)
        self._http = httpx.AsyncClient(
            base_url=connection.server,
            auth=_BearerAuth(connection.token, connection.token_file),
            verify=context,
            timeout=httpx.Timeout(30.0),
            trust_env=False,
            headers={"User-Agent": USER_AGENT},
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kw: Any) -> dict[str, Any] | None:
        response = await self._http.request(method, path, **kw)
        if response.status_code == httpx.codes.NOT_FOUND:
            return None
        if response.status_code >= 400:
            raise KubeError(response.status_code, response.text[:500])
        body = response.json() if response.content else {}
        return body if isinstance(body, dict) else {}

    async def get(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        return await self._request("GET", object_path(api_version, kind, namespace, name))

    async def list(
        self, api_version: str, kind: str, namespace: str, labels: dict[str, str]
    ) -> list[dict[str, Any]]:
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        found = await self._request(
            "GET",
            collection_path(api_version, kind, namespace),
            params={"labelSelector": selector},
        )
        items = (found or {}).get("items") or []
        # Filter here too: not every server (an emulator) applies the selector.
        return [
            item
            for item in items
            if all(
                ((item.get("metadata") or {}).get("labels") or {}).get(k) == v
                for k, v in labels.items()
            )
        ]

    async def apply(
        self, manifest: dict[str, Any], field_manager: str = FIELD_MANAGER
    ) -> dict[str, Any]:
        """Server-side apply ``manifest`` (complete: what it omits and this manager applied
        before is removed) under ``field_manager``, taking over conflicting fields."""
        meta = manifest["metadata"]
        api_version, kind = manifest["apiVersion"], manifest["kind"]
        path = object_path(api_version, kind, meta["namespace"], meta["name"])
        applied = await self._request(
            "PATCH",
            path,
            params={"fieldManager": field_manager, "force": "true"},
            json=manifest,
            headers={"Content-Type": "application/apply-patch+yaml"},
        )
        if applied is None:  # apply creates a missing object: its namespace or type is missing
            raise KubeError(httpx.codes.NOT_FOUND, f"{path}: not found")
        return applied

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        await self._request(
            "DELETE",
            object_path(api_version, kind, namespace, name),
            json={"propagationPolicy": "Background"},
        )

    async def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        await self._request(
            "PATCH",
            object_path(api_version, kind, namespace, name) + "/status",
            params={"fieldManager": FIELD_MANAGER},
            json={"status": status},
            headers={"Content-Type": "application/merge-patch+json"},
        )
