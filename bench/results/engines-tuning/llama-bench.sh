#!/usr/bin/env bash
# Prompt-eval cost per token at the judge's shape: 176 new tokens after 144 cached ones.
set -u
B=/tmp/llama-tools/build/bin/llama-bench
P=/work/main/.cache/models/packaged
Q=/tmp/llama-tools/models
O=/work/main/bench/results/engines-tuning
common="-p 176 -n 0 -d 144 -o jsonl"
$B -m $P/SmolLM2-135M-Instruct.Q4_1.gguf $common -r 3 -t 1,2 -fa on,off -ub 64,512 > $O/llama-bench-l1-q4_1.jsonl
$B -m $Q/SmolLM2-135M-Instruct.Q4_1.Q4_0.gguf $common -r 3 -t 2 --repack 1,0 > $O/llama-bench-l1-q4_0.jsonl
$B -m $Q/SmolLM2-135M-Instruct.Q4_1.Q8_0.gguf $common -r 3 -t 2 --repack 1,0 > $O/llama-bench-l1-q8_0.jsonl
$B -m $P/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf $common -r 2 -t 1,2 -fa on,off > $O/llama-bench-l2-q4_k_m.jsonl
$B -m $Q/qwen2.5-coder-0.5b-instruct-q4_k_m.Q4_0.gguf $common -r 2 -t 2 --repack 1,0 > $O/llama-bench-l2-q4_0.jsonl
$B -m $Q/qwen2.5-coder-0.5b-instruct-q4_k_m.Q8_0.gguf $common -r 2 -t 2 > $O/llama-bench-l2-q8_0.jsonl
echo sweep-done
