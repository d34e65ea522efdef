"""CLI contract of `switchboard router train|eval|predict` and `switchboard models fetch`.

Needs SWITCHBOARD_BIN (the built binary). Data comes from the shared BANKING77/CLINC150 files
(SWITCHBOARD_DATA_DIR, default: shared/data beside the repository).
Run: SWITCHBOARD_BIN=target/release/switchboard python -m pytest tests/python/router -q
"""

import csv
import json
import os
import subprocess
from pathlib import Path

import pytest

BIN = os.environ.get("SWITCHBOARD_BIN")
REPO = Path(__file__).resolve().parents[3]
DATA = Path(os.environ.get("SWITCHBOARD_DATA_DIR", REPO.parent / "shared" / "data"))

pytestmark = pytest.mark.skipif(not BIN, reason="SWITCHBOARD_BIN is not set")

EVAL_FIELDS = {"accuracy", "macro_f1", "in_scope_accuracy", "oos_recall", "oos_precision", "ece", "n", "latency_ms"}


def run(*args, check=True, timeout=600):
    p = subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{args} exited {p.returncode}: {p.stderr}")
    return p


def banking_slice(tmp, intents=8, train_n=40, test_n=15):
    rows = list(csv.DictReader(open(DATA / "banking77" / "train.csv", newline="", encoding="utf-8")))
    names = sorted({r["category"] for r in rows})[:intents]
    train, test = [], []
    for n in names:
        items = [r for r in rows if r["category"] == n]
        train += items[:train_n]
        test += items[train_n:train_n + test_n]
    paths = []
    for name, part in (("train.csv", train), ("test.csv", test)):
        p = tmp / name
        with open(p, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["text", "category"])
            w.writeheader()
            w.writerows({"text": r["text"], "category": r["category"]} for r in part)
        paths.append(p)
    return paths


def clinc_slice(tmp, intents=6, per=30):
    def read(name):
        return [json.loads(l) for l in open(DATA / "clinc150" / name, encoding="utf-8") if l.strip()]
    train, val = read("train.jsonl"), read("val.jsonl")
    names = sorted({r["intent"] for r in train if r["intent"] != "oos"})[:intents] + ["oos"]
    out = []
    for name, rows in (("train.jsonl", train), ("val.jsonl", val)):
        p = tmp / name
        kept = []
        for n in names:
            kept += [r for r in rows if r["intent"] == n][:per if name == "train.jsonl" else per // 2]
        p.write_text("".join(json.dumps({"text": r["text"], "intent": r["intent"]}) + "\n" for r in kept))
        out.append(p)
    return out


def model_available():
    return run("router", "predict", "--help", check=False).returncode == 0 and (
        os.environ.get("SWITCHBOARD_MODEL_DIR") or os.environ.get("SWITCHBOARD_MODELS_DIR") or os.environ.get("HOME"))


def require_model():
    """A short `bench router` run on the sentence encoder; without the model the test fails in CI
    (or with SWITCHBOARD_REQUIRE_MODEL) and is skipped loudly elsewhere."""
    probe = run("bench", "router", "--json", "--n", "4", check=False)
    if probe.returncode != 0:
        if os.environ.get("CI") or os.environ.get("SWITCHBOARD_REQUIRE_MODEL"):
            pytest.fail("no sentence encoder: run `switchboard models fetch` first: " + probe.stderr)
        pytest.skip("*** no sentence encoder: run `switchboard models fetch` to run this test ***")
    return probe


def test_train_eval_predict_banking77_lexical(tmp_path):
    train, test = banking_slice(tmp_path)
    out = tmp_path / "router"
    p = run("router", "train", "--data", train, "--format", "banking77", "--out", out, "--lexical-only",
            "--target-rejection", "0")
    metrics = json.loads(p.stdout)
    assert metrics["n_train"] == 320
    for f in ("router.json", "head.safetensors", "lexical.json", "prototypes.json"):
        assert (out / f).is_file(), f
    manifest = json.loads((out / "router.json").read_text())
    assert len(manifest["labels"]) == 8 and manifest["train_data_hash"]
    report = json.loads(run("router", "eval", "--model", out, "--data", test, "--json").stdout)
    assert EVAL_FIELDS <= report.keys()
    assert report["n"] == 120
    assert report["oos_recall"] is None and report["oos_precision"] is None
    assert report["accuracy"] > 0.6  # chance is 0.125
    assert report["latency_ms"]["p50"] > 0 and report["latency_ms"]["p99"] >= report["latency_ms"]["p50"]
    d = json.loads(run("router", "predict", "--model", out, "My card payment was declined").stdout)
    assert d["rung"] in {"classifier", "out_of_scope", "clarify"}
    assert d["candidates"] and d["reasons"] and "thresholds" in d


def test_clinc_with_oos_reports_oos_metrics(tmp_path):
    train, val = clinc_slice(tmp_path)
    out = tmp_path / "router"
    run("router", "train", "--data", train, "--val", val, "--format", "jsonl", "--oos-label", "oos", "--out", out,
        "--lexical-only")
    report = json.loads(run("router", "eval", "--model", out, "--data", val, "--json").stdout)
    assert report["oos_recall"] is not None and 0.0 <= report["oos_recall"] <= 1.0
    assert report["oos_precision"] is not None
    assert report["in_scope_accuracy"] > 0.5


def test_compliance_rules_and_bad_input(tmp_path):
    train, _ = banking_slice(tmp_path, intents=4)
    out = tmp_path / "router"
    run("router", "train", "--data", train, "--out", out, "--lexical-only", "--compliance-rules")
    d = json.loads(run("router", "predict", "--model", out, "someone stole my card last night").stdout)
    assert d["rung"] == "rule" and d["intent"] == "lost_or_stolen_card"
    p = run("router", "predict", "--model", out, "   ", check=False)
    assert p.returncode != 0 and "empty" in p.stderr
    p = run("router", "predict", "--model", tmp_path / "nope", "hello", check=False)
    assert p.returncode != 0 and "router.json" in p.stderr
    p = run("router", "train", "--data", train, "--out", tmp_path / "x", "--model-dir", tmp_path, check=False)
    assert p.returncode != 0 and "missing" in p.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "hi"}\n')
    p = run("router", "train", "--data", bad, "--out", tmp_path / "y", "--lexical-only", check=False)
    assert p.returncode != 0 and "line 1" in p.stderr
    long_text = "why was my card declined " * 5000
    d = json.loads(run("router", "predict", "--model", out, long_text).stdout)
    assert d["candidates"]


