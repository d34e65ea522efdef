"""The official `google-genai` client against the Vertex/Gemini fake.

Vertex mode authenticates with a service-account key whose `token_uri` is the fake
(google-auth signs the RS256 JWT assertion, the fake verifies it and issues the
bearer token); the API-key mode uses `x-goog-api-key`. If the SDK cannot parse a
reply or a stream chunk, the fake is wrong.
"""

import json
import urllib.request

import pytest
from google import genai
from google.genai import errors, types
from google.oauth2 import service_account

from conftest import WEATHER_SCHEMA, Fake

PROJECT = "fake-project"
WEATHER = types.Tool(function_declarations=[types.FunctionDeclaration(
    name="get_weather", description="Current weather", parameters_json_schema=WEATHER_SCHEMA)])


@pytest.fixture(scope="session")
def vertex_fake_server():
    fake = Fake("vertex")
    yield fake
    fake.stop()


@pytest.fixture
def vertex_fake(vertex_fake_server):
    vertex_fake_server.reset()
    return vertex_fake_server


def tokens_issued(fake):
    with urllib.request.urlopen(fake.base_url + "/_fake/vertex/tokens", timeout=10) as r:
        return json.loads(r.read())["issued"]


def vertex_client(fake):
    with urllib.request.urlopen(fake.base_url + "/_fake/vertex/service-account.json", timeout=10) as r:
        info = json.loads(r.read())
    assert info["token_uri"] == fake.base_url + "/token"
    creds = service_account.Credentials.from_service_account_info(
        info, scopes=["https://www.googleapis.com/auth/cloud-platform"])
    return genai.Client(
        vertexai=True, project=PROJECT, location="us-central1", credentials=creds,
        http_options=types.HttpOptions(base_url=fake.base_url, api_version="v1"))


def api_key_client(fake):
    return genai.Client(api_key="AIza-fake-key", http_options=types.HttpOptions(base_url=fake.base_url))


def test_vertex_plain_reply_with_service_account(vertex_fake):
    vertex_fake.script({"reply": {"text": "Paris is sunny.", "usage": {
        "input_tokens": 60, "output_tokens": 36, "reasoning_tokens": 24, "cache_read_tokens": 10}}})
    before = tokens_issued(vertex_fake)
    c = vertex_client(vertex_fake)
    r = c.models.generate_content(
        model="gemini-2.5-flash", contents="Weather in Paris?",
        config=types.GenerateContentConfig(
            system_instruction="You are terse.", temperature=0.2, max_output_tokens=64, stop_sequences=["###"]))
    assert r.text == "Paris is sunny."
    assert r.candidates[0].finish_reason == types.FinishReason.STOP
    u = r.usage_metadata
    assert (u.prompt_token_count, u.candidates_token_count, u.thoughts_token_count) == (60, 12, 24)
    assert u.cached_content_token_count == 10
    assert r.response_id
    assert tokens_issued(vertex_fake) == before + 1
    sent = vertex_fake.requests()[0]
    assert sent["path"] == "/v1/projects/fake-project/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent"
    assert sent["headers"]["authorization"].startswith("Bearer ya29.fake-")
    assert sent["body"]["systemInstruction"]["parts"][0]["text"] == "You are terse."
    assert sent["body"]["generationConfig"]["stopSequences"] == ["###"]


def test_vertex_stream(vertex_fake):
    text = "Streaming through Vertex, chunk by chunk: héllo 漢字!"
    vertex_fake.script({"reply": {"text": text}, "split_writes": True})
    c = vertex_client(vertex_fake)  # keep the client alive while the stream is read
    chunks = list(c.models.generate_content_stream(model="gemini-2.5-flash", contents="stream please"))
    assert len(chunks) > 3
    assert "".join(ch.text or "" for ch in chunks) == text
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata.candidates_token_count > 0
    sent = vertex_fake.requests()[0]
    assert sent["path"].endswith(":streamGenerateContent") and sent["query"] == "alt=sse"


def test_vertex_tool_round_trip_echoes_thought_signature(vertex_fake):
    # gemini-3 models refuse a replayed function call without its thought signature.
    vertex_fake.script(
        {"reply": {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}},
        {"reply": {"text": "It is 18C in Paris."}},
    )
    c = vertex_client(vertex_fake)
    cfg = types.GenerateContentConfig(
        tools=[WEATHER], automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))
    contents = [types.Content(role="user", parts=[types.Part(text="Weather in Paris?")])]
    r = c.models.generate_content(model="gemini-3-pro-preview", contents=contents, config=cfg)
    call = r.function_calls[0]
    assert call.name == "get_weather" and call.args == {"city": "Paris"}
    assert r.candidates[0].content.parts[0].thought_signature
    contents.append(r.candidates[0].content)
    contents.append(types.Content(role="user", parts=[
        types.Part.from_function_response(name="get_weather", response={"temp_c": 18})]))
    r2 = c.models.generate_content(model="gemini-3-pro-preview", contents=contents, config=cfg)
    assert r2.text == "It is 18C in Paris."
    sent = vertex_fake.requests()[1]["body"]
    assert sent["contents"][1]["parts"][0]["thoughtSignature"]
    assert sent["contents"][2]["parts"][0]["functionResponse"]["response"] == {"temp_c": 18}


