"""The kopf handlers: a few lines each around :func:`reconcile.reconcile_mesh`.

Import this module to register them (``router-mesh operator`` does). All framework
settings live in :func:`configure`, each with the reason for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any

import kopf

from routermesh.operator.builders import MESH_LABEL
from routermesh.operator.child_events import ChildTracker, owning_mesh
from routermesh.operator.kube import Kube, connection_from_kubeconfig
from routermesh.operator.locks import LoopLocks
from routermesh.operator.metrics import (
    CHILD_EVENTS,
    MCP_UNAVAILABLE,
    MESHES,
    RECONCILE_SECONDS,
    RECONCILES,
    TRIGGERS,
)
from routermesh.operator.reconcile import (
    ConfigProbe,
    Result,
    probe_readiness,
    reconcile_mesh,
)
from routermesh.operator.routetable_sync import TableStatuses

GROUP, VERSION = "routermesh.io", "v1alpha1"
RESYNC_SECONDS = float(os.environ.get("ROUTER_MESH_RESYNC_SECONDS", "60"))
"""The default resync period; ``memo["resync_seconds"]`` overrides it per operator."""

log = logging.getLogger("routermesh.operator")
_READY: dict[str, str] = {}
"""namespace/name -> the Ready status of its last reconcile (for MESHES)."""
_LOCKS = LoopLocks()
"""namespace/name -> its reconcile lock."""


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Handler progress and the last-handled state go to annotations with our prefix, not
    # to status: status belongs to the conditions users read (kstatus).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="routermesh.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="routermesh.io", key="last-handled-configuration"
    )
    # kopf keeps this finalizer on a RouterMesh while its resync daemon runs and releases it
    # at once on deletion (no deletion handler: children go through ownerReferences).
    # With the operator down, a deleted RouterMesh waits for it to come back.
    settings.persistence.finalizer = "routermesh.io/operator"
    # Events only for warnings and what the handlers post themselves: no event per handler.
    settings.posting.level = logging.WARNING
    # Reconnect watches regularly: a silently dropped connection heals within minutes.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # Retries of a failing reconcile back off instead of hammering the API server.
    settings.queueing.error_delays = [1, 2, 5, 10, 30, 60]
    if "kube" not in memo:
        memo["kube"] = Kube(connection_from_kubeconfig())


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    kube = memo.get("kube")
    if isinstance(kube, Kube):
        await kube.close()


# kopf passes indices as extra keyword arguments, which its callback protocols (and so
# mypy) do not describe: hence the ignores on the registrations below.


@kopf.index(GROUP, VERSION, "routetables")
def routetables(namespace: str | None, body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
    return {namespace or "default": dict(body)}


@kopf.index(GROUP, VERSION, "routermeshes")
def routermeshes(namespace: str | None, name: str, **_: Any) -> dict[str, str]:
    return {namespace or "default": name}


@kopf.index(GROUP, VERSION, "routermeshes")
def mesh_selections(namespace: str | None, body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
    """Each mesh's metadata and spec (which RouteTables it selects) and its
    status.mcpServers (what it discovered from their routes): RouteTable status."""
    servers = (body.get("status") or {}).get("mcpServers")
    return {
        namespace or "default": {
            "metadata": dict(body.metadata),
            "spec": dict(body.spec),
            "status": {"mcpServers": list(servers)} if servers else {},
        }
    }


_TABLES = TableStatuses()


def _post_event(body: dict[str, Any], kind: str, reason: str, message: str) -> None:
    kopf.event(body, type=kind, reason=reason, message=message)  # type: ignore[arg-type]


async def _sync_tables(
    kube: Kube,
    namespace: str,
    tables: kopf.Index[str, Any],
    meshes: kopf.Index[str, Any],
    *,
    skip: str | None = None,
    skip_mesh: str | None = None,
) -> None:
    """RouteTable status after any change that can alter it; a failure here never fails
    the mesh's reconcile (the next pass writes it). ``skip``/``skip_mesh``: an object being
    deleted that the index may still hold."""
    try:
        await _TABLES.sync(
            kube,
            namespace,
            [t for t in tables.get(namespace, []) if t["metadata"].get("name") != skip],
            [m for m in meshes.get(namespace, []) if m["metadata"].get("name") != skip_mesh],
            _post_event,
        )
    except Exception:
        log.exception("routetable status not written", extra={"namespace": namespace})


async def _reconcile(
    kube: Kube, body: dict[str, Any], tables: kopf.Index[str, Any], probe: ConfigProbe
) -> Result:
    """One reconcile; the caller holds the mesh's lock (see :func:`_lock`)."""
    namespace = (body.get("metadata") or {}).get("namespace") or "default"
    started = time.perf_counter()
    try:
        result = await reconcile_mesh(kube, body, list(tables.get(namespace, [])), probe=probe)
    except Exception:
        RECONCILES.labels(result="error").inc()
        raise
    finally:
        RECONCILE_SECONDS.observe(time.perf_counter() - started)
    ready = next(
        (c["status"] for c in result.status.get("conditions", []) if c["type"] == "Ready"),
        "Unknown",
    )
    RECONCILES.labels(result="ready" if ready == "True" else "not_ready").inc()
    _READY[_key(body)] = ready
    _count_ready()
    meta = body.get("metadata") or {}
    MCP_UNAVAILABLE.labels(namespace=namespace, mesh=meta.get("name") or "").set(
        sum(1 for s in result.status.get("mcpServers") or [] if not s.get("available"))
    )
    return result


