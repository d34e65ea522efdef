"""The official `boto3` bedrock-runtime client against the Bedrock fake.

boto3 signs with SigV4 (the fake verifies it independently) and parses the binary
event stream itself: if it cannot, the fake is wrong.
"""

import json

import boto3
import botocore.config
import botocore.exceptions
import pytest

from conftest import WEATHER_SCHEMA, Fake

# The fake's test credentials (testkit `bedrock::TEST_ACCESS_KEY_ID` / `TEST_SECRET_ACCESS_KEY`).
ACCESS_KEY_ID = "AKIDSWITCHBOARDFAKE"
SECRET_ACCESS_KEY = "switchboard-fake/secret+key/for-local-tests-only"
MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"
TOOLS = {"tools": [{"toolSpec": {"name": "get_weather", "description": "Current weather",
                                 "inputSchema": {"json": WEATHER_SCHEMA}}}]}


@pytest.fixture(scope="session")
def bedrock_fake_server():
    fake = Fake("bedrock")
    yield fake
    fake.stop()


@pytest.fixture
def bedrock_fake(bedrock_fake_server):
    bedrock_fake_server.reset()
    return bedrock_fake_server


def client(fake, secret=SECRET_ACCESS_KEY):
    return boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=fake.base_url,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=secret,
        config=botocore.config.Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )


def test_converse_plain_reply(bedrock_fake):
    bedrock_fake.script({"reply": {"text": "Paris is sunny.", "usage": {
        "input_tokens": 1110, "output_tokens": 4, "cache_read_tokens": 1000, "cache_write_tokens": 100}}})
    r = client(bedrock_fake).converse(
        modelId=MODEL,
        system=[{"text": "You are terse."}],
        messages=[{"role": "user", "content": [{"text": "Weather in Paris?"}]}],
        inferenceConfig={"maxTokens": 64, "temperature": 0.2, "stopSequences": ["###"]},
    )
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert r["output"]["message"]["content"] == [{"text": "Paris is sunny."}]
    assert r["stopReason"] == "end_turn"
    assert r["usage"]["inputTokens"] == 10
    assert r["usage"]["cacheReadInputTokens"] == 1000
    assert r["usage"]["cacheWriteInputTokens"] == 100
    assert r["usage"]["totalTokens"] == 1114
    sent = bedrock_fake.requests()[0]
    # boto3 encodes the model id as one path label; the fake checked its signature over
    # the double-encoded canonical path.
    assert sent["path"] == "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
    assert sent["headers"]["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDSWITCHBOARDFAKE/")
    assert sent["body"]["inferenceConfig"]["stopSequences"] == ["###"]


def test_converse_stream_text(bedrock_fake):
    text = "Streaming through Bedrock, token by token: héllo wörld!"
    bedrock_fake.script({"reply": {"text": text}, "split_writes": True})
    r = client(bedrock_fake).converse_stream(
        modelId=MODEL, messages=[{"role": "user", "content": [{"text": "stream please"}]}])
    events = list(r["stream"])
    kinds = [next(iter(e)) for e in events]
    assert kinds[0] == "messageStart" and kinds[-2:] == ["messageStop", "metadata"]
    got = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert got == text
    assert events[-2]["messageStop"]["stopReason"] == "end_turn"
    assert events[-1]["metadata"]["usage"]["outputTokens"] > 0
    assert bedrock_fake.requests()[0]["path"].endswith("/converse-stream")


def test_tool_call_round_trip(bedrock_fake):
    bedrock_fake.script(
        {"reply": {"text": "Checking.", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}},
        {"reply": {"text": "It is 18C in Paris."}},
    )
    c = client(bedrock_fake)
    messages = [{"role": "user", "content": [{"text": "Weather in Paris?"}]}]
    r = c.converse(modelId=MODEL, messages=messages, toolConfig=TOOLS)
    assert r["stopReason"] == "tool_use"
    content = r["output"]["message"]["content"]
    use = next(b["toolUse"] for b in content if "toolUse" in b)
    assert use["name"] == "get_weather" and use["input"] == {"city": "Paris"}
    messages.append(r["output"]["message"])
    messages.append({"role": "user", "content": [{"toolResult": {
        "toolUseId": use["toolUseId"], "content": [{"json": {"temp_c": 18}}], "status": "success"}}]})
    r2 = c.converse(modelId=MODEL, messages=messages, toolConfig=TOOLS)
    assert r2["output"]["message"]["content"][0]["text"] == "It is 18C in Paris."
    sent = bedrock_fake.requests()[1]["body"]
    assert sent["messages"][2]["content"][0]["toolResult"]["toolUseId"] == use["toolUseId"]


