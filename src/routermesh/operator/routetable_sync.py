"""Writes each RouteTable's status when it changes (see :mod:`routetables` for what it
says), and posts the events the change is worth. Called after RouteTable and RouterMesh
changes and on the meshes' resync; without a change it makes no API call.

Its inputs are the operator's indices of the namespace's tables and meshes; the mesh
entries carry each mesh's ``status.mcpServers``, so ``status.tools`` follows what the
meshes last wrote. A mesh's new status reaches the index through the watch after the
write, so the tables catch up at the mesh's next resync (at most one resync period
late), with no API read of their own."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from routermesh.operator.kube import Kube
from routermesh.operator.locks import LoopLocks
from routermesh.operator.metrics import ROUTETABLES
from routermesh.operator.routetables import (
    merge_patch,
    mesh_servers,
    table_status,
    valid_meshes,
)

API_VERSION = "routermesh.io/v1alpha1"
log = logging.getLogger("routermesh.operator")

Post = Callable[[dict[str, Any], str, str, str], None]
"""(body, type, reason, message): posts an event on the object."""


class TableStatuses:
    """The statuses this operator last wrote, by namespace/name: a second pass before the
    watch brings the written status back neither writes again nor posts its events twice."""

    def __init__(self) -> None:
        self._written: dict[str, dict[str, Any]] = {}
        """By namespace/name/uid: a table deleted and created again is a new object."""
        self._locks = LoopLocks()

    def forget(self, namespace: str, name: str) -> None:
        prefix = f"{namespace}/{name}/"
        self._written = {k: v for k, v in self._written.items() if not k.startswith(prefix)}
        self._count()

    async def sync(
        self,
        kube: Kube,
        namespace: str,
        tables: Iterable[dict[str, Any]],
        meshes: Iterable[dict[str, Any]],
        post: Post,
    ) -> int:
        """Bring every table of ``namespace`` to its status; the number written."""
        lock = self._locks.get(namespace)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        written = 0
        async with lock:
            bodies = list(meshes)
            parsed = valid_meshes(bodies)
            servers = mesh_servers(bodies)
            for body in tables:
                meta = body.get("metadata") or {}
                name = meta.get("name")
                if not name:
                    continue
                key = f"{namespace}/{name}/{meta.get('uid', '')}"
                current = self._written.get(key, body.get("status") or {})
                outcome = table_status({**body, "status": current}, parsed, now, servers)
                if outcome.status != current:
                    await kube.patch_status(
                        API_VERSION,
                        "RouteTable",
                        namespace,
                        name,
                        merge_patch(current, outcome.status),
                    )
                    written += 1
                    log.info(
                        "routetable status written",
                        extra={
                            "event": "routetable_status",
                            "namespace": namespace,
                            "routetable": name,
                            "accepted": outcome.accepted,
                            "warnings": len(outcome.status.get("warnings") or []),
                        },
                    )
                self._written[key] = outcome.status
                for kind, reason, message in outcome.events:
                    post(body, kind, reason, message[:1024])
        self._count()
        return written

    def _count(self) -> None:
        counts: dict[tuple[str, str], int] = {}
        for status in self._written.values():
            accepted = next(
                (
                    c.get("status", "Unknown")
                    for c in status.get("conditions") or []
                    if c.get("type") == "Accepted"
                ),
                "Unknown",
            )
            key = (accepted, "true" if status.get("warnings") else "false")
            counts[key] = counts.get(key, 0) + 1
        for accepted in ("True", "False", "Unknown"):
            for warned in ("true", "false"):
                ROUTETABLES.labels(accepted=accepted, warnings=warned).set(
                    counts.get((accepted, warned), 0)
                )
