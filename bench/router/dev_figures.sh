#!/usr/bin/env bash
# The router's accuracy figures on dev splits carved out of the shared training data, with and
# without the neighbour memory, one line per trained router (crates/router/README.md).
# Usage:
#   SWITCHBOARD_BIN=target/release/switchboard bench/router/dev_figures.sh DATA_DIR WORK_DIR [bank few clinc transfer cv]
# DATA_DIR holds banking77/train.csv, clinc150/{train,val}.jsonl and (for `transfer`) the bitext
# sample; WORK_DIR receives the splits, the routers, their training logs and an embedding cache
# (reused by later runs). The default parts are bank, few and clinc; `transfer` (about ten
# minutes: it fine-tunes the encoder) and `cv` (ten-fold cross-validation on BANKING77, twenty
# routers) are run only when asked for.
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
  cv)
    # Ten-fold cross-validation over all of BANKING77's train.csv (stratified: each intent's
    # examples, shuffled with a fixed seed, are dealt to the folds in turn), with and without
    # the neighbour memory: every text is a dev item once, so the pooled accuracy has about a
    # third of the standard error of one 1,005-item split. One line per fold, then the pooled figures.
    if [[ ! -f cv/fold9.dev.csv ]]; then
      mkdir -p cv
      python3 - "$data/banking77/train.csv" cv <<'PY'
import csv, random, sys
src, out = sys.argv[1], sys.argv[2]
with open(src, encoding="utf-8", newline="") as f:
    rows = list(csv.DictReader(f))
by_intent = {}
for r in rows:
    by_intent.setdefault(r["category"], []).append(r)
fold_of = {}
rng = random.Random(7)
for intent in sorted(by_intent):
    items = by_intent[intent]
    rng.shuffle(items)
    for i, r in enumerate(items):
        fold_of[id(r)] = i % 10
for k in range(10):
    for part, keep in (("train", lambda r: fold_of[id(r)] != k), ("dev", lambda r: fold_of[id(r)] == k)):
        with open(f"{out}/fold{k}.{part}.csv", "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text", "category"])
            w.writerows([r["text"], r["category"]] for r in rows if keep(r))
PY
    fi
    for k in 0 1 2 3 4 5 6 7 8 9; do
      train "cv/neighbours-$k" --data "cv/fold$k.train.csv" && eval_json "cv/neighbours-$k" "cv/fold$k.dev.csv"
      train "cv/alone-$k" --data "cv/fold$k.train.csv" --no-neighbours && eval_json "cv/alone-$k" "cv/fold$k.dev.csv"
    done | tee cv/folds.jsonl
    python3 - cv/folds.jsonl <<'PY'
import json, sys
pooled = {}
for line in open(sys.argv[1], encoding="utf-8"):
    r = json.loads(line)
    kind = r["router"].split("/")[1].rsplit("-", 1)[0]
    p = pooled.setdefault(kind, {"folds": 0, "n": 0, "correct": 0.0, "top1": 0.0})
    p["folds"] += 1
    p["n"] += r["n"]
    p["correct"] += r["accuracy"] * r["n"]
    p["top1"] += r["top1_accuracy"] * r["n"]
for kind, p in sorted(pooled.items()):
    print(json.dumps({"router": f"cv/{kind}", "folds": p["folds"], "n": p["n"],
                      "accuracy": p["correct"] / p["n"], "top1_accuracy": p["top1"] / p["n"]}))
PY
    ;;
  *) echo "unknown part $w (bank, few, clinc, transfer, cv)" >&2; exit 2 ;;
  esac
done
