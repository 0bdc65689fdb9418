"""Import rules the design fixes: the runtime never imports the operator, and no project
module shadows or relies on the standard library's `operator`."""

from __future__ import annotations

import ast
import operator as stdlib_operator
import subprocess
import sys
from pathlib import Path

import pytest

import routermesh.operator.api
import routermesh.runtime

REPO = Path(__file__).resolve().parents[2]
RUNTIME_FILES = sorted((REPO / "src/routermesh/runtime").rglob("*.py"))
PROJECT_FILES = sorted(
    p for folder in ("src", "bench/routermesh_bench") for p in (REPO / folder).rglob("*.py")
)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", RUNTIME_FILES, ids=lambda p: p.name)
def test_runtime_never_imports_the_operator(path: Path) -> None:
    assert not {n for n in _imports(path) if n.startswith("routermesh.operator")}


@pytest.mark.parametrize("path", PROJECT_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_bare_operator_import(path: Path) -> None:
    assert not {n for n in _imports(path) if n == "operator" or n.startswith("operator.")}


def test_installed_names_map_to_the_folders() -> None:
    assert Path(routermesh.operator.api.__file__).resolve().parent == (
        REPO / "src/routermesh/operator"
    )
    assert Path(routermesh.runtime.__file__).resolve().parent == REPO / "src/routermesh/runtime"
    assert hasattr(stdlib_operator, "itemgetter")


def test_the_operator_folder_never_shadows_the_stdlib() -> None:
    """`python -c`/`python -m` put the working directory first on sys.path: no folder at
    the checkout's root may be named like the stdlib module."""
    assert not (REPO / "operator").exists() and not (REPO / "operator.py").exists()
    done = subprocess.run(
        [sys.executable, "-c", "import collections, operator; print(operator.__file__)"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "/operator/" not in done.stdout and done.stdout.strip().endswith("operator.py")


OPERATOR_FILES = sorted((REPO / "src/routermesh/operator").rglob("*.py"))
CONTRACT_FILES = sorted((REPO / "src/routermesh/runtime/contract").rglob("*.py"))


@pytest.mark.parametrize("path", OPERATOR_FILES, ids=lambda p: p.name)
def test_the_operator_reaches_the_runtime_only_through_its_contract(path: Path) -> None:
    """The builders and reconcile import the contract (config, model set, readiness
    report), never the pod's I/O modules (downloader, servers, layers)."""
    runtime = {n for n in _imports(path) if n.startswith("routermesh.runtime")}
    assert runtime <= {
        "routermesh.runtime.contract",
        "routermesh.runtime.contract.config",
        "routermesh.runtime.contract.models",
        "routermesh.runtime.contract.readiness",
    }


@pytest.mark.parametrize("path", CONTRACT_FILES, ids=lambda p: p.name)
def test_the_contract_is_pure_data(path: Path) -> None:
    allowed_project = {f"routermesh.runtime.contract.{m}" for m in ("config", "models")}
    io_modules = {"httpx", "socket", "subprocess", "fcntl", "shutil", "redis", "onnxruntime"}
    names = _imports(path)
    assert not names & io_modules
    assert {n for n in names if n.startswith("routermesh")} <= allowed_project
