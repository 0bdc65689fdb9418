#!/usr/bin/env bash
# The main job on a fresh machine: set up (scripts/setup.sh), then run the router pod as
# local processes (`router-mesh local`). Arguments go to `router-mesh local`, e.g.
#   bash scripts/local.sh -f samples/homelab/ [--port 8080]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
VENV="$VENV" bash scripts/setup.sh
exec "$VENV/bin/router-mesh" local "$@"
