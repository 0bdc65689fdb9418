#!/usr/bin/env bash
# Every benchmark, then docs/benchmarks.md (about 1.75 hours on 2 cores):
#   bash bench/run.sh                    # DATASETS=../shared/datasets
#   LIMIT=200 bash bench/run.sh          # a quick pass on samples of the eval sets
# Needs the setup of scripts/setup.sh (venv, llama-server, packaged models; wrk for perf
# and load: `WITH_WRK=1 bash scripts/setup.sh` installs it).
#
# First the regime users are in, small hand-written tables (the few-shot protocol):
#   homelab  samples/homelab over bench/data/homelab-{dev,test}.jsonl (in scope, out of
#            scope, multi-step), and with the generative judges on (long timeouts);
#   tools    the BFCL tool-routing table (40 servers) over bench/data/tools/{dev,test}.jsonl
#            with 100 synthetic multi-step rows;
#   k10      CLINC150 and HWU64 at ten examples per route with route descriptions (HWU64
#            with four routes left out, so their requests are out of scope);
#   prior    L0's calibration prior refitted from the train splits.
# Then on each dataset's val split:
#   seed     L1 + L2 only (the seed's design; L0 disabled, L1 and L2 switched on), every
#            layer asked for every row;
#   cascade  the defaults (L0 alone since L1 and L2 are off by default);
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

F="$RESULTS/fewshot"
HOMELAB=(--routetable samples/homelab/routetable.yaml)
TOOLS=(--routetable bench/data/tools/routetable.yaml --multi 100)
"${RM[@]}" quality "${HOMELAB[@]}" --eval bench/data/homelab-dev.jsonl --out "$F/homelab-dev"
"${RM[@]}" quality "${HOMELAB[@]}" --eval bench/data/homelab-test.jsonl --out "$F/homelab-test"
"${RM[@]}" quality "${HOMELAB[@]}" --eval bench/data/homelab-dev.jsonl \
  --out "$F/homelab-dev-judges" --set l1.enabled=true --set l2.enabled=true \
  --set l1.timeoutMs=5000 --set l2.timeoutMs=10000
"${RM[@]}" quality "${TOOLS[@]}" --eval bench/data/tools/dev.jsonl --out "$F/tools-dev"
"${RM[@]}" quality "${TOOLS[@]}" --eval bench/data/tools/test.jsonl --out "$F/tools-test"
for dataset in clinc150 hwu64; do
  absent=()
  if [ "$dataset" = hwu64 ]; then absent=(--absent 4); fi
  "${RM[@]}" quality --train "$DATASETS/$dataset/train.jsonl" --few-shot 10 \
    --descriptions "bench/data/descriptions/$dataset.json" "${absent[@]}" --multi 100 \
    --eval "$DATASETS/$dataset/val.jsonl" --out "$F/$dataset-k10-val" "${LIMIT_ARGS[@]}"
done
"${RM[@]}" learn -f samples/homelab --eval bench/data/homelab-dev.jsonl \
  --stream bench/data/homelab-messages.jsonl --batch 10 --out "$RESULTS/learn/homelab"
"${RM[@]}" learn -f bench/data/tools/routetable.yaml -f bench/data/meshes/tools.yaml \
  --eval bench/data/tools/dev.jsonl --batch 50 --out "$RESULTS/learn/tools"
"${RM[@]}" learn -f bench/data/tools/routetable.yaml -f bench/data/meshes/tools.yaml \
  --eval bench/data/tools/dev.jsonl --batch 50 --error-rate 0.1 \
  --out "$RESULTS/learn/tools-endpoint-wrong-10pct"
# the same loop fed by an agent's tool calls through /mcp (api.learnFromToolCalls)
"${RM[@]}" learn -f samples/homelab --eval bench/data/homelab-dev.jsonl \
  --stream bench/data/homelab-messages.jsonl --batch 10 --from tool-calls \
  --out "$RESULTS/learn/homelab-tool-calls"
"${RM[@]}" learn -f bench/data/tools/routetable.yaml -f bench/data/meshes/tools.yaml \
  --eval bench/data/tools/dev.jsonl --batch 50 --from tool-calls \
  --out "$RESULTS/learn/tools-tool-calls"
"${RM[@]}" learn -f bench/data/tools/routetable.yaml -f bench/data/meshes/tools.yaml \
  --eval bench/data/tools/dev.jsonl --batch 50 --from tool-calls --error-rate 0.1 \
  --out "$RESULTS/learn/tools-tool-calls-wrong-10pct"
"${RM[@]}" prior --train "$DATASETS/clinc150/train.jsonl" \
  --descriptions bench/data/descriptions/clinc150.json \
  --train "$DATASETS/hwu64/train.jsonl" --descriptions bench/data/descriptions/hwu64.json \
  --out "$RESULTS/prior"

for dataset in clinc150 hwu64; do
  run_quality "$dataset" seed -- --disable l0 --set l1.enabled=true --set l2.enabled=true
  run_quality "$dataset" cascade --oos-target 0.85 --oos-share 0.18 -- --no-all-layers
  run_quality "$dataset" head --oos-target 0.85 --oos-share 0.18 -- --no-all-layers --head 2
done
"${RM[@]}" perf --out "$RESULTS/perf/seed" --disable l0 \
  -f samples/homelab/routetable.yaml -f bench/data/meshes/homelab-all-layers.yaml
"${RM[@]}" perf --out "$RESULTS/perf/cascade"
"${RM[@]}" load --out "$RESULTS/load"
"${RM[@]}" report --results "$RESULTS" --output docs/benchmarks.md
