"""The benchmark's router: a RouteTable (:mod:`routermesh_bench.tables`), a RouterMesh
with the product's defaults, run by local mode's own code; and the eval rows.

The YAML is written to ``<out>/stack/`` so a reader can rerun exactly what was
measured (``router-mesh local -f <out>/stack``).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from routermesh.labelled import LabelledError, read_labelled
from routermesh.local import LocalOptions, LocalPod
from routermesh.operator import api
from routermesh.runtime.contract.config import RouterConfig
from routermesh_bench.tables import TableSource, table_manifest

log = logging.getLogger("routermesh_bench")

MESH = "bench"
ESCALATION_ROUTE = "escalate"


class BenchError(Exception):
    pass


@dataclass(frozen=True)
class EvalRow:
    text: str
    gold: str
    in_scope: bool
    kind: str = "in_scope"
    """``in_scope``, ``out_of_scope`` (no route handles it) or ``multi_step`` (it needs the
    routes of ``plan``); both of the last escalate."""
    plan: tuple[str, ...] = ()


def eval_rows(
    path: Path,
    routes: Sequence[str],
    escalation_route: str,
    limit: int | None,
    seed: int,
    *,
    absent: Sequence[str] = (),
) -> list[EvalRow]:
    """The eval JSONL as gold labels of the bench mesh (out-of-scope and multi-step rows ->
    the escalation route). Rows of an ``absent`` route (left out of the table) are out of
    scope.

    With ``limit``, a seeded random sample (so a quick run still sees every route).
    """
    rows = []
    known = set(routes)
    gone = set(absent)
    try:
        labelled = read_labelled(path)
    except LabelledError as error:
        raise BenchError(str(error)) from None
    for row in labelled:
        kind = row.kind
        route = row.route_name
        if kind == "in_scope" and route in gone:
            kind = "out_of_scope"
        if kind == "in_scope" and route not in known:
            raise BenchError(
                f"{path}: route {row.route!r} is not in the table's routes "
                f"({', '.join(sorted(known))})"
            )
        rows.append(
            EvalRow(
                text=row.text,
                gold=route if kind == "in_scope" else escalation_route,
                in_scope=kind == "in_scope",
                kind=kind,
                plan=row.plan,
            )
        )
    if not rows:
        raise BenchError(f"{path}: no rows")
    if limit is not None and limit < len(rows):
        rows = random.Random(seed).sample(rows, limit)  # noqa: S311 - sampling, not secrets
    return rows


JOINS = (" and ", " and then ", ", then ", ". Also, ", "; after that ")


def multi_step_rows(
    rows: Sequence[EvalRow], count: int, escalation_route: str, seed: int
) -> list[EvalRow]:
    """``count`` synthetic multi-step rows: two in-scope rows of different routes joined the
    way people join tasks (seeded). For data sets that have none of their own."""
    pool = [r for r in rows if r.kind == "in_scope"]
    if count <= 0 or len({r.gold for r in pool}) < 2:
        return []
    rng = random.Random(seed)  # noqa: S311 - sampling, not secrets
    made: list[EvalRow] = []
    while len(made) < count:
        first, second = rng.sample(pool, 2)
        if first.gold == second.gold:
            continue
        text = first.text.rstrip(" ?.!") + rng.choice(JOINS) + second.text
        made.append(
            EvalRow(
                text=text,
                gold=escalation_route,
                in_scope=False,
                kind="multi_step",
                plan=(first.gold, second.gold),
            )
        )
    return made


def mesh_manifest(
    thresholds: dict[str, float] | None = None, layers: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The bench RouterMesh: the product's defaults, selecting the bench RouteTable."""
    spec_layers: dict[str, Any] = {name: dict(v) for name, v in (layers or {}).items()}
    for name, value in (thresholds or {}).items():
        spec_layers.setdefault(name, {})["threshold"] = value
    mesh = api.RouterMesh.model_validate(
        {
            "apiVersion": api.API_GROUP_VERSION,
            "kind": "RouterMesh",
            "metadata": {"name": MESH},
            "spec": {
                "routeTables": {"names": [MESH]},
                "layers": spec_layers,
                "escalation": {"route": ESCALATION_ROUTE},
            },
        }
    )
    return mesh.manifest()


