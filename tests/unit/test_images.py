"""The runtime image's Dockerfile (it cannot be built here): non-root, pinned, no weights,
and consistent with the entry points local mode and the operator run."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from routermesh.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "images/runtime/Dockerfile"
OPERATOR_DOCKERFILE = REPO / "images/operator/Dockerfile"


def _instructions(dockerfile: Path = DOCKERFILE) -> list[tuple[str, str]]:
    text = dockerfile.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def _final_stage(dockerfile: Path = DOCKERFILE) -> list[tuple[str, str]]:
    instructions = _instructions(dockerfile)
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]


def _commands() -> set[str]:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(subparsers.choices)


def test_the_final_stage_runs_as_a_numeric_non_root_user() -> None:
    users = [arg for op, arg in _final_stage() if op == "USER"]
    assert users, "no USER in the final stage"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 10000  # runAsNonRoot can verify a numeric uid


def test_the_entry_point_is_the_cli_and_its_pod_commands_exist() -> None:
    final = dict(_final_stage())
    assert final["ENTRYPOINT"] == '["router-mesh"]'
    assert 'router-mesh = "routermesh.cli:main"' in (REPO / "pyproject.toml").read_text()
    assert {"orchestrator", "serve-model", "fetch-models", "local"} <= _commands()
    assert final["CMD"] == '["orchestrator"]'


def test_base_images_are_pinned_and_build_inputs_exist() -> None:
    instructions = _instructions()
    default = next(
        arg for op, arg in instructions if op == "ARG" and arg.startswith("PYTHON_IMAGE")
    )
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm", default)
    for op, arg in instructions:
        if op == "COPY" and not arg.startswith("--from"):
            for source in arg.split()[:-1]:
                assert (REPO / source).exists(), source
    assert "LLAMA_CPU_TARGET=x86-64-v3" in DOCKERFILE.read_text()
    assert "x86-64-v3)" in (REPO / "scripts/build-llama-server.sh").read_text()


def test_no_weights_or_local_state_enter_the_build_context() -> None:
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".cache", ".venv", ".git"} <= ignored
    assert not any(op == "COPY" and ".gguf" in arg for op, arg in _instructions())


def test_the_operator_image_runs_the_operator_command_as_non_root() -> None:
    final = dict(_final_stage(OPERATOR_DOCKERFILE))
    assert final["ENTRYPOINT"] == '["router-mesh", "operator"]'
    assert "operator" in _commands()
    uid = final["USER"].split(":")[0]
    assert uid.isdigit() and int(uid) >= 10000
    for op, arg in _instructions(OPERATOR_DOCKERFILE):
        if op == "COPY" and not arg.startswith("--from"):
            for source in arg.split()[:-1]:
                assert (REPO / source).exists(), source
