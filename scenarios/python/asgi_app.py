"""An ASGI app for uvicorn (one asyncio event loop): GET /proxy awaits
GET /sleep/60 on the upstream at $UPSTREAM_PORT, GET /timer awaits a 50 ms
asyncio.sleep, anything else answers at once."""

import asyncio
import os

UPSTREAM_PORT = int(os.environ.get("UPSTREAM_PORT", "0"))


async def upstream(path):
    reader, writer = await asyncio.open_connection("127.0.0.1", UPSTREAM_PORT)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: up\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    return data


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/proxy":
        await upstream("/sleep/60")
    elif scope["path"] == "/timer":
        await asyncio.sleep(0.05)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"3")]})
    await send({"type": "http.response.body", "body": b"ok\n"})
