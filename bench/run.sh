#!/usr/bin/env bash
# Every benchmark, then docs/benchmarks.md (about 1.5 hours on 2 cores):
#   bash bench/run.sh                    # DATASETS=../shared/datasets
#   LIMIT=200 bash bench/run.sh          # a quick pass on samples of the eval sets
# Needs the setup of scripts/setup.sh (venv, llama-server, packaged models).
#
# Two cascades on each dataset's val split:
#   seed     L1 + L2 only (the seed's design; L0 disabled), every layer asked for every row;
#   cascade  L0 + L1 + L2 (the defaults), later layers asked only for what L0 leaves;
#   head     the same with L0's trained head (trained first: ~8 min for CLINC150, ~4 min
#            for HWU64 on 2 cores; reused from .cache/models/heads/ when already there),
#            calibrated with an out-of-scope target too.
set -euo pipefail
cd "$(dirname "$0")/.."
DATASETS=${DATASETS:-../shared/datasets}
RESULTS=${RESULTS:-bench/results}
LIMIT_ARGS=()
if [ -n "${LIMIT:-}" ]; then LIMIT_ARGS=(--limit "$LIMIT"); fi
RM=(.venv/bin/router-mesh bench)

run_quality() {  # dataset variant calibrate-args -- quality-args...
  local dataset=$1 variant=$2; shift 2
  local calibrate_args=()
  while [ "$1" != -- ]; do calibrate_args+=("$1"); shift; done
  shift
  local out="$RESULTS/quality/$dataset-val-$variant"
  local data=(--train "$DATASETS/$dataset/train.jsonl" --eval "$DATASETS/$dataset/val.jsonl")
  "${RM[@]}" quality "${data[@]}" --out "$out" "${LIMIT_ARGS[@]}" "$@"
  "${RM[@]}" calibrate "${data[@]}" --out "$out" --records "$out/records.jsonl" \
    "${calibrate_args[@]}"
}

for dataset in clinc150 hwu64; do
  run_quality "$dataset" seed -- --disable l0
  run_quality "$dataset" cascade -- --no-all-layers
  run_quality "$dataset" head --oos-target 0.85 -- --no-all-layers --head 2
done
"${RM[@]}" perf --out "$RESULTS/perf/seed" --disable l0
"${RM[@]}" perf --out "$RESULTS/perf/cascade"
"${RM[@]}" load --out "$RESULTS/load"
"${RM[@]}" report --results "$RESULTS" --output docs/benchmarks.md
