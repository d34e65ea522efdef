#!/usr/bin/env bash
# Side-by-side encoder benchmark: switchboard (candle) vs Python sentence-transformers (PyTorch),
# same sentences, same thread counts. Usage:
#   SWITCHBOARD_BIN=target/release/switchboard PYTHON=venv/bin/python bench/router/compare.sh MODEL_DIR [DATA]
set -euo pipefail
model_dir=$1
data=${2:-}
bin=${SWITCHBOARD_BIN:-target/release/switchboard}
py=${PYTHON:-python3}
here=$(cd "$(dirname "$0")" && pwd)
data_args=()
[[ -n "$data" ]] && data_args=(--data "$data")
for threads in 1 2; do
  RAYON_NUM_THREADS=$threads "$bin" bench router --json --model-dir "$model_dir" "${data_args[@]}"
  OMP_NUM_THREADS=$threads "$py" "$here/bench_torch.py" "$model_dir" --threads "$threads" "${data_args[@]}"
done
