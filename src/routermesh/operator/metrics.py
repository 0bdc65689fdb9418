"""The operator's Prometheus metrics (served on ``--metrics-port`` by ``router-mesh operator``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter(
    "router_mesh_operator_reconciles_total", "RouterMesh reconciles by result.", ["result"]
)
RECONCILE_SECONDS = Histogram(
    "router_mesh_operator_reconcile_seconds", "Duration of one RouterMesh reconcile."
)
MESHES = Gauge("router_mesh_operator_meshes", "RouterMeshes by their Ready condition.", ["ready"])
ROUTETABLES = Gauge(
    "router_mesh_operator_routetables",
    "RouteTables by their Accepted condition and whether they carry route-quality warnings.",
    ["accepted", "warnings"],
)
