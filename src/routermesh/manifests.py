"""Read RouterMesh and RouteTable objects from YAML files and folders.

Used by ``router-mesh validate``, ``router-mesh render`` and local mode. Every
problem is collected with the file and document it came from, so one run
reports every bad object instead of stopping at the first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from routermesh.operator.api import (
    API_GROUP_VERSION,
    InvalidSpecError,
    RouterMesh,
    RouteTable,
    parse,
)

MANIFEST_SUFFIXES = (".yaml", ".yml")


@dataclass
class Manifests:
    meshes: list[RouterMesh] = field(default_factory=list)
    tables: list[RouteTable] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    origin: dict[tuple[str, str], Path] = field(default_factory=dict)
    """(kind, name) -> the file it was read from (relative examplesFrom paths resolve there)."""


def manifest_files(paths: Iterable[Path]) -> list[Path]:
    """The YAML files named, and those directly inside the folders named, in a stable order."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix in MANIFEST_SUFFIXES))
        else:
            files.append(path)
    return files


def load(paths: Iterable[Path], *, default_namespace: str = "default") -> Manifests:
    """Parse every RouterMesh and RouteTable; other kinds are ignored (a folder may hold
    Secrets or Services next to them)."""
    out = Manifests()
    for path in manifest_files(paths):
        try:
            documents = list(yaml.safe_load_all(path.read_text()))
        except (OSError, yaml.YAMLError) as error:
            out.problems.append(f"{path}: cannot read YAML: {error}")
            continue
        for index, document in enumerate(documents):
            _add(out, path, index, document, default_namespace)
    return out


def _add(out: Manifests, path: Path, index: int, document: Any, default_namespace: str) -> None:
    if document is None:
        return
    where = f"{path} (document {index + 1})"
    if not isinstance(document, dict):
        out.problems.append(f"{where}: not a mapping")
        return
    kind = document.get("kind")
    model: type[RouterMesh] | type[RouteTable]
    if kind == "RouterMesh":
        model = RouterMesh
    elif kind == "RouteTable":
        model = RouteTable
    else:
        return
    if document.get("apiVersion") != API_GROUP_VERSION:
        out.problems.append(
            f"{where}: {kind} apiVersion must be {API_GROUP_VERSION}, "
            f"not {document.get('apiVersion')!r}"
        )
        return
    try:
        obj = parse(model, document)
    except InvalidSpecError as error:
        out.problems.append(f"{where}: {error}")
        return
    if not obj.metadata.namespace:
        obj.metadata.namespace = default_namespace
    out.origin[(obj.kind, obj.metadata.name)] = path
    if isinstance(obj, RouterMesh):
        out.meshes.append(obj)
    else:
        out.tables.append(obj)
