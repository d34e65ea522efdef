"""The official `openai` client chats with assistants through the OpenAI-compatible endpoint."""

import httpx
import openai
import pytest
from interop_harness import server  # noqa: F401  (fixture)


def client(server, key=None):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=key or server.key, max_retries=0, timeout=30)


def test_models_list_the_assistants(server):
    models = client(server).models.list()
    assert [m.id for m in models.data] == ["support"]


def test_a_completion_carries_the_reply_and_the_routing(server):
    r = client(server).chat.completions.create(
        model="support",
        messages=[{"role": "system", "content": "ignored"}, {"role": "user", "content": "What is my balance?"}],
    )
    assert r.object == "chat.completion"
    assert r.choices[0].finish_reason == "stop"
    assert "balance" in r.choices[0].message.content
    ext = r.model_extra["switchboard"]
    assert ext["status"] == "completed"
    assert ext["routing"]["intent"] == "balance"
    assert ext["routing"]["last_agent"] == "account"
    assert ext["conversation_id"].startswith("conv_")


def test_a_streamed_completion_ends_with_done_and_metadata(server):
    stream = client(server).chat.completions.create(
        model="support",
        messages=[{"role": "user", "content": "Please freeze my debit card"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "block" in text
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason == "stop"]
    assert len(finals) == 1
    assert finals[0].model_extra["switchboard"]["routing"]["route"] == "cards"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    # The raw stream ends with the [DONE] sentinel.
    with httpx.stream(
        "POST",
        server.base_url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {server.key}"},
        json={"model": "support", "stream": True, "messages": [{"role": "user", "content": "fees?"}]},
        timeout=30,
    ) as resp:
        lines = [l for l in resp.iter_lines() if l.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"


def test_the_header_keeps_one_conversation_and_answers_an_interrupt(server):
    c = client(server)
    h = {"X-Switchboard-Conversation": "openai-chat-1"}
    first = c.chat.completions.create(
        model="support", messages=[{"role": "user", "content": "I want to talk to a human agent"}], extra_headers=h
    )
    ext = first.model_extra["switchboard"]
    assert ext["status"] == "interrupted"
    assert ext["interrupts"][0]["payload"]["reason"] == "handoff"
    assert "waiting" in first.choices[0].message.content
    # The next message answers the pending interrupt in the same conversation.
    second = c.chat.completions.create(
        model="support", messages=[{"role": "user", "content": "Hello, this is Ana from support"}], extra_headers=h
    )
    ext2 = second.model_extra["switchboard"]
    assert ext2["conversation_id"] == ext["conversation_id"]
    assert ext2["status"] == "completed"
    assert second.choices[0].message.content == "[human agent] Hello, this is Ana from support"
    # The `user` field names a conversation too; another name is another conversation.
    a = c.chat.completions.create(model="support", messages=[{"role": "user", "content": "hi"}], user="u-7")
    b = c.chat.completions.create(model="support", messages=[{"role": "user", "content": "hi"}], user="u-7")
    d = c.chat.completions.create(model="support", messages=[{"role": "user", "content": "hi"}], user="u-8")
    ids = [x.model_extra["switchboard"]["conversation_id"] for x in (a, b, d)]
    assert ids[0] == ids[1] != ids[2]


def test_errors_have_openai_shape(server):
    with pytest.raises(openai.NotFoundError) as e:
        client(server).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.AuthenticationError):
        client(server, key="sb_wrong").chat.completions.create(model="support", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError) as e:
        client(server).chat.completions.create(model="support", messages=[{"role": "assistant", "content": "x"}])
    assert e.value.param == "messages"
    r = httpx.post(
        server.base_url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {server.key}", "content-type": "application/json"},
        content=b'{"model": "support", "messages": [',
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_request"