def test_sentence_encoder_router_when_model_present(tmp_path):
    bench = json.loads(require_model().stdout)
    assert bench["single_ms"]["p50"] > 0 and bench["batch_sentences_per_s"] > 0
    # The pass's arithmetic: the 4 sentences are one forward batch padded to the longest, and its
    # operations follow from MiniLM-L6's shapes (6 layers, hidden 384, feed-forward 1536).
    assert bench["n"] == 4 and bench["batch_padded_tokens"] % 4 == 0
    length = bench["batch_padded_tokens"] // 4
    assert 4 * 8 <= bench["batch_tokens"] <= bench["batch_padded_tokens"] < 4 * 64
    per_layer = 4 * length * 384 * 384 + 2 * length * 384 * 1536 + 2 * length * length * 384
    assert bench["batch_gflop"] == pytest.approx(4 * 2 * 6 * per_layer / 1e9, rel=1e-9)
    assert bench["batch_gflop_per_s"] == pytest.approx(
        bench["batch_gflop"] * bench["batch_sentences_per_s"] / bench["n"], rel=1e-6)
    train, test = banking_slice(tmp_path, intents=6, train_n=30, test_n=10)
    out = tmp_path / "router"
    run("router", "train", "--data", train, "--out", out, "--target-rejection", "0")
    manifest = json.loads((out / "router.json").read_text())
    assert manifest["encoder"]["kind"] == "bert" and manifest["encoder"]["dim"] == 384
    report = json.loads(run("router", "eval", "--model", out, "--data", test, "--json").stdout)
    assert report["accuracy"] > 0.75
    # A head trained on the sentence encoder refuses to run on another model folder.
    p = run("router", "eval", "--model", out, "--data", test, "--model-dir", tmp_path, "--json", check=False)
    assert p.returncode != 0


def test_fine_tuned_encoder_travels_with_the_artifact(tmp_path):
    require_model()
    train, test = banking_slice(tmp_path, intents=5, train_n=20, test_n=10)
    out = tmp_path / "router"
    p = run("router", "train", "--data", train, "--out", out, "--target-rejection", "0",
            "--fine-tune", "--fine-tune-layers", "1", "--fine-tune-epochs", "2")
    metrics = json.loads(p.stdout)
    assert metrics["fine_tune_seconds"] > 0
    enc = out / "encoder"
    record = json.loads((enc / "fine_tune.json").read_text())
    assert record["base"]["kind"] == "bert" and len(record["weights_sha256"]) == 64
    assert record["report"]["initial_agreement"] >= 0.999
    losses = record["report"]["epoch_loss"]
    assert len(losses) == 2 and losses[1] < losses[0]
    # Exported for ONNX Runtime (installed by `models fetch`), and the artifact names the new encoder.
    assert (enc / "model.onnx").is_file() and (enc / "onnx.json").is_file()
    manifest = json.loads((out / "router.json").read_text())
    assert "fine-tuned" in manifest["encoder"]["id"]
    assert manifest["encoder"]["hash"] != record["base"]["hash"]
    report = json.loads(run("router", "eval", "--model", out, "--data", test, "--json").stdout)
    assert report["accuracy"] > 0.75
    d = json.loads(run("router", "predict", "--model", out, "I still have not received my new card").stdout)
    assert d["candidates"]
    # Another head on that encoder (`--model-dir`, no fine-tuning) records the folder, so eval
    # and predict find it without `--model-dir`; once the folder is gone they fall back to the
    # cached base model and refuse it as the wrong encoder.
    second = tmp_path / "second"
    run("router", "train", "--data", train, "--out", second, "--target-rejection", "0", "--model-dir", enc)
    manifest2 = json.loads((second / "router.json").read_text())
    assert manifest2["encoder"]["hash"] == manifest["encoder"]["hash"]
    assert Path(manifest2["encoder_dir"]).resolve() == enc.resolve() and not (second / "encoder").exists()
    report2 = json.loads(run("router", "eval", "--model", second, "--data", test, "--json").stdout)
    assert report2["accuracy"] > 0.75
    enc.rename(tmp_path / "moved")
    p = run("router", "predict", "--model", second, "where is my card", check=False)
    assert p.returncode != 0 and "encoder" in p.stderr and "panicked" not in p.stderr
    p = run("router", "predict", "--model", second, "--model-dir", tmp_path / "moved", "where is my card")
    assert json.loads(p.stdout)["candidates"]
    # Fine-tuning needs the sentence encoder.
    p = run("router", "train", "--data", train, "--out", tmp_path / "lex", "--lexical-only", "--fine-tune", check=False)
    assert p.returncode != 0 and "sentence encoder" in p.stderr
