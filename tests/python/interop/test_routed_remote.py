"""The reference assistant's router delegates the staking intent to a remote A2A agent (an
`a2a-sdk` server, `[remote_agents.earn_specialist]` pointed at it by SWITCHBOARD_EARN_AGENT_URL):
the remote sees redacted context, its reply streams back through the OpenAI client, an
input-required exchange spans two customer messages, other intents stay local, and with the
remote down the fallback (the help centre) answers."""

import pathlib

import openai
import pytest

from interop_harness import RemoteAgent, Server

ASSISTANTS = pathlib.Path(__file__).resolve().parents[3] / "assistants"
STAKING = "when do I get my staking rewards?"


@pytest.fixture(scope="module")
def setup():
    remote = RemoteAgent("normal")
    server = Server(assistants_dir=str(ASSISTANTS), env={"SWITCHBOARD_EARN_AGENT_URL": remote.url})
    yield server, remote
    server.stop()
    remote.stop()


def chat(server, text, conv, stream=False):
    c = openai.OpenAI(base_url=server.base_url + "/v1", api_key=server.key, max_retries=0, timeout=30)
    return c.chat.completions.create(
        model="exchange-support",
        messages=[{"role": "user", "content": text}],
        extra_headers={"X-Switchboard-Conversation": conv},
        stream=stream,
    )


def routing(r):
    return r.model_extra["switchboard"]["routing"]


def test_the_delegated_intent_reaches_the_remote_with_redacted_context(setup):
    server, _ = setup
    first = chat(server, "hi, my email is ana@example.com", conv="d1")
    assert routing(first).get("handler") != "earn_specialist"
    chunks = list(chat(server, STAKING, conv="d1", stream=True))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 2, pieces  # the remote's artifact chunks arrive as they are produced
    text = "".join(pieces)
    assert text.startswith(f"remote got: {STAKING} | context "), text
    # The summary policy shared the recent turns, masked by the guard.
    assert '"recent"' in text and "[EMAIL" in text and "ana@example.com" not in text
    # Streamed once: by the remote's chunks, not again when the reply is stored.
    assert text.count("remote got:") == 1, text
    ext = next(c.model_extra["switchboard"] for c in reversed(chunks) if (c.model_extra or {}).get("switchboard"))
    assert ext["routing"]["routing"]["handler"] == "earn_specialist"
    assert ext["routing"]["routing"]["intent"] == "staking"


def test_an_input_required_turn_is_multi_turn(setup):
    server, _ = setup
    r = chat(server, "I want to stake my SOL", conv="d2")
    assert r.choices[0].message.content == "How much would you like to stake?"
    assert r.model_extra["switchboard"]["status"] == "completed"
    assert routing(r)["handler"] == "earn_specialist"
    # The answer alone would be routed elsewhere: it goes back to the remote task that asked.
    r = chat(server, "12.5", conv="d2")
    assert r.choices[0].message.content == "Staked 12.5."
    assert routing(r)["handler"] == "earn_specialist"
    assert routing(r)["routing"]["reasons"] == ["the remote agent asked for this input"]


def test_another_intent_stays_with_the_local_flow(setup):
    server, _ = setup
    r = chat(server, "I lost my card, please freeze it", conv="d3")
    assert routing(r)["handler"] == "card_freeze"
    assert "remote got" not in r.choices[0].message.content


def test_with_the_remote_down_the_fallback_answers(setup):
    server, remote = setup
    remote.stop()
    for conv in ("d4", "d5"):
        r = chat(server, STAKING, conv=conv)
        assert r.model_extra["switchboard"]["status"] == "completed"
        assert routing(r)["handler"] == "faq"
        assert "(Source: Staking" in r.choices[0].message.content, r.choices[0].message.content
