"""A RouteTable's status: Accepted (or the fields at fault), the meshes that use it,
route-quality warnings a person can act on, and what those meshes discovered from its
routes' MCP servers. Pure: bodies in, status and events out.

The meshes read every valid table whatever its status; the status is for the person who
wrote the table (``kubectl get rtable``, ``kubectl describe``), since an invalid table is
left out of its meshes and would otherwise vanish in silence.

``status.tools`` is copied from the using meshes' ``status.mcpServers`` (the mesh bodies
the writer gets carry it), not from the router pods: a mesh's reconcile is the one place
that probes its pods, and a table used by several meshes gets one entry per mesh.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from routermesh.operator import api
from routermesh.operator.render import resolve_target, selects

MIN_EXAMPLES = 5
"""Below this many examples a route is decided from too little: L0 compares requests with
its examples (and description), so a route with two phrasings misses most wordings."""
MAX_WARNINGS = 20
"""Warnings listed in the status; the last one says how many more there are."""
_SPACE = re.compile(r"\s+")
_NO_SPEC = api.RouteTableSpec.model_construct(routes=[])


@dataclass
class TableOutcome:
    status: dict[str, Any]
    events: list[tuple[str, str, str]] = field(default_factory=list)
    """(type, reason, message) to post on the RouteTable."""
    accepted: bool = True


def _normalized(text: str) -> str:
    return _SPACE.sub(" ", text).strip().casefold()


def _discovers_tools(route: api.Route) -> bool:
    return route.target.mcp is not None and route.target.mcp.discover_tools


def quality_warnings(table: api.RouteTable) -> list[str]:
    """What makes routing over this table worse, each with what to do about it. A route
    whose MCP server's tools are discovered is not told to add examples or a description:
    the tools' names and descriptions are its evidence."""
    warnings: list[str] = []
    has_file = table.spec.examples_from is not None
    for route in table.spec.routes:
        if _discovers_tools(route):
            continue
        count = len(route.examples)
        if count < MIN_EXAMPLES and not has_file:
            warnings.append(
                f"route {route.name!r} has {count} example(s): add at least {MIN_EXAMPLES} "
                "varied requests (how people really ask) so it is recognised"
            )
        if not route.description.strip():
            warnings.append(
                f"route {route.name!r} has no description: say in plain words what "
                "requests belong to it (it is evidence for the router and the judges)"
            )
    owners: dict[str, list[str]] = {}
    for route in table.spec.routes:
        for example in dict.fromkeys(_normalized(e) for e in route.examples):
            owners.setdefault(example, []).append(route.name)
    for example, routes in owners.items():
        if len(routes) > 1:
            shown = example if len(example) <= 80 else example[:77] + "..."
            warnings.append(
                f"example {shown!r} is in routes {', '.join(routes)}: an example that belongs "
                "to several routes teaches none of them; keep it in one"
            )
    if len(warnings) > MAX_WARNINGS:
        extra = len(warnings) - (MAX_WARNINGS - 1)
        warnings = [*warnings[: MAX_WARNINGS - 1], f"and {extra} more warnings"]
    return warnings


def valid_meshes(bodies: Iterable[dict[str, Any]]) -> list[api.RouterMesh]:
    """The meshes whose spec validates (an invalid mesh selects nothing)."""
    meshes = []
    for body in bodies:
        try:
            meshes.append(
                api.parse(
                    api.RouterMesh,
                    {
                        "metadata": body.get("metadata") or {},
                        "spec": body.get("spec") or {},
                    },
                )
            )
        except api.InvalidSpecError:
            continue
    return meshes


def mesh_servers(bodies: Iterable[dict[str, Any]]) -> dict[str, list[api.McpServerStatus]]:
    """Each mesh's status.mcpServers by mesh name (an entry of an unknown shape, from
    another operator version, is skipped)."""
    out: dict[str, list[api.McpServerStatus]] = {}
    for body in bodies:
        name = (body.get("metadata") or {}).get("name")
        entries = (body.get("status") or {}).get("mcpServers") or []
        if not name or not isinstance(entries, list):
            continue
        for entry in entries:
            try:
                out.setdefault(name, []).append(api.McpServerStatus.model_validate(entry))
            except ValueError:
                continue
    return out


