"""`switchboard llm chat` against the fakes: the CLI path a person uses for manual checks."""

import os
import subprocess


def run_chat(fake, provider, *extra, env_key):
    env = dict(os.environ, **{env_key: "sk-cli-test"})
    base = fake.base_url + ("/v1" if provider == "openai" else "")
    return subprocess.run(
        [os.environ["SWITCHBOARD_BIN"], "llm", "chat", "--provider", provider, "--model", "m", "--base-url", base, *extra, "Hello?"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def test_llm_chat_streams_from_the_anthropic_fake(anthropic_fake):
    anthropic_fake.script({"reply": {"text": "Streamed hello."}})
    r = run_chat(anthropic_fake, "anthropic", "--stream", env_key="ANTHROPIC_API_KEY")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "Streamed hello."
    assert "finish: Stop" in r.stderr


def test_llm_chat_reports_a_typed_error_without_the_key(openai_fake):
    openai_fake.script(*[{"fault": {"kind": "status", "status": 401}}] * 3)
    r = run_chat(openai_fake, "openai", env_key="OPENAI_API_KEY")
    assert r.returncode != 0
    assert "openai returned 401" in r.stderr
    assert "sk-cli-test" not in r.stderr + r.stdout
