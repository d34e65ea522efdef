"""A small MCP server on the official `mcp` SDK (its `MCPServer`, formerly FastMCP): the tools that
Switchboard's MCP client tests call. Usage:

    python mcp_server.py stdio
    python mcp_server.py http PORT

Tools:
* `get_balance(account)`: a read-only lookup (`acc_1` has 120.50 EUR; others are an `isError` result);
* `freeze_account(account, reason)`: a side effect the tests mark approval-required; returns a
  confirmation with a counter, so a test can tell whether (and how often) it ran;
* `slow(seconds)`: sleeps, to hit the client's timeout;
* `crash()`: the server process dies mid-call (exit code 3), as a broken server would;
* `add_tool(name)`: registers a new tool `name` and notifies `notifications/tools/list_changed`.
"""

import asyncio
import os
import sys

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer(name="bank-tools", version="1.0.0")
FROZEN: list[str] = []
BALANCES = {"acc_1": "120.50 EUR"}


@server.tool(description="The balance of an account.")
def get_balance(account: str) -> str:
    if account not in BALANCES:
        raise ToolError(f"no account {account}")
    return f"{account}: {BALANCES[account]}"


@server.tool(description="Freeze an account (blocks all payments).")
def freeze_account(account: str, reason: str) -> str:
    FROZEN.append(account)
    return f"frozen {account} ({reason}); freezes so far: {len(FROZEN)}"


@server.tool(description="Sleep for a while.")
async def slow(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "done"


@server.tool(description="Die mid-call.")
def crash() -> str:
    sys.stdout.flush()
    os._exit(3)


@server.tool(description="Register a new tool at run time.")
async def add_tool(name: str, ctx: Context) -> str:
    def dynamic() -> str:
        return f"{name} ran"

    server.add_tool(dynamic, name=name, description=f"Added at run time: {name}")
    # Stateless-era clients listen on `subscriptions/listen`; handshake-era ones get it on the session.
    await ctx.notify_tools_changed()
    await ctx.session.send_tool_list_changed()
    return f"added {name}"


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "stdio"
    if mode == "stdio":
        server.run("stdio")
    elif mode == "http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]), streamable_http_path="/mcp")
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