def route_tools(
    table: api.RouteTable, used_by: list[str], servers: Mapping[str, list[api.McpServerStatus]]
) -> list[api.RouteToolsStatus]:
    """status.tools: for each route of ``table`` with an MCP target, what each mesh using
    the table reports of it. An entry for another URL (the mesh's status predates a
    change of the target) is left out until the mesh reports the new one."""
    out = []
    for route in table.spec.routes:
        if route.target.mcp is None:
            continue
        url = resolve_target(route.target, table.metadata.namespace or "")
        for mesh in used_by:
            entry = next((s for s in servers.get(mesh, []) if s.route == route.name), None)
            if entry is None or (entry.url and entry.url != url):
                continue
            out.append(
                api.RouteToolsStatus(
                    route=route.name,
                    mesh=mesh,
                    available=entry.available,
                    tools=entry.tools,
                    refreshed_at=entry.refreshed_at,
                    last_error=entry.last_error,
                )
            )
    return out[: api.MAX_TABLE_TOOL_ENTRIES]


def _metadata(body: dict[str, Any]) -> api.ObjectMeta:
    meta = body.get("metadata") or {}
    return api.ObjectMeta.model_validate(
        {k: meta[k] for k in ("name", "namespace", "labels", "generation") if k in meta}
    )


def _accepted(
    ok: bool,
    reason: str,
    message: str,
    *,
    generation: int,
    previous: dict[str, Any],
    now: str,
) -> api.Condition:
    status = "True" if ok else "False"
    before = next(
        (c for c in previous.get("conditions") or [] if c.get("type") == "Accepted"), None
    )
    since = before["lastTransitionTime"] if before and before.get("status") == status else now
    return api.Condition(
        type="Accepted",
        status=status,
        observed_generation=generation,
        last_transition_time=since,
        reason=reason,
        message=message[:32768],
    )


def table_status(
    body: dict[str, Any],
    meshes: Iterable[api.RouterMesh],
    now: str,
    servers: Mapping[str, list[api.McpServerStatus]] | None = None,
) -> TableOutcome:
    """The status ``body`` should carry, and the events its change is worth; ``servers``:
    the meshes' status.mcpServers by mesh name (see :func:`mesh_servers`)."""
    previous: dict[str, Any] = body.get("status") or {}
    meta = _metadata(body)
    generation = meta.generation or 0
    used_by = sorted(
        m.metadata.name
        for m in meshes
        # Selection reads the table's metadata only: an invalid spec is still selected.
        if selects(m, api.RouteTable.model_construct(metadata=meta, spec=_NO_SPEC))
    )
    events: list[tuple[str, str, str]] = []
    try:
        table = api.parse(
            api.RouteTable,
            {
                "apiVersion": body.get("apiVersion"),
                "kind": body.get("kind"),
                "metadata": body.get("metadata") or {},
                "spec": body.get("spec") or {},
            },
        )
    except api.InvalidSpecError as error:
        message = "left out of its meshes: " + "; ".join(error.problems)
        condition = _accepted(
            False, "InvalidSpec", message, generation=generation, previous=previous, now=now
        )
        before = _condition_of(previous)
        if before != ("False", message):
            events.append(("Warning", "InvalidSpec", message))
        status = api.RouteTableStatus(
            observed_generation=generation, conditions=[condition], used_by=used_by or None
        )
        return TableOutcome(_dump(status), events, accepted=False)

    warnings = quality_warnings(table)
    routes = len(table.spec.routes)
    message = (
        f"{routes} routes, used by {', '.join(used_by)}"
        if used_by
        else f"{routes} routes; no RouterMesh in this namespace selects this table"
    )
    condition = _accepted(True, "Valid", message, generation=generation, previous=previous, now=now)
    if _condition_of(previous)[0] == "False":
        events.append(("Normal", "Accepted", message))
    if warnings and warnings != (previous.get("warnings") or []):
        events.append(("Warning", "RouteQuality", "; ".join(warnings)))
    status = api.RouteTableStatus(
        observed_generation=generation,
        conditions=[condition],
        routes=routes,
        examples=sum(len(r.examples) for r in table.spec.routes),
        used_by=used_by or None,
        warnings=warnings or None,
        tools=route_tools(table, used_by, servers or {}) or None,
    )
    return TableOutcome(_dump(status), events)


def _condition_of(status: dict[str, Any]) -> tuple[str | None, str | None]:
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Accepted":
            return condition.get("status"), condition.get("message")
    return None, None


def _dump(status: api.RouteTableStatus) -> dict[str, Any]:
    return status.model_dump(by_alias=True, exclude_none=True, mode="json")


def merge_patch(current: dict[str, Any] | None, desired: dict[str, Any]) -> dict[str, Any]:
    """The status merge patch that turns ``current`` into ``desired``: keys that are gone
    are set to null (a merge patch never removes a key it does not name)."""
    patch: dict[str, Any] = dict(desired)
    for key in current or {}:
        if key not in desired:
            patch[key] = None
    return patch
