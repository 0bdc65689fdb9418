"""``router-mesh bench mcp-table``: a RouteTable whose routes are the benchmark's MCP
servers (``router-mesh bench mcp-servers``), with ``K`` hand-written examples per route
drawn (seeded) from a train file, and descriptions only on request.

The point is the regime of a table that says little itself: with ``--examples 0`` and no
descriptions a route's only evidence is what its server lists (tool names and
descriptions, discovered over MCP). Route names and the table's labels are those of the
reference table (``bench/data/tools/routetable.yaml``), so the same eval rows apply.

    router-mesh bench mcp-table --servers bench/data/tools/servers.json \\
        --train bench/data/tools/train.jsonl --examples 3 --port 9300 --out table.yaml
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from routermesh.operator import api
from routermesh.runtime.contract.config import ESCALATE_ROUTE, route_name_from_label
from routermesh_bench.mcp_servers import ToolServerSpec, read_servers


class McpTableError(ValueError):
    pass


@dataclass(frozen=True)
class McpTableOptions:
    servers: Path
    train: Path | None
    examples: int = 0
    port: int = 9300
    host: str = "127.0.0.1"
    descriptions: bool = False
    reference: Path | None = None
    """The table whose route names, labels and descriptions this one takes."""
    seed: int = 0
    ping_seconds: int = 30
    max_tools: int | None = None
    """``mcp.maxTools`` (None: the product's default)."""


def mcp_url(host: str, port: int, server: str) -> str:
    return f"http://{host}:{port}/{server}/mcp"


def draw_examples(
    rows: Sequence[tuple[str, str]], routes: Sequence[str], k: int, seed: int
) -> dict[str, list[str]]:
    """``k`` distinct examples per route (fewer where the route has fewer), drawn from
    ``(text, route)`` rows with one seeded generator over the routes in sorted order;
    texts are flattened to one line and cut to what a RouteTable takes."""
    if k < 0:
        raise McpTableError("--examples must not be negative")
    grouped: defaultdict[str, list[str]] = defaultdict(list)
    for text, label in rows:
        flat = " ".join(text.split())
        if label == ESCALATE_ROUTE or not 0 < len(flat) <= api.MAX_EXAMPLE_LENGTH:
            continue
        grouped[route_name_from_label(label)].append(flat)
    rng = random.Random(seed)  # noqa: S311 - a sample, not a secret
    drawn: dict[str, list[str]] = {}
    for route in sorted(routes):
        texts = list(dict.fromkeys(grouped.get(route, [])))
        drawn[route] = rng.sample(texts, min(k, len(texts))) if k else []
    return drawn


def _train_rows(path: Path) -> list[tuple[str, str]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise McpTableError(f'{path}:{number}: expected an object with "text" and "route"')
        if not isinstance(row.get("route"), str):
            raise McpTableError(f'{path}:{number}: expected an object with "text" and "route"')
        rows.append((row["text"], row["route"]))
    return rows


def _reference(path: Path | None) -> tuple[dict[str, Any], dict[str, str]]:
    """The reference table's metadata and route descriptions."""
    if path is None:
        return {"name": "tools", "labels": {"routermesh.io/mesh": "tools"}}, {}
    tables = [
        doc
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8"))
        if isinstance(doc, dict) and doc.get("kind") == "RouteTable"
    ]
    if len(tables) != 1:
        raise McpTableError(f"{path}: expected one RouteTable, found {len(tables)}")
    metadata = tables[0].get("metadata") or {}
    routes = (tables[0].get("spec") or {}).get("routes") or []
    return (
        {k: v for k, v in metadata.items() if k in ("name", "namespace", "labels")},
        {r["name"]: r.get("description", "") for r in routes},
    )


def mcp_table(
    specs: Sequence[ToolServerSpec],
    examples: dict[str, list[str]],
    *,
    metadata: dict[str, Any],
    descriptions: dict[str, str],
    options: McpTableOptions,
) -> dict[str, Any]:
    """The RouteTable manifest (validated by the operator's model)."""
    mcp: dict[str, Any] = {"pingSeconds": options.ping_seconds}
    if options.max_tools is not None:
        mcp["maxTools"] = options.max_tools
    routes = []
    for spec in sorted(specs, key=lambda s: s.name):
        route: dict[str, Any] = {"name": spec.name}
        if options.descriptions:
            text = descriptions.get(spec.name) or spec.description
            route["description"] = text[: api.MAX_DESCRIPTION_LENGTH]
        if examples.get(spec.name):
            route["examples"] = list(examples[spec.name])
        route["target"] = {"url": mcp_url(options.host, options.port, spec.name), "mcp": dict(mcp)}
        routes.append(route)
    manifest = {
        "apiVersion": api.API_GROUP_VERSION,
        "kind": "RouteTable",
        "metadata": metadata,
        "spec": {"routes": routes},
    }
    api.RouteTable.model_validate(manifest)
    return manifest


def build(options: McpTableOptions) -> dict[str, Any]:
    specs = read_servers(options.servers, in_table_only=True)
    metadata, descriptions = _reference(options.reference)
    if descriptions and set(descriptions) != {s.name for s in specs}:
        missing = sorted(set(descriptions) ^ {s.name for s in specs})
        raise McpTableError(
            f"the in-table servers and {options.reference}'s routes differ: {', '.join(missing)}"
        )
    if options.examples and options.train is None:
        raise McpTableError("--examples draws its examples from --train")
    rows = _train_rows(options.train) if options.train and options.examples else []
    examples = draw_examples(rows, [s.name for s in specs], options.examples, options.seed)
    short = sorted(r for r, texts in examples.items() if len(texts) < options.examples)
    if short:
        raise McpTableError(f"fewer than {options.examples} train rows for: {', '.join(short)}")
    return mcp_table(specs, examples, metadata=metadata, descriptions=descriptions, options=options)


def header(options: McpTableOptions, argv: Sequence[str]) -> str:
    return (
        "# Generated by `router-mesh bench mcp-table` (bench/routermesh_bench/mcp_table.py) "
        "from bench/data/tools (BFCL, Apache-2.0).\n"
        f"# {' '.join(argv)}\n"
        f"# Routes: the in-table servers of {options.servers}, served by "
        f"`router-mesh bench mcp-servers --port {options.port}`; "
        f"{options.examples} examples per route, descriptions "
        f"{'on' if options.descriptions else 'off'}.\n"
    )


def write(options: McpTableOptions, out: Path, argv: Sequence[str]) -> dict[str, Any]:
    manifest = build(options)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        header(options, argv) + yaml.safe_dump(manifest, sort_keys=False, width=100),
        encoding="utf-8",
    )
    return manifest
