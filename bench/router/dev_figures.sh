#!/usr/bin/env bash
# The router's accuracy figures on dev splits carved out of the shared training data, with and
# without the neighbour memory, one line per trained router (crates/router/README.md).
# Usage:
#   SWITCHBOARD_BIN=target/release/switchboard bench/router/dev_figures.sh DATA_DIR WORK_DIR [bank few clinc transfer]
# DATA_DIR holds banking77/train.csv, clinc150/{train,val}.jsonl and (for `transfer`) the bitext
# sample; WORK_DIR receives the splits, the routers, their training logs and an embedding cache
# (reused by later runs). The default parts are bank, few and clinc; `transfer` (about ten
# minutes: it fine-tunes the encoder) is run only when asked for.
set -uo pipefail
data=$(cd "$1" && pwd)
mkdir -p "$2" && cd "$2" || exit 1
shift 2
bin=${SWITCHBOARD_BIN:-target/release/switchboard}
[[ "$bin" = /* ]] || bin="$OLDPWD/$bin"
what=${*:-bank few clinc}
cache=(--embed-cache "$PWD/embed-cache")
[[ -f tr.csv ]] || "$bin" router split --data "$data/banking77/train.csv" --fraction 0.1 --seed 7 --train-out tr.csv --dev-out dev.csv
[[ -f cval.jsonl ]] || "$bin" router split --data "$data/clinc150/val.jsonl" --fraction 0.5 --seed 7 --train-out cval.jsonl --dev-out cdev.jsonl
echo "{\"uptime\": \"$(uptime | sed 's/^ *//')\"}"
train() {
  local out=$1
  shift
  "$bin" router train "${cache[@]}" --out "$out" "$@" >/dev/null 2>"$out.log" || { echo "{\"router\": \"$out\", \"error\": \"training failed, see $out.log\"}"; return 1; }
}
eval_json() {
  "$bin" router eval --model "$1" --data "$2" --json "${@:3}" 2>/dev/null | python3 -c '
import json, sys
r = json.load(sys.stdin)
print(json.dumps({"router": sys.argv[1], "data": sys.argv[2], **{k: r[k] for k in ("n", "accuracy", "top1_accuracy", "in_scope_accuracy", "oos_recall", "in_scope_rejection_rate", "ece", "latency_ms")}}))' "$1" "$2"
}
for w in $what; do
  case $w in
  bank)
    train bank-neighbours --data tr.csv && eval_json bank-neighbours dev.csv
    train bank-alone --data tr.csv --no-neighbours && eval_json bank-alone dev.csv ;;
  few)
    train few-neighbours --data tr.csv --max-per-intent 10 && eval_json few-neighbours dev.csv
    train few-alone --data tr.csv --max-per-intent 10 --no-neighbours && eval_json few-alone dev.csv ;;
  clinc)
    for rate in 0.02 0.03 0.04; do
      for fold in "cval cdev" "cdev cval"; do
        set -- $fold
        train "clinc-neighbours-$rate-$1" --data "$data/clinc150/train.jsonl" --val "$1.jsonl" --target-rejection "$rate" \
          && eval_json "clinc-neighbours-$rate-$1" "$2.jsonl"
        train "clinc-alone-$rate-$1" --data "$data/clinc150/train.jsonl" --val "$1.jsonl" --target-rejection "$rate" --no-neighbours \
          && eval_json "clinc-alone-$rate-$1" "$2.jsonl"
      done
    done ;;
  transfer)
    # Few-shot on an encoder first fine-tuned on other intent data: CLINC150's train set without
    # its `oos` items and the Bitext sample's instructions, labels prefixed by source.
    if [[ ! -f other.jsonl ]]; then
      python3 - "$data" >other.jsonl.part <<'PY' && mv other.jsonl.part other.jsonl
import csv, json, sys
root = sys.argv[1]
for line in open(f"{root}/clinc150/train.jsonl", encoding="utf-8"):
    r = json.loads(line)
    if r["intent"] != "oos":
        print(json.dumps({"text": r["text"], "intent": "clinc_" + r["intent"]}))
with open(f"{root}/bitext/Bitext_Sample_Customer_Support_Training_Dataset.csv", encoding="utf-8", newline="") as f:
    for r in csv.DictReader(f):
        print(json.dumps({"text": r["instruction"], "intent": "bitext_" + r["intent"]}))
PY
    fi
    train transfer-encoder --data other.jsonl --format jsonl --fine-tune --fine-tune-layers 3 --fine-tune-epochs 1 \
      && train few-transfer --data tr.csv --max-per-intent 10 --model-dir transfer-encoder/encoder \
      && eval_json few-transfer dev.csv --model-dir transfer-encoder/encoder ;;
  *) echo "unknown part $w (bank, few, clinc, transfer)" >&2; exit 2 ;;
  esac
done