def test_streamed_tool_call(bedrock_fake):
    args = {"city": "Zürich", "unit": "C", "note": "a long enough argument string"}
    bedrock_fake.script({"reply": {"tool_calls": [{"name": "get_weather", "arguments": args}]}})
    r = client(bedrock_fake).converse_stream(
        modelId=MODEL, messages=[{"role": "user", "content": [{"text": "Zürich?"}]}], toolConfig=TOOLS)
    start, pieces, stop_reason = None, [], None
    for e in r["stream"]:
        if "contentBlockStart" in e:
            start = e["contentBlockStart"]["start"]["toolUse"]
        elif "contentBlockDelta" in e and "toolUse" in e["contentBlockDelta"]["delta"]:
            pieces.append(e["contentBlockDelta"]["delta"]["toolUse"]["input"])
        elif "messageStop" in e:
            stop_reason = e["messageStop"]["stopReason"]
    assert start["name"] == "get_weather" and start["toolUseId"]
    assert len(pieces) > 1 and json.loads("".join(pieces)) == args
    assert stop_reason == "tool_use"


def test_throttling_is_a_typed_client_error(bedrock_fake):
    bedrock_fake.script({"fault": {"kind": "status", "status": 429}})
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client(bedrock_fake).converse(modelId=MODEL, messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert e.value.response["Error"]["Code"] == "ThrottlingException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert type(e.value).__name__ == "ThrottlingException"


def test_wrong_secret_fails_signature_check(bedrock_fake):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client(bedrock_fake, secret="wrong").converse(
            modelId=MODEL, messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert e.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_validation_error_names_the_problem(bedrock_fake):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client(bedrock_fake).converse(modelId=MODEL, messages=[
            {"role": "user", "content": [{"text": "a"}]}, {"role": "user", "content": [{"text": "b"}]}])
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert "alternate" in e.value.response["Error"]["Message"]


def test_exception_frame_mid_stream(bedrock_fake):
    bedrock_fake.script({"reply": {"text": "one two three four"}, "fault": {"kind": "stream_error", "after_events": 2}})
    r = client(bedrock_fake).converse_stream(
        modelId=MODEL, messages=[{"role": "user", "content": [{"text": "go"}]}])
    seen = []
    with pytest.raises(botocore.exceptions.EventStreamError) as e:
        for ev in r["stream"]:
            seen.append(ev)
    assert e.value.response["Error"]["Code"] == "serviceUnavailableException"
    assert len(seen) == 2


def test_corrupted_frame_is_rejected_by_boto3(bedrock_fake):
    bedrock_fake.script({"reply": {"text": "one two three"}, "fault": {"kind": "malformed", "after_events": 1}})
    r = client(bedrock_fake).converse_stream(
        modelId=MODEL, messages=[{"role": "user", "content": [{"text": "go"}]}])
    with pytest.raises(Exception) as e:
        list(r["stream"])
    assert "Checksum" in type(e.value).__name__ or "checksum" in str(e.value).lower()


def test_llm_chat_cli_signs_with_env_credentials(bedrock_fake):
    import os
    import subprocess
    bedrock_fake.script({"reply": {"text": "Signed hello."}})
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_REGION="eu-west-1", AWS_ACCESS_KEY_ID=ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY)
    r = subprocess.run(
        [os.environ["SWITCHBOARD_BIN"], "llm", "chat", "--provider", "bedrock", "--model", MODEL,
         "--base-url", bedrock_fake.base_url, "--stream", "Hello?"],
        capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "Signed hello."
    assert "/eu-west-1/bedrock/aws4_request" in bedrock_fake.requests()[0]["headers"]["authorization"]
    assert SECRET_ACCESS_KEY not in r.stderr + r.stdout
