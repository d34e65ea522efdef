"""Fixtures: start `switchboard fake-llm` for a vendor on a free loopback port.

The binary comes from the SWITCHBOARD_BIN environment variable. Each fake prints
`listening on http://ADDR` once bound; tests script it through `POST /_fake/script`
and read what the official client sent through `GET /_fake/requests`.
"""

import json
import os
import subprocess
import urllib.error
import urllib.request

import pytest


class Fake:
    """A running fake vendor server."""

    def __init__(self, vendor: str):
        binary = os.environ.get("SWITCHBOARD_BIN")
        if not binary:
            raise RuntimeError("set SWITCHBOARD_BIN to the switchboard binary")
        self.proc = subprocess.Popen(
            [binary, "fake-llm", "--vendor", vendor, "--addr", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError(f"fake did not start: {line!r} {self.proc.stderr.read()}")
        self.base_url = line.removeprefix("listening on ")

    def _call(self, method: str, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base_url + path,
            data=data,
            method=method,
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def script(self, *scenarios):
        """Queues scenarios (dicts in the testkit `Scenario` shape)."""
        return self._call("POST", "/_fake/script", list(scenarios))

    def requests(self):
        """Requests the fake received, oldest first."""
        return self._call("GET", "/_fake/requests")

    def reset(self):
        self._call("POST", "/_fake/reset", {})

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _fake(vendor):
    fake = Fake(vendor)
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def openai_fake_server():
    yield from _fake("openai")


@pytest.fixture(scope="session")
def anthropic_fake_server():
    yield from _fake("anthropic")


@pytest.fixture
def openai_fake(openai_fake_server):
    openai_fake_server.reset()
    return openai_fake_server


@pytest.fixture
def anthropic_fake(anthropic_fake_server):
    anthropic_fake_server.reset()
    return anthropic_fake_server


WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


def raw_post(url, headers, body):
    """POSTs JSON without any SDK; returns (status, parsed body)."""
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"content-type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
