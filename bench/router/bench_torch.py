"""PyTorch side of `switchboard bench router`: the same sentences, the same thread count.

    python bench/router/bench_torch.py MODEL_DIR --threads 1 [--data FILE.csv] [--n 256] [--batch 32] [--repeat 5]

Prints one JSON object with the same fields as `switchboard bench router --json`.
"""

import argparse
import csv
import json
import statistics
import time

BUILT_IN = [
    "My card was stolen yesterday, please block it",
    "How do I top up my account with Apple Pay?",
    "why is my transfer still pending",
    "What is the exchange rate for EUR to GBP?",
    "Can I get a refund for a card payment that I didn't make?",
    "The ATM swallowed my card, what now?",
    "How long does a SEPA transfer take to arrive?",
    "I need to verify my identity but the app keeps rejecting my passport photo",
]


def load_texts(path, n):
    if path is None:
        return [BUILT_IN[i % len(BUILT_IN)] for i in range(n)]
    out = []
    if path.endswith(".csv"):
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                out.append(row["text"])
    else:
        with open(path, encoding="utf-8") as f:
            out = [json.loads(line)["text"] for line in f if line.strip()]
    return out[:n]


def percentile(sorted_values, q):
    import math
    rank = min(max(math.ceil(q * len(sorted_values)), 1), len(sorted_values))
    return sorted_values[rank - 1]


def forward_flop(length, hidden, inter, layers):
    """Multiply-adds (x2) of one sequence through a BERT encoder's matrix products: the same
    count as `forward_flop` in src/cmd/bench_router.rs."""
    return 2.0 * layers * (4 * length * hidden * hidden + 2 * length * hidden * inter + 2 * length * length * hidden)


def batch_work(model, texts, batch, model_dir):
    """The padded shapes sentence-transformers really forwards in one throughput pass (recorded
    from its preprocessing in an extra, untimed pass) and their floating-point operations."""
    import os
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    shapes = []
    original = model.preprocess

    def recording(*a, **kw):
        features = original(*a, **kw)
        mask = features["attention_mask"]
        shapes.append((int(mask.shape[0]), int(mask.shape[1]), int(mask.sum())))
        return features

    model.preprocess = recording
    try:
        model.encode(texts, batch_size=batch, normalize_embeddings=True, show_progress_bar=False)
    finally:
        del model.preprocess
    flop = sum(b * forward_flop(n, cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"])
               for b, n, _ in shapes)
    return {"tokens": sum(t for _, _, t in shapes), "padded_tokens": sum(b * n for b, n, _ in shapes), "flop": flop}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=5, help="throughput passes; the median is reported")
    args = ap.parse_args()

    import torch
    torch.set_num_threads(args.threads)
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(args.model_dir, device="cpu")
    texts = load_texts(args.data, args.n)
    model.encode(texts[:8], normalize_embeddings=True)
    lat = []
    with torch.inference_mode():
        for t in texts:
            s = time.perf_counter()
            model.encode([t], normalize_embeddings=True, show_progress_bar=False)
            lat.append((time.perf_counter() - s) * 1000.0)
        lat.sort()
        rates = []
        for _ in range(max(args.repeat, 1)):
            s = time.perf_counter()
            model.encode(texts, batch_size=args.batch, normalize_embeddings=True, show_progress_bar=False)
            rates.append(len(texts) / (time.perf_counter() - s))
        rates.sort()
        work = batch_work(model, texts, args.batch, args.model_dir)
    print(json.dumps({
        "engine": f"pytorch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "n": len(texts),
        "single_ms": {"p50": percentile(lat, 0.5), "p99": percentile(lat, 0.99), "mean": statistics.mean(lat)},
        "batch_size": args.batch,
        "batch_repeat": len(rates),
        "batch_sentences_per_s": percentile(rates, 0.5),
        "batch_sentences_per_s_best": rates[-1],
        "batch_tokens": work["tokens"],
        "batch_padded_tokens": work["padded_tokens"],
        "batch_gflop": work["flop"] / 1e9,
        "batch_gflop_per_s": work["flop"] / 1e9 * percentile(rates, 0.5) / len(texts),
    }))


if __name__ == "__main__":
    main()
