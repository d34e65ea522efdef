#!/usr/bin/env python3
"""Load on `switchboard serve`: turns/s and latency of POST /v1/conversations/{id}/messages.

Starts the binary ($SWITCHBOARD_BIN) on a free port with a fresh data dir, creates conversations,
then runs CONCURRENCY keep-alive clients for SECONDS, each posting messages to its own
conversations. Prints one JSON line. Standard library only; the client is Python, so on a small
machine it competes with the server for CPU: the figures are a floor, not the server's ceiling.
"""

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time

CONCURRENCY = int(os.environ.get("CONCURRENCY", "32"))
SECONDS = float(os.environ.get("SECONDS", "10"))
CONVS_PER_CLIENT = 4
TEXTS = ["what is my balance?", "I lost my card", "send 20 EUR to Bob", "what are your fees?", "hello"]


async def request(reader, writer, method, path, key, body=None):
    data = json.dumps(body).encode() if body is not None else b""
    head = f"{method} {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\ncontent-length: {len(data)}\r\n"
    if body is not None:
        head += "content-type: application/json\r\n"
    writer.write(head.encode() + b"\r\n" + data)
    await writer.drain()
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.decode().partition(":")
        if k.lower() == "content-length":
            length = int(v)
    payload = await reader.readexactly(length)
    return status, json.loads(payload) if payload else None


async def client(port, key, stop_at, lat, errors):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    convs = []
    for _ in range(CONVS_PER_CLIENT):
        s, v = await request(reader, writer, "POST", "/v1/conversations", key, {})
        convs.append(v["id"])
    i = 0
    while time.monotonic() < stop_at:
        conv = convs[i % len(convs)]
        t0 = time.perf_counter()
        s, v = await request(reader, writer, "POST", f"/v1/conversations/{conv}/messages", key,
                             {"text": random.choice(TEXTS)})
        lat.append(time.perf_counter() - t0)
        if s != 200:
            errors.append(s)
        i += 1
    writer.close()


def main():
    binary = os.environ.get("SWITCHBOARD_BIN", "target/release/switchboard")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tempfile.mkdtemp(prefix="sb-bench-")
    env = {**os.environ, "SWITCHBOARD_RATE_LIMIT_PER_SECOND": "0"}
    proc = subprocess.Popen([binary, "serve", "--addr", f"127.0.0.1:{port}", "--data-dir", data],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    key = None
    for line in proc.stdout:
        if line.startswith("sb_"):
            key = line.strip()
        if line.startswith("Switchboard listening"):
            break
    lat, errors = [], []

    async def run():
        stop_at = time.monotonic() + SECONDS
        await asyncio.gather(*(client(port, key, stop_at, lat, errors) for _ in range(CONCURRENCY)))

    t0 = time.monotonic()
    asyncio.run(run())
    elapsed = time.monotonic() - t0
    rss_kb = int(open(f"/proc/{proc.pid}/status").read().split("VmRSS:")[1].split()[0])
    proc.terminate()
    proc.wait(timeout=30)
    lat.sort()
    pct = lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2)
    print(json.dumps({"bench": "server_turns", "concurrency": CONCURRENCY, "seconds": round(elapsed, 1),
                      "turns": len(lat), "turns_per_s": round(len(lat) / elapsed, 1), "p50_ms": pct(0.5),
                      "p99_ms": pct(0.99), "errors": len(errors), "server_rss_mib": round(rss_kb / 1024, 1)}))


if __name__ == "__main__":
    sys.exit(main())
