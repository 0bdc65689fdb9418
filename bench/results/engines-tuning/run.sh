#!/usr/bin/env bash
# Engine tuning for the judge prompt (docs/engines.md, "Tuning for the judge prompt").
# Every run: the homelab sample, L0's top candidates per message, 60 distinct messages of
# bench/data/homelab-dev.jsonl, concurrency 1, 2 threads unless said otherwise.
# Requantized files come from /tmp/llama-tools (llama-quantize, see the doc).
# The development machine is shared: each run waits until the other processes leave the
# CPUs idle, and is repeated (up to 3 times) when they took over 15% of them meanwhile.
set -euo pipefail
cd "$(dirname "$0")/../../.."
P=.cache/models/packaged
Q=${Q:-/tmp/llama-tools/models}
OUT=bench/results/engines-tuning
L1=$P/SmolLM2-135M-Instruct.Q4_1.gguf
L2=$P/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
L1Q=$Q/SmolLM2-135M-Instruct.Q4_1
L2Q=$Q/qwen2.5-coder-0.5b-instruct-q4_k_m
busy() { awk 'NR==1 {print $2+$3+$4+$7+$8+$9}' /proc/stat; }
wait_idle() {  # until the machine's CPUs are under 15% busy over 2 s
  for _ in $(seq 1 120); do
    a=$(busy); sleep 2; b=$(busy)
    [ $(( (b - a) * 100 / (2 * $(getconf CLK_TCK) * $(nproc)) )) -lt 15 ] && return 0
  done
}
run() {  # tag layer model [bench args...]
  local tag=$1 layer=$2 model=$3; shift 3
  [ -f "$OUT/$tag.json" ] && { echo "skip $tag"; return; }
  for try in 1 2 3; do
    wait_idle
    .venv/bin/python bench/routermesh_bench/engines.py --engine llamacpp --layer "$layer" \
      --model "$model" --messages bench/data/homelab-dev.jsonl --requests ${REQUESTS:-60} \
      --tag "$tag" --out-dir "$OUT" "$@" | grep --line-buffered -E 'ready in|p50'
    share=$(.venv/bin/python -c "import json; print(json.load(open('$OUT/$tag.json'))['foreign_cpu_share'])")
    echo "$tag try $try: foreign CPU share $share"
    .venv/bin/python -c "import sys; sys.exit(float('$share') > 0.15)" && return 0
    mv "$OUT/$tag.json" "$OUT/$tag.contended-$try.json.txt"
  done
}
run l1-baseline l1 $L1
run l2-baseline l2 $L2
run l1-q4_0 l1 $L1Q.Q4_0.gguf
run l1-q8_0 l1 $L1Q.Q8_0.gguf
run l2-q4_0 l2 $L2Q.Q4_0.gguf
run l1-q4_0-cache-ram0 l1 $L1Q.Q4_0.gguf --server-arg=--cache-ram --server-arg=0
run l1-cache-ram0 l1 $L1 --server-arg=--cache-ram --server-arg=0
run l2-cache-ram0 l2 $L2 --server-arg=--cache-ram --server-arg=0
# Not run on 2026-12-02 (out of time; llama-bench covered threads, flash attention, ubatch
# and repacking, see llama-bench.sh):
run l2-q8_0 l2 $L2Q.Q8_0.gguf
run l1-threads1 l1 $L1 --threads 1
run l2-threads1 l2 $L2 --threads 1
for layer in l1 l2; do
  if [ "$layer" = l1 ]; then m=$L1; else m=$L2; fi
  run "$layer-fa-on" "$layer" "$m" --server-arg=-fa --server-arg=on
  run "$layer-fa-off" "$layer" "$m" --server-arg=-fa --server-arg=off
  run "$layer-ubatch64" "$layer" "$m" --server-arg=-ub --server-arg=64
  run "$layer-cache-reuse16" "$layer" "$m" --server-arg=--cache-reuse --server-arg=16
  run "$layer-cache-ram0" "$layer" "$m" --server-arg=--cache-ram --server-arg=0
done
run l1-q4_0-norepack l1 $L1Q.Q4_0.gguf --server-arg=--no-repack
run l2-q4_0-norepack l2 $L2Q.Q4_0.gguf --server-arg=--no-repack