def write_stack(
    source: TableSource,
    out: Path,
    *,
    thresholds: dict[str, float] | None = None,
    route_thresholds: dict[str, dict[str, float]] | None = None,
    layers: dict[str, Any] | None = None,
) -> tuple[Path, list[str]]:
    """Write the RouterMesh and the RouteTable YAML under ``out/stack``; returns the folder
    and the routes left out of the table (``source.absent``)."""
    manifest, absent = table_manifest(source, MESH)
    for route in manifest["spec"]["routes"]:
        if route["name"] in (route_thresholds or {}):
            route["thresholds"] = route_thresholds[route["name"]]  # type: ignore[index]
    folder = out / "stack"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "routetable.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False, width=100))
    (folder / "routermesh.yaml").write_text(
        yaml.safe_dump(mesh_manifest(thresholds, layers), sort_keys=False, width=100)
    )
    return folder, absent


@dataclass(frozen=True)
class Beside:
    """What the bench stack starts beside the router (``router-mesh bench quality
    --also``): commands such as the MCP servers the routes point at."""

    also: tuple[str, ...] = ()
    tools_timeout: float = 180.0
    """Seconds to wait, once ready, for every MCP route's tools to be in use."""


_BESIDE: contextvars.ContextVar[Beside | None] = contextvars.ContextVar(
    "bench_beside", default=None
)


@contextlib.contextmanager
def beside(commands: Sequence[str], *, tools_timeout: float = 180.0) -> Iterator[None]:
    """Start ``commands`` beside every bench stack started within (``--also``)."""
    token = _BESIDE.set(Beside(also=tuple(commands), tools_timeout=tools_timeout))
    try:
        yield
    finally:
        _BESIDE.reset(token)


def start(
    folder: Path, *, port: int, models_dir: Path, state_dir: Path
) -> tuple[LocalPod, RouterConfig]:
    """Local mode's pod for the YAML in ``folder``, started and ready.

    When routes discover their tools over MCP, it also waits until every such route's
    tools are in the running config (BenchError, the pod stopped, if one has none in
    time) and writes what ``/readyz`` reported to ``folder/../mcp.json``.
    """
    extra = _BESIDE.get() or Beside()
    pod = LocalPod(
        LocalOptions(
            files=[folder],
            port=port,
            models_dir=models_dir,
            state_dir=state_dir,
            log_level="warning",
            wait_for_head=True,
            also=extra.also,
        )
    )
    config = pod.start()
    mcp_routes = [r.name for r in config.routes if r.mcp is not None and r.mcp.discover_tools]
    if mcp_routes:
        try:
            report = wait_for_tools(pod.url, mcp_routes, extra.tools_timeout)
        except BaseException:
            pod.stop()
            raise
        (folder.parent / "mcp.json").write_text(json.dumps(report, indent=1) + "\n")
    return pod, config


def tools_missing(
    readyz: dict[str, Any], routes_in_use: dict[str, int], wanted: Sequence[str]
) -> list[str]:
    """The routes of ``wanted`` whose tools are not in use yet: no tools listed by the
    server (``/readyz`` ``mcp``), or none in the running config (``/v1/config``)."""
    reports = readyz.get("mcp") or {}
    return [
        name
        for name in wanted
        if not (reports.get(name) or {}).get("tools") or not routes_in_use.get(name)
    ]


def wait_for_tools(url: str, routes: Sequence[str], timeout: float) -> dict[str, Any]:
    """Poll until every route of ``routes`` has its MCP tools in the running config;
    returns a summary of ``/readyz``'s ``mcp`` report (BenchError on timeout)."""
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    missing: list[str] = list(routes)
    readyz: dict[str, Any] = {}
    with httpx.Client(timeout=10, trust_env=False) as client:
        while True:
            try:
                readyz = client.get(f"{url}/readyz").json()
                running = client.get(f"{url}/v1/config").json()
                in_use = {r["name"]: len(r.get("tools") or ()) for r in running.get("routes", ())}
                missing = tools_missing(readyz, in_use, routes)
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
                log.warning("waiting for the MCP tools: %r", error)
                in_use = {}
            if not missing:
                break
            if time.monotonic() > deadline:
                errors = {
                    name: (readyz.get("mcp") or {}).get(name, {}).get("last_error")
                    for name in missing
                }
                raise BenchError(
                    f"MCP routes without tools after {timeout:.0f}s: {', '.join(missing)} "
                    f"(last errors: {errors})"
                )
            time.sleep(1.0)
    reports = readyz.get("mcp") or {}
    per_route = {
        name: {
            "tools": reports[name].get("tools"),
            "listed": reports[name].get("listed"),
            "tools_in_use": in_use.get(name, 0),
            "available": reports[name].get("available"),
            "server": reports[name].get("server"),
            "notes": reports[name].get("notes"),
        }
        for name in routes
    }
    summary: dict[str, Any] = {
        "waited_s": round(time.monotonic() - started, 1),
        "tools": sum(in_use.get(name, 0) for name in routes),
        "routes": per_route,
    }
    return summary
