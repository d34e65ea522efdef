"""The official `openai` client against the OpenAI fake: if it cannot parse the fake, the fake is wrong."""

import json

import openai
import pytest

from conftest import WEATHER_SCHEMA, raw_post

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather", "parameters": WEATHER_SCHEMA}}]


def client(fake, **kw):
    return openai.OpenAI(base_url=fake.base_url + "/v1", api_key="sk-test", **kw)


def test_plain_reply(openai_fake):
    openai_fake.script({"reply": {"text": "Paris is sunny.", "usage": {"input_tokens": 12, "output_tokens": 4, "cache_read_tokens": 8}}})
    r = client(openai_fake).chat.completions.create(
        model="gpt-4.1",
        messages=[{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Weather?"}],
        temperature=0.2,
        stop=["###"],
        max_completion_tokens=50,
    )
    assert r.choices[0].message.content == "Paris is sunny."
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens == 12 and r.usage.completion_tokens == 4
    assert r.usage.prompt_tokens_details.cached_tokens == 8
    sent = openai_fake.requests()[0]
    assert sent["headers"]["authorization"] == "Bearer sk-test"
    assert sent["body"]["stop"] == ["###"]


def test_default_reply_without_script(openai_fake):
    r = client(openai_fake).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content


def test_streamed_reply_with_usage(openai_fake):
    text = "Streaming, token by token: héllo 漢字!"
    openai_fake.script({"reply": {"text": text}, "split_writes": True, "keepalive": True})
    chunks = list(
        client(openai_fake).chat.completions.create(
            model="gpt-4.1",
            messages=[{"role": "user", "content": "stream"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    got = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert got == text
    assert len(chunks) > 5
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_tool_call_round_trip(openai_fake):
    openai_fake.script(
        {"reply": {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}},
        {"reply": {"text": "18C in Paris."}},
    )
    c = client(openai_fake)
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    r = c.chat.completions.create(model="gpt-4.1", messages=messages, tools=TOOLS)
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    messages.append(r.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 18}'})
    r2 = c.chat.completions.create(model="gpt-4.1", messages=messages, tools=TOOLS)
    assert r2.choices[0].message.content == "18C in Paris."
    sent = openai_fake.requests()[1]["body"]["messages"]
    assert sent[-1] == {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 18}'}


def test_streamed_parallel_tool_calls(openai_fake):
    openai_fake.script(
        {"reply": {"tool_calls": [
            {"name": "get_weather", "arguments": {"city": "Paris"}},
            {"name": "get_weather", "arguments": {"city": "Zürich"}},
        ]}, "split_writes": True}
    )
    calls = {}
    for chunk in client(openai_fake).chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": "two cities"}], tools=TOOLS, stream=True
    ):
        for d in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            slot = calls.setdefault(d.index, {"id": None, "name": None, "args": ""})
            slot["id"] = d.id or slot["id"]
            if d.function and d.function.name:
                slot["name"] = d.function.name
            if d.function and d.function.arguments:
                slot["args"] += d.function.arguments
    assert [json.loads(calls[i]["args"]) for i in sorted(calls)] == [{"city": "Paris"}, {"city": "Zürich"}]
    assert calls[0]["id"] != calls[1]["id"]


def test_rate_limit_error(openai_fake):
    openai_fake.script({"fault": {"kind": "status", "status": 429, "retry_after": 1}})
    with pytest.raises(openai.RateLimitError) as e:
        client(openai_fake, max_retries=0).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 429
    assert e.value.response.headers["retry-after"] == "1"
    assert e.value.body["code"] == "rate_limit_exceeded"


def test_sdk_retries_a_503_then_succeeds(openai_fake):
    openai_fake.script({"fault": {"kind": "status", "status": 503, "retry_after": 0}}, {"reply": {"text": "recovered"}})
    r = client(openai_fake, max_retries=1).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "recovered"
    assert len(openai_fake.requests()) == 2


def test_context_length_error(openai_fake):
    openai_fake.script({"fault": {"kind": "context_overflow"}})
    with pytest.raises(openai.BadRequestError) as e:
        client(openai_fake).chat.completions.create(model="m", messages=[{"role": "user", "content": "long"}])
    assert e.value.code == "context_length_exceeded"


def test_mid_stream_error(openai_fake):
    openai_fake.script({"reply": {"text": "this will break halfway"}, "fault": {"kind": "stream_error", "after_events": 2}})
    with pytest.raises(openai.APIError):
        for _ in client(openai_fake).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            pass


def test_auth_is_checked(openai_fake):
    status, body = raw_post(
        openai_fake.base_url + "/v1/chat/completions", {}, {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
