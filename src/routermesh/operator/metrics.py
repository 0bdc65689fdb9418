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
MCP_UNAVAILABLE = Gauge(
    "router_mesh_operator_mcp_unavailable_routes",
    "Routes of a RouterMesh whose MCP server no ready router pod reaches (status.mcpServers).",
    ["namespace", "mesh"],
)
ROUTETABLES = Gauge(
    "router_mesh_operator_routetables",
    "RouteTables by their Accepted condition and whether they carry route-quality warnings.",
    ["accepted", "warnings"],
)
MODEL_GATE = Counter(
    "router_mesh_operator_model_gate_total",
    "Which model set a reconcile gave the pods, by decision (see gating.Decision).",
    ["decision"],
)
PRUNED = Counter(
    "router_mesh_operator_pruned_total", "Children deleted as no longer desired.", ["kind"]
)
TRIGGERS = Counter(
    "router_mesh_operator_reconcile_triggers_total",
    "What started a RouterMesh reconcile (spec, resync, routetable, child).",
    ["trigger"],
)
CHILD_EVENTS = Counter(
    "router_mesh_operator_child_events_total",
    "Watch events of owned Jobs and Deployments, by kind and whether they changed anything"
    " the status depends on.",
    ["kind", "relevant"],
)