def test_vertex_missing_signature_is_refused(vertex_fake):
    c = vertex_client(vertex_fake)
    contents = [
        types.Content(role="user", parts=[types.Part(text="Weather?")]),
        types.Content(role="model", parts=[types.Part.from_function_call(name="get_weather", args={"city": "Paris"})]),
        types.Content(role="user", parts=[types.Part.from_function_response(name="get_weather", response={"t": 1})]),
    ]
    with pytest.raises(errors.ClientError) as e:
        c.models.generate_content(model="gemini-3-pro-preview", contents=contents,
                                  config=types.GenerateContentConfig(tools=[WEATHER]))
    assert e.value.code == 400 and "thought_signature" in e.value.message


def test_vertex_rate_limit_error(vertex_fake):
    vertex_fake.script({"fault": {"kind": "status", "status": 429, "retry_after": 17}})
    c = vertex_client(vertex_fake)
    with pytest.raises(errors.ClientError) as e:
        c.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert e.value.code == 429 and e.value.status == "RESOURCE_EXHAUSTED"
    assert e.value.details["error"]["details"][0]["retryDelay"] == "17s"


def test_vertex_bad_token_is_unauthenticated(vertex_fake):
    c = genai.Client(vertexai=True, project=PROJECT, location="us-central1",
                     credentials=_static_token("ya29.forged"),
                     http_options=types.HttpOptions(base_url=vertex_fake.base_url, api_version="v1"))
    with pytest.raises(errors.ClientError) as e:
        c.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert e.value.code == 401 and e.value.status == "UNAUTHENTICATED"


def _static_token(token):
    import google.oauth2.credentials
    return google.oauth2.credentials.Credentials(token=token)


def test_api_key_plain_stream_and_tool_call(vertex_fake):
    vertex_fake.script(
        {"reply": {"text": "Hello from the API-key path."}},
        {"reply": {"text": "and streamed"}},
        {"reply": {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}},
    )
    c = api_key_client(vertex_fake)
    assert c.models.generate_content(model="gemini-2.5-flash", contents="hi").text == "Hello from the API-key path."
    streamed = "".join(ch.text or "" for ch in c.models.generate_content_stream(model="gemini-2.5-flash", contents="hi"))
    assert streamed == "and streamed"
    r = c.models.generate_content(
        model="gemini-2.5-flash", contents="Oslo?",
        config=types.GenerateContentConfig(
            tools=[WEATHER], automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True)))
    assert r.function_calls[0].args == {"city": "Oslo"}
    reqs = vertex_fake.requests()
    assert reqs[0]["path"] in ("/v1/models/gemini-2.5-flash:generateContent",
                               "/v1beta/models/gemini-2.5-flash:generateContent")
    assert reqs[0]["headers"]["x-goog-api-key"] == "AIza-fake-key"


def test_api_key_mid_stream_error(vertex_fake):
    vertex_fake.script({"reply": {"text": "a b c d e"}, "fault": {"kind": "stream_error", "after_events": 2}})
    got = []
    c = api_key_client(vertex_fake)
    with pytest.raises(errors.APIError) as e:
        for ch in c.models.generate_content_stream(model="gemini-2.5-flash", contents="go"):
            got.append(ch.text)
    assert e.value.code == 503
    assert len(got) == 2


def test_llm_chat_cli_with_a_service_account_file(vertex_fake, tmp_path):
    import os
    import subprocess
    with urllib.request.urlopen(vertex_fake.base_url + "/_fake/vertex/service-account.json", timeout=10) as r:
        (tmp_path / "sa.json").write_bytes(r.read())
    vertex_fake.script({"reply": {"text": "Vertex hello."}})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "GEMINI_"))}
    env["GOOGLE_APPLICATION_CREDENTIALS"] = str(tmp_path / "sa.json")
    r = subprocess.run(
        [os.environ["SWITCHBOARD_BIN"], "llm", "chat", "--provider", "vertex", "--model", "gemini-2.5-flash",
         "--base-url", vertex_fake.base_url, "Hello?"],
        capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "Vertex hello."
    assert vertex_fake.requests()[0]["headers"]["authorization"].startswith("Bearer ya29.fake-")
