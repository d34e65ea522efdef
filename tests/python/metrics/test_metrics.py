"""`/metrics` of a live `switchboard serve`, parsed by the Prometheus client's own text parser,
after a few turns of the reference assistant through the HTTP API: every family has its type, and
the turn, routing, tool, handoff, containment and feedback metrics moved by what the turns did."""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[3]


def _request(base, key, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


@pytest.fixture(scope="module")
def server():
    binary = os.environ.get("SWITCHBOARD_BIN")
    if not binary or not Path(binary).exists():
        pytest.fail("SWITCHBOARD_BIN must point at a built switchboard binary")
    data = tempfile.mkdtemp(prefix="sb-metrics-")
    log = open(os.path.join(data, "server.log"), "w")
    env = {
        **os.environ,
        "SWITCHBOARD_RATE_LIMIT_PER_SECOND": "0",
        "SWITCHBOARD_ASSISTANTS_DIR": str(REPO / "assistants"),
    }
    proc = subprocess.Popen(
        [binary, "serve", "--addr", "127.0.0.1:0", "--data-dir", data],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=env,
    )
    try:
        lines, base = [], None
        deadline = time.monotonic() + 300  # a first start may train the router
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.strip())
            if line.startswith("Switchboard listening on"):
                base = line.split()[3]
                break
        assert base, lines
        key = next(l for l in lines if l.startswith("sb_"))
        yield base, key
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(data, ignore_errors=True)


def scrape(base):
    with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    return families, text


def value(families, family, sample, **labels):
    """The value of one sample (0 when the series does not exist yet)."""
    f = families[family]
    for s in f.samples:
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return 0.0


def total(families, family, sample, **labels):
    f = families[family]
    return sum(s.value for s in f.samples if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))


def say(base, key, conv, text):
    return _request(base, key, "POST", f"/v1/conversations/{conv}/messages", {"text": text})


def test_metrics_parse_with_types_and_move_with_turns(server):
    base, key = server
    before, _ = scrape(base)

    # The parser strips `_total` from counter family names.
    expected = {
        "switchboard_turn_duration_seconds": "histogram",
        "switchboard_turn_time_to_first_token_seconds": "histogram",
        "switchboard_turns": "counter",
        "switchboard_conversations": "counter",
        "switchboard_conversations_escalated": "counter",
        "switchboard_route_decisions": "counter",
        "switchboard_route_confidence": "histogram",
        "switchboard_handoffs": "counter",
        "switchboard_tool_calls": "counter",
        "switchboard_llm_tokens": "counter",
        "switchboard_llm_cost_usd": "counter",
        "switchboard_llm_time_to_first_token_seconds": "histogram",
        "switchboard_llm_retries": "counter",
        "switchboard_llm_fallbacks": "counter",
        "switchboard_llm_breaker_state": "gauge",
        "switchboard_checkpoint_bytes": "counter",
        "switchboard_queue_depth": "gauge",
        "switchboard_lease_age_seconds": "gauge",
        "switchboard_feedback": "counter",
        "switchboard_http_responses": "counter",
        "switchboard_runs_in_flight": "gauge",
    }
    for name, kind in expected.items():
        assert name in before, f"{name} missing from /metrics"
        assert before[name].type == kind, (name, before[name].type)
        assert before[name].documentation, f"{name} has no HELP"

    # A card freeze: a tool call waits for an approval (a handoff of reason `approval`), the desk
    # approves it, the tool runs; then the customer asks for a person (an escalation).
    card = _request(base, key, "POST", "/v1/conversations", {"assistant": "exchange-support", "customer_id": "cust_001"})
    r = say(base, key, card["id"], "I lost my card, block it please")
    assert r["status"] == "completed", r
    r = say(base, key, card["id"], "the one ending 4242")
    assert r["status"] == "interrupted", r
    r = _request(base, key, "POST", f"/v1/conversations/{card['id']}/interrupts/resume", {"value": {"approve": True, "by": "bea"}})
    assert r["status"] == "completed", r
    say(base, key, card["id"], "can I talk to a person?")
    # Something out of scope in a second conversation, which stays with the assistant; rated.
    other = _request(base, key, "POST", "/v1/conversations", {"assistant": "exchange-support", "customer_id": "cust_001"})
    r = say(base, key, other["id"], "what is the weather like on mars tomorrow?")
    assert r["reply"]["handler"] in ("out_of_scope", "faq", "clarify"), r
    _request(base, key, "POST", f"/v1/conversations/{other['id']}/feedback", {"rating": 4})

    after, text = scrape(base)
    delta = lambda fam, sample, **l: value(after, fam, sample, **l) - value(before, fam, sample, **l)  # noqa: E731
    grown = lambda fam, sample, **l: total(after, fam, sample, **l) - total(before, fam, sample, **l)  # noqa: E731

    assert grown("switchboard_turns", "switchboard_turns_total") == 5, text
    assert delta("switchboard_turns", "switchboard_turns_total", handler="card_freeze", outcome="completed") >= 1
    assert delta("switchboard_turns", "switchboard_turns_total", handler="card_freeze", outcome="interrupted") == 1
    assert grown("switchboard_turn_duration_seconds", "switchboard_turn_duration_seconds_count") == 5
    assert grown("switchboard_turn_duration_seconds", "switchboard_turn_duration_seconds_sum") > 0
    assert grown("switchboard_turn_time_to_first_token_seconds", "switchboard_turn_time_to_first_token_seconds_count") >= 4
    assert delta("switchboard_conversations", "switchboard_conversations_total") == 2
    assert delta("switchboard_conversations_escalated", "switchboard_conversations_escalated_total") == 1
    assert delta("switchboard_handoffs", "switchboard_handoffs_total", reason="approval") == 1
    assert delta("switchboard_handoffs", "switchboard_handoffs_total", reason="customer_request") == 1
    assert delta("switchboard_tool_calls", "switchboard_tool_calls_total", tool="freeze_card", outcome="ok") == 1
    assert grown("switchboard_route_decisions", "switchboard_route_decisions_total") >= 2
    assert grown("switchboard_route_confidence", "switchboard_route_confidence_count") >= 2
    assert delta("switchboard_feedback", "switchboard_feedback_total", rating="4") == 1
    assert delta("switchboard_checkpoint_bytes", "switchboard_checkpoint_bytes_total") > 0
    assert value(after, "switchboard_runs_in_flight", "switchboard_runs_in_flight") == 0
    # Waiting on an approval is a pause, not a failure of the node.
    assert delta("switchboard_node_runs", "switchboard_node_runs_total", node="approval", outcome="error") == 0, text
    assert delta("switchboard_node_runs", "switchboard_node_runs_total", node="approval", outcome="ok") == 2, text

    # Histograms are well formed: cumulative buckets ending in +Inf equal to the count.
    for fam in after.values():
        if fam.type != "histogram":
            continue
        series = {}
        for s in fam.samples:
            key_ = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            series.setdefault(key_, {"buckets": [], "count": None})
            if s.name.endswith("_bucket"):
                series[key_]["buckets"].append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_count"):
                series[key_]["count"] = s.value
        for key_, s in series.items():
            counts = [v for _, v in sorted(s["buckets"])]
            assert counts == sorted(counts), (fam.name, key_, counts)
            assert s["buckets"] and sorted(s["buckets"])[-1][0] == float("inf"), (fam.name, key_)
            assert counts[-1] == s["count"], (fam.name, key_)
