"""The official `anthropic` client against the Anthropic fake: if it cannot parse the fake, the fake is wrong."""

import anthropic
import pytest

from conftest import WEATHER_SCHEMA, raw_post

TOOLS = [{"name": "get_weather", "description": "Current weather", "input_schema": WEATHER_SCHEMA}]


def client(fake, **kw):
    return anthropic.Anthropic(base_url=fake.base_url, api_key="sk-ant-test", **kw)


def test_plain_reply_with_cache_usage(anthropic_fake):
    anthropic_fake.script({"reply": {"text": "Paris is sunny.", "usage": {
        "input_tokens": 1110, "output_tokens": 4, "cache_read_tokens": 1000, "cache_write_tokens": 100}}})
    r = client(anthropic_fake).messages.create(
        model="claude-fake-1",
        max_tokens=100,
        system="Be terse.",
        messages=[{"role": "user", "content": "Weather?"}],
        stop_sequences=["###"],
        extra_body={"temperature": 0.2},
    )
    assert r.content[0].type == "text" and r.content[0].text == "Paris is sunny."
    assert r.stop_reason == "end_turn"
    assert r.usage.input_tokens == 10
    assert r.usage.cache_read_input_tokens == 1000
    assert r.usage.cache_creation_input_tokens == 100
    sent = anthropic_fake.requests()[0]
    # The API reference says `x-api-key`; newer SDKs send a bearer token. Either must reach the fake.
    assert sent["headers"].get("x-api-key") == "sk-ant-test" or sent["headers"].get("authorization") == "Bearer sk-ant-test"
    assert sent["headers"]["anthropic-version"]
    assert sent["body"]["temperature"] == 0.2


def test_streamed_reply(anthropic_fake):
    text = "Streaming, token by token: héllo 漢字!"
    anthropic_fake.script({"reply": {"text": text}, "split_writes": True, "keepalive": True})
    with client(anthropic_fake).messages.stream(
        model="claude-fake-1", max_tokens=100, messages=[{"role": "user", "content": "stream"}]
    ) as stream:
        got = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert got == text
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


def test_tool_use_round_trip(anthropic_fake):
    anthropic_fake.script(
        {"reply": {"text": "Checking.", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}},
        {"reply": {"text": "18C in Paris."}},
    )
    c = client(anthropic_fake)
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    r = c.messages.create(model="claude-fake-1", max_tokens=100, messages=messages, tools=TOOLS)
    assert r.stop_reason == "tool_use"
    tool_use = next(b for b in r.content if b.type == "tool_use")
    assert tool_use.name == "get_weather" and tool_use.input == {"city": "Paris"}
    messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in r.content]})
    messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "18C"}]})
    r2 = c.messages.create(model="claude-fake-1", max_tokens=100, messages=messages, tools=TOOLS)
    assert r2.content[0].text == "18C in Paris."
    sent = anthropic_fake.requests()[1]["body"]["messages"]
    assert sent[-1]["content"][0]["tool_use_id"] == tool_use.id


def test_streamed_tool_use(anthropic_fake):
    anthropic_fake.script({"reply": {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Zürich"}}]}, "split_writes": True})
    with client(anthropic_fake).messages.stream(
        model="claude-fake-1", max_tokens=100, messages=[{"role": "user", "content": "Zürich?"}], tools=TOOLS
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert final.content[0].input == {"city": "Zürich"}


def test_overloaded_529(anthropic_fake):
    anthropic_fake.script({"fault": {"kind": "status", "status": 529}})
    with pytest.raises(anthropic.APIStatusError) as e:
        client(anthropic_fake, max_retries=0).messages.create(
            model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert e.value.status_code == 529
    assert e.value.body["error"]["type"] == "overloaded_error"


def test_rate_limit_429(anthropic_fake):
    anthropic_fake.script({"fault": {"kind": "status", "status": 429, "retry_after": 3}})
    with pytest.raises(anthropic.RateLimitError) as e:
        client(anthropic_fake, max_retries=0).messages.create(
            model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert e.value.response.headers["retry-after"] == "3"
    assert e.value.response.headers["request-id"]


def test_mid_stream_error_event(anthropic_fake):
    anthropic_fake.script({"reply": {"text": "this will break halfway"}, "fault": {"kind": "stream_error", "after_events": 3}})
    with pytest.raises(anthropic.APIStatusError) as e:
        with client(anthropic_fake).messages.stream(
            model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            for _ in stream.text_stream:
                pass
    assert "overloaded" in str(e.value).lower()


def test_missing_max_tokens_is_rejected(anthropic_fake):
    status, body = raw_post(
        anthropic_fake.base_url + "/v1/messages",
        {"x-api-key": "k", "anthropic-version": "2023-06-01"},
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
