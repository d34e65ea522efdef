"""Batch throughput of Python onnxruntime on a model folder's model.onnx at each graph
optimisation level, with the sentences, batch size and length sorting of `switchboard bench
router`'s batch pass: separates the runtime's own speed on a CPU from our binding's.

Usage: python ort_levels.py MODEL_DIR DATA.csv [--threads N] [--repeat R]
Prints one JSON line per level: the median and every pass, sentences per second.
"""

import argparse
import csv
import json
import time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


def batches(model_dir, data, n, batch):
    tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    tok.no_padding()
    tok.enable_truncation(256)
    with open(data, encoding="utf-8", newline="") as f:
        texts = [row["text"] for row in csv.DictReader(f)][:n]
    encoded = sorted((tok.encode(t).ids for t in texts), key=len)
    out = []
    for i in range(0, len(encoded), batch):
        chunk = encoded[i : i + batch]
        width = max(len(ids) for ids in chunk)
        ids = np.zeros((len(chunk), width), np.int64)
        for row, seq in enumerate(chunk):
            ids[row, : len(seq)] = seq
        out.append({"input_ids": ids, "attention_mask": (ids != 0).astype(np.int64), "token_type_ids": np.zeros_like(ids)})
    return out, len(texts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("data")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    a = ap.parse_args()
    feeds, n = batches(a.model_dir, a.data, a.n, a.batch)
    levels = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    }
    for name, level in levels.items():
        so = ort.SessionOptions()
        so.graph_optimization_level = level
        so.intra_op_num_threads = a.threads
        so.inter_op_num_threads = 1
        session = ort.InferenceSession(f"{a.model_dir}/model.onnx", so, providers=["CPUExecutionProvider"])
        passes = []
        for _ in range(a.repeat):
            started = time.perf_counter()
            for feed in feeds:
                session.run(None, feed)
            passes.append(n / (time.perf_counter() - started))
        print(json.dumps({"onnxruntime": ort.__version__, "level": name, "threads": a.threads,
                          "batch_sentences_per_s": sorted(passes)[len(passes) // 2],
                          "passes": [round(p, 1) for p in passes]}))


if __name__ == "__main__":
    main()
