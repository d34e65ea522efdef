#!/usr/bin/env bash
# Side-by-side encoder benchmark: switchboard's two engines (ONNX Runtime through `ort`, and candle)
# vs Python sentence-transformers (PyTorch), same sentences, same thread counts, one run.
# Usage:
#   SWITCHBOARD_BIN=target/release/switchboard PYTHON=venv/bin/python bench/router/compare.sh MODEL_DIR [DATA]
# MODEL_DIR needs model.onnx (`switchboard models fetch` exports it); the Python side needs
# bench/router/requirements.txt installed in PYTHON's environment. One JSON object per line.
set -euo pipefail
model_dir=$1
data=${2:-}
bin=${SWITCHBOARD_BIN:-target/release/switchboard}
py=${PYTHON:-python3}
here=$(cd "$(dirname "$0")" && pwd)
data_args=()
[[ -n "$data" ]] && data_args=(--data "$data")
echo "{\"uptime\": \"$(uptime | sed 's/^ *//')\"}"
for threads in 1 2; do
  for backend in ort candle; do
    RAYON_NUM_THREADS=$threads "$bin" bench router --json --backend "$backend" --threads "$threads" \
      --model-dir "$model_dir" "${data_args[@]}"
  done
  OMP_NUM_THREADS=$threads "$py" "$here/bench_torch.py" "$model_dir" --threads "$threads" "${data_args[@]}"
done
