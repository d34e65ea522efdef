"""Side-by-side: Microsoft Presidio's analyzer on the same PII corpus and the same 500-char
message as `benches/scan.rs`.

Setup (PyPI only): python3 -m venv .venv && .venv/bin/pip install presidio-analyzer
Presidio's spaCy NER models are not on PyPI, so the analyzer runs on a blank spaCy English
pipeline: its pattern recognizers and validators (cards, SSN, e-mail, phone, IBAN, crypto) work,
PERSON / LOCATION NER does not (none of our types needs it). That makes its timing a lower bound.

Usage: .venv/bin/python crates/guard/scripts/presidio_compare.py ../shared/data/pii/pii_samples_visible.jsonl
"""
import json
import statistics
import sys
import time

import spacy
from presidio_analyzer import AnalyzerEngine
from presidio_analyzer.nlp_engine import SpacyNlpEngine

MAP = {
    "CREDIT_CARD": "CREDIT_CARD",
    "US_SSN": "US_SSN",
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "IBAN_CODE": "IBAN",
    "CRYPTO": "BTC_ADDRESS",
}

MESSAGE = (
    "Hi, I tried to pay with my card 4111 1111 1111 1111 yesterday and it was declined. "
    "My CPF is 723.910.967-47 and my e-mail is ana.souza@example.com. The authenticator code 828932 "
    "did not work either. I also sent 0.05 BTC to bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq three hours "
    "ago and it still shows pending. Please ignore my previous message about the bank account, I found it. "
    "Can you check what happened with both transactions and tell me when the deposit will arrive? Thanks!"
)[:500].ljust(500)


class BlankSpacy(SpacyNlpEngine):
    def __init__(self):
        super().__init__(models=[{"lang_code": "en", "model_name": "blank"}])

    def load(self):
        self.nlp = {"en": spacy.blank("en")}


def main(path):
    engine = BlankSpacy()
    engine.load()
    analyzer = AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])
    per = {}
    for line in open(path, encoding="utf-8"):
        row = json.loads(line)
        text = row["text"]
        got = [
            (MAP[r.entity_type], r.start, r.end)
            for r in analyzer.analyze(text=text, language="en")
            if r.entity_type in MAP
        ]
        gold = [(e["type"], e["start"], e["end"]) for e in row["entities"]]
        for t, s, e in gold:
            c = per.setdefault(t, {"gold": 0, "found": 0, "pred": 0, "correct": 0})
            c["gold"] += 1
            if any(gt == t and gs < e and s < ge for gt, gs, ge in got):
                c["found"] += 1
        for t, s, e in got:
            c = per.setdefault(t, {"gold": 0, "found": 0, "pred": 0, "correct": 0})
            c["pred"] += 1
            if any(gt == t and gs < e and s < ge for gt, gs, ge in gold):
                c["correct"] += 1
    for t, c in sorted(per.items()):
        rec = c["found"] / c["gold"] if c["gold"] else None
        prec = c["correct"] / c["pred"] if c["pred"] else None
        print(json.dumps({"type": t, "gold": c["gold"], "recall": rec, "predicted": c["pred"], "precision": prec}))
    analyzer.analyze(text=MESSAGE, language="en")
    times = []
    for _ in range(300):
        t0 = time.thread_time()
        analyzer.analyze(text=MESSAGE, language="en")
        times.append((time.thread_time() - t0) * 1e6)
    print(json.dumps({"presidio_500_chars_thread_cpu_us": {"p50": statistics.median(times),
                      "p10": sorted(times)[30], "p90": sorted(times)[270]}}))


if __name__ == "__main__":
    main(sys.argv[1])
