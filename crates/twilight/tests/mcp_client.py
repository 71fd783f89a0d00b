"""A real MCP client (the `mcp` package hermes itself uses) driving our /mcp endpoint.

usage: python mcp_client.py URL KEY STEPS_JSON
STEPS_JSON is a list of steps: {"list": true} or {"call": NAME, "arguments": {...}, "times": N}.
Prints one JSON object: {"server": ..., "steps": [...]} or {"error": ..., "status": HTTP status}.
"""

import asyncio
import json
import sys

import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client


def http_status(error):
    """The HTTP status behind an error the SDK raised, looking inside exception groups."""
    if isinstance(error, httpx.HTTPStatusError):
        return error.response.status_code
    for inner in getattr(error, "exceptions", ()):
        status = http_status(inner)
        if status is not None:
            return status
    return None


def call_result(result):
    return {
        "is_error": bool(result.isError),
        "structured": result.structuredContent,
        "text": "".join(getattr(block, "text", "") for block in result.content),
        "images": [{"mime": block.mimeType, "data": block.data} for block in result.content if block.type == "image"],
    }


async def run(url, key, steps):
    async with streamablehttp_client(url, headers={"Authorization": f"Bearer {key}"}) as (read, write, _):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            done = []
            for step in steps:
                if step.get("list"):
                    tools = await session.list_tools()
                    done.append({"tools": [tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in tools.tools]})
                    continue
                results = []
                for _ in range(step.get("times", 1)):
                    results.append(call_result(await session.call_tool(step["call"], step.get("arguments", {}))))
                done.append({"calls": results})
            return {"server": init.serverInfo.model_dump(mode="json"), "protocol": init.protocolVersion, "steps": done}


def main():
    url, key, steps = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    try:
        print(json.dumps(asyncio.run(run(url, key, steps)), ensure_ascii=False))
    except BaseException as error:  # noqa: BLE001 - report what the client saw, whatever it was
        print(json.dumps({"error": repr(error), "status": http_status(error)}))


main()
