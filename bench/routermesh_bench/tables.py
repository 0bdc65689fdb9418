"""The RouteTable a benchmark routes over, from one of three sources.

- *full*: every labelled row of ``--train`` as the table's examples (a few inline,
  the whole file as ``examplesFrom``), the regime of a large labelled set;
- *few-shot* (``--few-shot K``): ``K`` examples per route drawn seeded from ``--train``,
  descriptions from ``--descriptions``, nothing else: the regime of a RouteTable a
  person writes by hand. ``--absent N`` leaves ``N`` routes (seeded) out of the table,
  so their eval rows become requests for a server that is not there;
- *a RouteTable YAML* (``--routetable``): a table as a user wrote it (the homelab
  sample, the tool-routing set), ``--absent`` aside.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from routermesh import bootstrap
from routermesh.operator import api
from routermesh.runtime.contract.config import ESCALATE_ROUTE, route_name_from_label


class TableError(ValueError):
    pass


@dataclass(frozen=True)
class TableSource:
    """Where the bench table comes from (see the module docstring)."""

    train: Path | None = None
    examples_per_route: int = 5
    few_shot: int | None = None
    descriptions: dict[str, str] = field(default_factory=dict)
    routetable: Path | None = None
    absent: int = 0
    seed: int = 0


def read_descriptions(path: Path) -> dict[str, str]:
    """A JSON object mapping route labels (dataset or route names) to descriptions."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise TableError(f"{path}: expected a JSON object of route -> description strings")
    return {route_name_from_label(k): v for k, v in data.items()}


def table_manifest(source: TableSource, name: str) -> tuple[dict[str, Any], list[str]]:
    """The RouteTable manifest named ``name`` and the routes left out of it."""
    if source.routetable is not None:
        manifest = _from_yaml(source.routetable, name)
    elif source.train is None:
        raise TableError("a bench table needs --train or --routetable")
    elif source.few_shot is not None:
        manifest = _few_shot(source.train, source, name)
    else:
        manifest = _full(source.train, source.examples_per_route, name)
    routes = manifest["spec"]["routes"]
    absent: list[str] = []
    if source.absent:
        if source.absent >= len(routes) - 1:
            raise TableError(f"--absent {source.absent} leaves fewer than two routes")
        rng = random.Random(source.seed)  # noqa: S311 - a split, not a secret
        absent = sorted(rng.sample(sorted(r["name"] for r in routes), source.absent))
        manifest["spec"]["routes"] = [r for r in routes if r["name"] not in absent]
    api.RouteTable.model_validate(manifest)
    return manifest, absent


def _full(train: Path, examples_per_route: int, name: str) -> dict[str, Any]:
    table = bootstrap.routetable_from_rows(
        bootstrap.read_rows(train),
        name=name,
        examples_per_route=examples_per_route,
        examples_from=api.ExamplesFrom(
            uri=train.resolve().as_uri(), sha256=bootstrap.sha256_of(train)
        ),
    )
    return table.manifest()


def _few_shot(train: Path, source: TableSource, name: str) -> dict[str, Any]:
    k = source.few_shot or 0
    if not 1 <= k <= api.MAX_INLINE_EXAMPLES_PER_ROUTE:
        raise TableError(f"--few-shot must be 1..{api.MAX_INLINE_EXAMPLES_PER_ROUTE}, not {k}")
    grouped: defaultdict[str, list[str]] = defaultdict(list)
    for row in bootstrap.read_rows(train):
        text = " ".join(row.text.split())
        if row.route != ESCALATE_ROUTE and 0 < len(text) <= api.MAX_EXAMPLE_LENGTH:
            grouped[route_name_from_label(row.route)].append(text)
    rng = random.Random(source.seed)  # noqa: S311 - a sample, not a secret
    routes = []
    for route in sorted(grouped):
        texts = list(dict.fromkeys(grouped[route]))
        routes.append(
            {
                "name": route,
                "description": source.descriptions.get(route, "")[: api.MAX_DESCRIPTION_LENGTH],
                "examples": rng.sample(texts, min(k, len(texts))),
                "target": {"url": f"http://{route}.mcp.svc:8080/mcp"},
            }
        )
    return {
        "apiVersion": api.API_GROUP_VERSION,
        "kind": "RouteTable",
        "metadata": {"name": name},
        "spec": {"routes": routes},
    }


def _from_yaml(path: Path, name: str) -> dict[str, Any]:
    tables = [
        doc
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8"))
        if isinstance(doc, dict) and doc.get("kind") == "RouteTable"
    ]
    if len(tables) != 1:
        raise TableError(f"{path}: expected one RouteTable, found {len(tables)}")
    table = tables[0]
    return {
        "apiVersion": table.get("apiVersion", api.API_GROUP_VERSION),
        "kind": "RouteTable",
        "metadata": {"name": name},
        "spec": table.get("spec", {}),
    }
