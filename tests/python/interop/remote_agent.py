"""A tiny scripted A2A agent on the official `a2a-sdk` server, used as the remote agent our
router delegates to. Usage: `python remote_agent.py PORT MODE`.

Modes: `normal` (the script below), `hang` (accepts the request, never answers), `garbage`
(answers the JSON-RPC endpoint with something that is not A2A).

Script: a message containing "refund" asks which order (input-required); the answer completes the
refund. A message containing "stake my" asks how much (input-required); the answer completes the
stake. Anything else is echoed back in two streamed artifact chunks, with the context data part
we received, so the test can check what was shared (and that it was redacted).
"""

import asyncio
import json
import sys

import uvicorn
from a2a.helpers.proto_helpers import get_data_parts, new_text_message, new_text_part, new_task_from_user_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types.a2a_pb2 import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, TaskState
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route


# What each task waiting for input asked for, by task id.
ASKED: dict[str, str] = {}


class Scripted(AgentExecutor):
    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        task = context.current_task
        if task is None:
            task = new_task_from_user_message(context.message)
            await event_queue.enqueue_event(task)
        up = TaskUpdater(event_queue, task.id, task.context_id)
        text = context.get_user_input()
        data = get_data_parts(context.message.parts)
        waiting = task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
        if waiting:
            done = f"Staked {text}." if ASKED.pop(task.id, "") == "stake" else f"Refund for order {text} started."
            await up.add_artifact([new_text_part(done)], name="reply")
            await up.complete()
        elif "refund" in text:
            ASKED[task.id] = "refund"
            await up.requires_input(new_text_message("Which order number?", context_id=task.context_id, task_id=task.id))
        elif "stake my" in text:
            ASKED[task.id] = "stake"
            await up.requires_input(
                new_text_message("How much would you like to stake?", context_id=task.context_id, task_id=task.id)
            )
        else:
            await up.start_work()
            await up.add_artifact([new_text_part("remote got: ")], artifact_id="a1", name="reply")
            await asyncio.sleep(0.05)
            shared = json.dumps(data, sort_keys=True) if data else "{}"
            await up.add_artifact([new_text_part(f"{text} | context {shared}")], artifact_id="a1", append=True, last_chunk=True)
            await up.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        up = TaskUpdater(event_queue, context.task_id, context.context_id)
        await up.cancel()


def main():
    port, mode = int(sys.argv[1]), sys.argv[2]
    url = f"http://127.0.0.1:{port}"
    card = AgentCard(
        name="billing",
        description="Scripted billing agent",
        version="1.0.0",
        supported_interfaces=[AgentInterface(url=url + "/rpc", protocol_binding="JSONRPC", protocol_version="1.0")],
        capabilities=AgentCapabilities(streaming=True),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id="refunds", name="Refunds", description="Refunds", tags=["billing"])],
    )
    routes = list(create_agent_card_routes(card))
    if mode == "normal":
        handler = DefaultRequestHandler(agent_executor=Scripted(), task_store=InMemoryTaskStore(), agent_card=card)
        routes += create_jsonrpc_routes(handler, "/rpc")
    elif mode == "hang":

        async def hang(_request):
            await asyncio.sleep(3600)

        routes.append(Route("/rpc", hang, methods=["POST"]))
    else:

        async def garbage(_request):
            return PlainTextResponse("data: <html>oops</html>\n\n", media_type="text/event-stream")

        routes.append(Route("/rpc", garbage, methods=["POST"]))
    uvicorn.run(Starlette(routes=routes), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