def _key(body: dict[str, Any] | kopf.Body) -> str:
    meta = body.get("metadata") or {}
    return f"{meta.get('namespace') or 'default'}/{meta.get('name')}"


def _lock(key: str) -> asyncio.Lock:
    """kopf runs a resource's resync daemon beside its change handlers, and RouteTable and
    child changes reconcile meshes too: one reconcile (read, apply, status write) per mesh
    at a time."""
    return _LOCKS.get(key)


def _count_ready() -> None:
    for state in ("True", "False", "Unknown"):
        MESHES.labels(ready=state).set(sum(1 for v in _READY.values() if v == state))


def _probe(memo: kopf.Memo) -> ConfigProbe:
    """How pods are asked for their config hash (a test may put its own in the memo)."""
    probe = memo.get("probe")
    return probe if callable(probe) else probe_readiness


def _post(body: kopf.Body | dict[str, Any], result: Result) -> None:
    for kind, reason, message in result.events:
        kopf.event(body, type=kind, reason=reason, message=message[:1024])  # type: ignore[arg-type]


@kopf.on.resume(GROUP, VERSION, "routermeshes")
@kopf.on.create(GROUP, VERSION, "routermeshes")
@kopf.on.update(GROUP, VERSION, "routermeshes")  # type: ignore[arg-type]
async def mesh_changed(
    body: kopf.Body,
    memo: kopf.Memo,
    routetables: kopf.Index[str, Any],
    mesh_selections: kopf.Index[str, Any],
    **_: Any,
) -> None:
    """Like every other trigger: the mesh read again under its lock and its status written
    before the lock is released. The event's body may be older than a status another
    reconcile just wrote, and a status left to kopf's patch lands after the lock: either
    way the next reconcile would compare with an old status and post its events twice."""
    namespace = body.metadata.namespace or "default"
    await _reconcile_named(memo, namespace, body.metadata.name or "", routetables, trigger="spec")
    await _sync_tables(memo["kube"], namespace, routetables, mesh_selections)


def _resync_seconds(memo: kopf.Memo) -> float:
    value = memo.get("resync_seconds")
    return float(value) if isinstance(value, int | float) and value > 0 else RESYNC_SECONDS


@kopf.daemon(GROUP, VERSION, "routermeshes", cancellation_timeout=10)  # type: ignore[arg-type]
async def resync(
    *,
    namespace: str | None,
    name: str,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped,
    routetables: kopf.Index[str, Any],
    mesh_selections: kopf.Index[str, Any],
    **_: Any,
) -> None:
    """The safety net behind the watches: a reconcile every resync period catches what no
    watched event reports (a pod's config hash, a lost event). A daemon, not a timer: its
    period is read at run time, so an operator (a test's) can run with its own."""
    namespace = namespace or "default"
    while not stopped:
        await stopped.wait(_resync_seconds(memo))
        if stopped:
            return
        try:
            await _reconcile_named(memo, namespace, name, routetables, trigger="resync")
        except Exception:
            # The next period tries again; the traceback says why this one failed.
            log.exception("resync failed", extra={"object": {"namespace": namespace, "name": name}})
        # The RouteTable status is resynced with its meshes (a write that failed is retried).
        await _sync_tables(memo["kube"], namespace, routetables, mesh_selections)


_QUEUED: dict[str, asyncio.AbstractEventLoop] = {}
"""Meshes with a reconcile waiting for their lock (and its loop): that one reads every
change that arrives meanwhile, so a burst of child events costs one reconcile, not one
each."""


