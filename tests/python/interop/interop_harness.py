"""Test harness (not a conftest: test folders share one pytest run): `switchboard serve` on a free loopback port over a temporary data directory, and a
scripted remote A2A agent built on the official `a2a-sdk` server.

The binary comes from the SWITCHBOARD_BIN environment variable. The server prints the admin key it
creates at first start, then `Switchboard listening on http://ADDR`.
"""

import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

HERE = pathlib.Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running `switchboard serve`."""

    def __init__(self, config: str = "", assistants_dir: str | None = None, env: dict | None = None):
        binary = os.environ.get("SWITCHBOARD_BIN")
        if not binary:
            raise RuntimeError("set SWITCHBOARD_BIN to the switchboard binary")
        self.dir = tempfile.TemporaryDirectory()
        cfg = pathlib.Path(self.dir.name) / "config.toml"
        cfg.write_text(config)
        env_extra = env
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
        env["SWITCHBOARD_BIN"] = binary
        # Most of these tests drive the demo `support` graph (its keyword router and human-handoff
        # interrupt): serve it alone, without the reference assistant found under ./assistants,
        # unless the test names the assistants folder.
        env["SWITCHBOARD_ASSISTANTS_DIR"] = assistants_dir or str(pathlib.Path(self.dir.name) / "no-assistants")
        env.update(env_extra or {})
        self.proc = subprocess.Popen(
            [binary, "serve", "--config", str(cfg), "--addr", "127.0.0.1:0", "--data-dir", self.dir.name],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.key = None
        # A first start of the reference assistant may train its router.
        deadline = time.time() + (300 if assistants_dir else 60)
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            line = line.strip()
            if line.startswith("sb_"):
                self.key = line
            if line.startswith("Switchboard listening on "):
                self.base_url = line.removeprefix("Switchboard listening on ").split(" ")[0]
                break
        else:
            self.stop()
            raise RuntimeError("switchboard serve did not start")
        if self.key is None:
            self.stop()
            raise RuntimeError("switchboard serve printed no admin key")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.dir.cleanup()


class RemoteAgent:
    """The scripted A2A agent of `remote_agent.py`, in its own process."""

    def __init__(self, mode: str = "normal"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "remote_agent.py"), str(self.port), mode],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/.well-known/agent-card.json", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("the remote agent did not start")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def server():
    """A server with the default assistant only."""
    s = Server()
    yield s
    s.stop()
