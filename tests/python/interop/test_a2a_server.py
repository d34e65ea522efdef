"""The official `a2a-sdk` client discovers our Agent Card, sends, streams, handles an
input-required turn; malformed JSON-RPC gets the protocol's errors."""

import asyncio
import uuid

import httpx
import pytest
from interop_harness import server  # noqa: F401  (fixture)
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    TaskState,
)
from a2a.utils.errors import TaskNotCancelableError, TaskNotFoundError


def message(text, task_id=None, context_id=None):
    m = Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text=text)])
    if task_id:
        m.task_id = task_id
    if context_id:
        m.context_id = context_id
    return SendMessageRequest(message=m)


async def with_client(server, streaming, fn):
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {server.key}"}, timeout=30) as http:
        card = await A2ACardResolver(http, server.base_url).get_agent_card()
        client = ClientFactory(ClientConfig(httpx_client=http, streaming=streaming)).create(card)
        return await fn(card, client)


async def collect(client, req):
    return [ev async for ev in client.send_message(req)]


def test_the_card_is_discovered_with_skills_from_the_graph(server):
    async def go(card, _client):
        return card

    card = asyncio.run(with_client(server, False, go))
    assert card.name == "support"
    assert card.capabilities.streaming
    assert card.supported_interfaces[0].url == server.base_url + "/a2a/support"
    assert card.supported_interfaces[0].protocol_binding == "JSONRPC"
    skills = {s.id for s in card.skills}
    assert {"account", "cards", "transfers", "faq", "human_handoff"} <= skills


def test_send_and_get(server):
    async def go(_card, client):
        [ev] = await collect(client, message("Hi, what is my current balance?"))
        task = ev.task
        got = await client.get_task(GetTaskRequest(id=task.id))
        return task, got

    task, got = asyncio.run(with_client(server, False, go))
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert "balance" in task.artifacts[0].parts[0].text
    assert task.history[0].parts[0].text == "Hi, what is my current balance?"
    assert got.id == task.id and got.status.state == TaskState.TASK_STATE_COMPLETED


def test_stream(server):
    async def go(_card, client):
        return await collect(client, message("My card was stolen, help!"))

    events = asyncio.run(with_client(server, True, go))
    assert events[0].HasField("task")
    assert events[0].task.status.state == TaskState.TASK_STATE_WORKING
    text = "".join(p.text for e in events if e.HasField("artifact_update") for p in e.artifact_update.artifact.parts)
    assert "card" in text
    assert events[-1].HasField("status_update")
    assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED


def test_an_input_required_turn_is_answered_in_the_same_task(server):
    async def go(_card, client):
        first = await collect(client, message("I have a complaint about the service", context_id="ctx-handoff"))
        t = first[0].task
        assert first[-1].status_update.status.state == TaskState.TASK_STATE_INPUT_REQUIRED, first
        assert t.context_id == "ctx-handoff"
        events = await collect(client, message("This is Bo from the desk", task_id=t.id, context_id=t.context_id))
        final = await client.get_task(GetTaskRequest(id=t.id))
        return first[-1].status_update, events, final, t

    waiting, events, final, t = asyncio.run(with_client(server, True, go))
    assert "waiting" in waiting.status.message.parts[0].text
    assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
    assert final.id == t.id
    assert final.status.state == TaskState.TASK_STATE_COMPLETED
    assert final.artifacts[-1].parts[0].text == "[human agent] This is Bo from the desk"
    assert [m.role for m in final.history][:2] == [Role.ROLE_USER, Role.ROLE_AGENT]


def test_cancel_and_unknown_tasks(server):
    async def go(_card, client):
        [ev] = await collect(client, message("I want to talk to a human agent"))
        t = ev.task
        cancelled = await client.cancel_task(CancelTaskRequest(id=t.id))
        with pytest.raises(TaskNotCancelableError):
            await client.cancel_task(CancelTaskRequest(id=t.id))
        with pytest.raises(TaskNotFoundError):
            await client.get_task(GetTaskRequest(id="run_doesnotexist"))
        return cancelled

    cancelled = asyncio.run(with_client(server, False, go))
    assert cancelled.status.state == TaskState.TASK_STATE_CANCELED


def rpc(server, body, key=None, raw=None):
    return httpx.post(
        server.base_url + "/a2a/support",
        headers={"authorization": f"Bearer {key or server.key}", "content-type": "application/json"},
        content=raw if raw is not None else None,
        json=body if raw is None else None,
        timeout=30,
    )


def test_bad_json_rpc_gets_protocol_errors(server):
    cases = [
        (None, b"{not json", -32700),
        ([{"jsonrpc": "2.0", "id": 1, "method": "GetTask"}], None, -32600),
        ({"jsonrpc": "2.0", "id": 1, "method": "Frobnicate", "params": {}}, None, -32601),
        ({"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {}}, None, -32602),
        ({"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "nope"}}, None, -32001),
        ({"jsonrpc": "2.0", "id": 1, "method": "SendMessage",
          "params": {"message": {"role": "ROLE_USER", "messageId": "m", "parts": [{"text": "x" * 40000}]}}}, None, -32602),
        ({"jsonrpc": "2.0", "id": 1, "method": "SendMessage",
          "params": {"message": {"role": "ROLE_USER", "messageId": "m", "parts": [{"url": "https://x/y.pdf"}]}}}, None, -32005),
        ({"jsonrpc": "2.0", "id": 1, "method": "CreateTaskPushNotificationConfig", "params": {}}, None, -32003),
    ]
    for body, raw, code in cases:
        r = rpc(server, body, raw=raw)
        assert r.status_code == 200, r.text
        assert r.json()["error"]["code"] == code, (body, r.text)
    r = rpc(server, {"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "x"}}, key="sb_wrong")
    assert r.status_code == 401
    r = httpx.post(server.base_url + "/a2a/nope", headers={"authorization": f"Bearer {server.key}"}, json={}, timeout=30)
    assert r.status_code == 404


def test_the_v03_dialect(server):
    send = {"jsonrpc": "2.0", "id": "a", "method": "message/send",
            "params": {"message": {"kind": "message", "messageId": "m1", "role": "user",
                                   "parts": [{"kind": "text", "text": "What are your branch opening hours?"}]}}}
    r = rpc(server, send).json()["result"]
    assert r["kind"] == "task" and r["status"]["state"] == "completed"
    assert r["artifacts"][0]["parts"][0]["kind"] == "text"
    got = rpc(server, {"jsonrpc": "2.0", "id": "b", "method": "tasks/get", "params": {"id": r["id"]}}).json()["result"]
    assert got["id"] == r["id"]
    with httpx.stream(
        "POST",
        server.base_url + "/a2a/support",
        headers={"authorization": f"Bearer {server.key}"},
        json={**send, "method": "message/stream"},
        timeout=30,
    ) as resp:
        import json

        events = [json.loads(l[6:])["result"] for l in resp.iter_lines() if l.startswith("data: ")]
    assert events[0]["kind"] == "task"
    assert events[-1]["kind"] == "status-update" and events[-1]["final"] is True
    assert events[-1]["status"]["state"] == "completed"
