"""The benchmark's router: a RouteTable built from a labelled train JSONL, a
RouterMesh with the product's defaults, run by local mode's own code.

The YAML is written to ``<out>/stack/`` so a reader can rerun exactly what was
measured (``router-mesh local -f <out>/stack``).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from routermesh import bootstrap
from routermesh.local import LocalOptions, LocalPod
from routermesh.operator import api
from routermesh.runtime.config import ESCALATE_ROUTE, RouterConfig, route_name_from_label

log = logging.getLogger("routermesh.bench")

MESH = "bench"
ESCALATION_ROUTE = "escalate"


class BenchError(Exception):
    pass


@dataclass(frozen=True)
class EvalRow:
    text: str
    gold: str
    in_scope: bool


def eval_rows(
    path: Path, routes: Sequence[str], escalation_route: str, limit: int | None, seed: int
) -> list[EvalRow]:
    """The eval JSONL as gold labels of the bench mesh (out-of-scope -> escalation route).

    With ``limit``, a seeded random sample (so a quick run still sees every route).
    """
    rows = []
    known = set(routes)
    for row in bootstrap.read_rows(path):
        in_scope = row.route != ESCALATE_ROUTE
        gold = route_name_from_label(row.route) if in_scope else escalation_route
        if in_scope and gold not in known:
            raise BenchError(
                f"{path}: route {row.route!r} is not in the train set's routes "
                f"({', '.join(sorted(known))})"
            )
        rows.append(EvalRow(text=row.text, gold=gold, in_scope=in_scope))
    if not rows:
        raise BenchError(f"{path}: no rows")
    if limit is not None and limit < len(rows):
        rows = random.Random(seed).sample(rows, limit)  # noqa: S311 - sampling, not secrets
    return rows


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
    train: Path,
    out: Path,
    *,
    examples_per_route: int,
    thresholds: dict[str, float] | None = None,
    route_thresholds: dict[str, dict[str, float]] | None = None,
    layers: dict[str, Any] | None = None,
) -> Path:
    """Write the RouterMesh and the RouteTable YAML under ``out/stack``; returns the folder."""
    rows = list(bootstrap.read_rows(train))
    table = bootstrap.routetable_from_rows(
        rows,
        name=MESH,
        examples_per_route=examples_per_route,
        examples_from=api.ExamplesFrom(
            uri=train.resolve().as_uri(), sha256=bootstrap.sha256_of(train)
        ),
    )
    manifest = table.manifest()
    for route in manifest["spec"]["routes"]:
        if route["name"] in (route_thresholds or {}):
            route["thresholds"] = route_thresholds[route["name"]]  # type: ignore[index]
    folder = out / "stack"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "routetable.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False, width=100))
    (folder / "routermesh.yaml").write_text(
        yaml.safe_dump(mesh_manifest(thresholds, layers), sort_keys=False, width=100)
    )
    return folder


def start(
    folder: Path, *, port: int, models_dir: Path, state_dir: Path
) -> tuple[LocalPod, RouterConfig]:
    """Local mode's pod for the YAML in ``folder``, started and ready."""
    pod = LocalPod(
        LocalOptions(
            files=[folder],
            port=port,
            models_dir=models_dir,
            state_dir=state_dir,
            log_level="warning",
            wait_for_head=True,
        )
    )
    return pod, pod.start()
