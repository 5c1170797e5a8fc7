"""WebSocket echo check with the third-party `websockets` client.

usage: ws_client.py URI [--cafile PEM] [--header 'Name: value'] [--count N] [--size BYTES]
Prints 'ok N' after N byte-exact echoes; exits 1 with the reason otherwise.
"""
import argparse
import asyncio
import os
import ssl
import sys

import websockets


async def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("uri")
    p.add_argument("--cafile")
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--size", type=int, default=1000)
    p.add_argument("--server-hostname")
    a = p.parse_args()
    ctx = None
    if a.uri.startswith("wss://"):
        ctx = ssl.create_default_context(cafile=a.cafile)
    headers = [tuple(h.split(": ", 1)) for h in a.header]
    try:
        async with websockets.connect(
            a.uri, ssl=ctx, additional_headers=headers, open_timeout=10,
            server_hostname=a.server_hostname, max_size=None,
        ) as ws:
            for i in range(a.count):
                msg = os.urandom(a.size)
                await ws.send(msg)
                got = await asyncio.wait_for(ws.recv(), 10)
                if got != msg:
                    print(f"mismatch at message {i}", file=sys.stderr)
                    return 1
                text = f"text message {i}"
                await ws.send(text)
                if await asyncio.wait_for(ws.recv(), 10) != text:
                    print(f"text mismatch at {i}", file=sys.stderr)
                    return 1
    except websockets.exceptions.InvalidStatus as e:
        print(f"status {e.response.status_code}")
        return 2
    print(f"ok {a.count}")
    return 0


sys.exit(asyncio.run(main()))
