"""Shared test helpers: repository paths, and validation of custom resources against the
generated CRDs (OpenAPI schema with jsonschema, x-kubernetes-validations with a CEL
interpreter), i.e. what the API server would check on `kubectl apply`."""

from __future__ import annotations

import os

# The operator's resync timer interval is fixed when its handlers are registered (at
# import): tests that run the operator want it short, whichever test module imports first.
os.environ.setdefault("ROUTER_MESH_RESYNC_SECONDS", "1")

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml
from jsonschema import Draft4Validator

from tests.support import RedisProcess

REPO = Path(__file__).resolve().parents[1]

CrdCheck = Callable[[dict[str, Any]], list[str]]


def load_crds() -> dict[str, dict[str, Any]]:
    crds = {}
    for path in sorted((REPO / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        crds[crd["spec"]["names"]["kind"]] = crd
    return crds


def _cel_problems(
    schema: dict[str, Any], value: Any, path: str, env: celpy.Environment
) -> list[str]:
    problems = []
    for rule in schema.get("x-kubernetes-validations", []):
        program = env.program(env.compile(rule["rule"]))
        result = program.evaluate({"self": celpy.json_to_cel(value)})
        if isinstance(result, celpy.CELEvalError) or not bool(result):
            problems.append(f"{path}: {rule['message']}")
    if isinstance(value, dict):
        for key, sub in value.items():
            if key in schema.get("properties", {}):
                problems += _cel_problems(schema["properties"][key], sub, f"{path}.{key}", env)
            elif isinstance(schema.get("additionalProperties"), dict):
                problems += _cel_problems(schema["additionalProperties"], sub, f"{path}.{key}", env)
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            problems += _cel_problems(schema["items"], item, f"{path}[{index}]", env)
    return problems


def crd_problems(obj: dict[str, Any], crds: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """What the API server would reject in ``obj``: schema violations, then CEL rules."""
    crds = crds or load_crds()
    crd = crds[obj["kind"]]
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    validator = Draft4Validator(schema)
    problems = [
        ".".join(str(p) for p in error.absolute_path) + f": {error.message}"
        for error in validator.iter_errors(obj)
    ]
    if problems:
        return problems
    return _cel_problems(schema, copy.deepcopy(obj), "", celpy.Environment())


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def crd_check() -> CrdCheck:
    crds = load_crds()
    return lambda obj: crd_problems(obj, crds)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    """A real redis-server on a free loopback port, stopped after the test."""
    server = RedisProcess(tmp_path)
    server.start()
    yield server
    server.stop()