async def _reconcile_named(
    memo: kopf.Memo,
    namespace: str,
    name: str,
    routetables: kopf.Index[str, Any],
    *,
    trigger: str,
) -> None:
    """Reconcile the mesh ``namespace/name`` as it is now and write its status."""
    key = f"{namespace}/{name}"
    loop = asyncio.get_running_loop()
    if _QUEUED.get(key) is loop:
        TRIGGERS.labels(trigger=f"{trigger}_coalesced").inc()
        return
    TRIGGERS.labels(trigger=trigger).inc()
    _QUEUED[key] = loop
    lock = _lock(key)
    try:
        await lock.acquire()
    finally:
        _QUEUED.pop(key, None)
    try:
        kube: Kube = memo["kube"]
        body = await kube.get(f"{GROUP}/{VERSION}", "RouterMesh", namespace, name)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return
        result = await _reconcile(kube, body, routetables, _probe(memo))
        await kube.patch_status(f"{GROUP}/{VERSION}", "RouterMesh", namespace, name, result.status)
    finally:
        lock.release()
    _post(body, result)


_CHILDREN = ChildTracker()


@kopf.on.event("batch", "v1", "jobs", labels={MESH_LABEL: kopf.PRESENT})
@kopf.on.event(  # type: ignore[arg-type]
    "apps", "v1", "deployments", labels={MESH_LABEL: kopf.PRESENT}
)
async def child_changed(
    *,
    type: str | None,
    body: kopf.Body,
    namespace: str | None,
    name: str,
    memo: kopf.Memo,
    routetables: kopf.Index[str, Any],
    **_: Any,
) -> None:
    """A download or training Job finishing, or a rollout moving on, reconciles its mesh
    at once instead of at the next resync."""
    mesh = owning_mesh(body)
    if mesh is None:
        return
    namespace = namespace or "default"
    kind = str(body.get("kind") or "")
    relevant = _CHILDREN.changed(kind, namespace, name, body, deleted=type == "DELETED")
    CHILD_EVENTS.labels(kind=kind, relevant=str(relevant).lower()).inc()
    if not relevant:
        return
    log.debug(
        "%s %s changed: reconciling its mesh",
        kind,
        name,
        extra={"object": {"namespace": namespace, "name": mesh}},
    )
    await _reconcile_named(memo, namespace, mesh, routetables, trigger="child")


@kopf.on.delete(GROUP, VERSION, "routermeshes", optional=True)  # type: ignore[arg-type]
async def mesh_deleted(
    body: kopf.Body,
    memo: kopf.Memo,
    routetables: kopf.Index[str, Any],
    mesh_selections: kopf.Index[str, Any],
    **_: Any,
) -> None:
    """Forget the mesh's lock and Ready state (its children go by ownerReferences); its
    tables' ``usedBy`` no longer names it."""
    key = _key(body)
    _LOCKS.forget(key)
    _READY.pop(key, None)
    _count_ready()
    namespace = body.metadata.namespace or "default"
    with contextlib.suppress(KeyError):
        MCP_UNAVAILABLE.remove(namespace, body.metadata.name)
    await _sync_tables(
        memo["kube"], namespace, routetables, mesh_selections, skip_mesh=body.metadata.name
    )


@kopf.on.create(GROUP, VERSION, "routetables")
@kopf.on.update(GROUP, VERSION, "routetables")
@kopf.on.delete(GROUP, VERSION, "routetables", optional=True)  # type: ignore[arg-type]
async def table_changed(
    *,
    namespace: str | None,
    name: str,
    reason: str,
    memo: kopf.Memo,
    routermeshes: kopf.Index[str, str],
    routetables: kopf.Index[str, Any],
    mesh_selections: kopf.Index[str, Any],
    **_: Any,
) -> None:
    """Re-render every mesh of the namespace (the index: no list calls per event), then
    the tables' status."""
    kube: Kube = memo["kube"]
    namespace = namespace or "default"
    if reason == "delete":
        _TABLES.forget(namespace, name)
    for mesh_name in sorted(set(routermeshes.get(namespace, []))):
        TRIGGERS.labels(trigger="routetable").inc()
        async with _lock(f"{namespace}/{mesh_name}"):
            body = await kube.get(f"{GROUP}/{VERSION}", "RouterMesh", namespace, mesh_name)
            if body is None:
                continue
            result = await _reconcile(kube, body, routetables, _probe(memo))
            await kube.patch_status(
                f"{GROUP}/{VERSION}", "RouterMesh", namespace, mesh_name, result.status
            )
        _post(body, result)
    await _sync_tables(
        kube, namespace, routetables, mesh_selections, skip=name if reason == "delete" else None
    )
