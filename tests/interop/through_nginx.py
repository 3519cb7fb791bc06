"""Interop behind a load balancer: Python `websockets` connects to petchat through
nginx (deploy/nginx/petchat.conf, in front of two nodes), once per node and more:
each time the selected subprotocol comes back, `session.ready` arrives, `ping` is
answered by `pong`, and a close with 1000 is echoed with 1000. Run by
scripts/interop.sh, which starts the nodes and nginx and mints the token."""

import asyncio
import json
import os
import sys

import websockets

URL = os.environ["PETCHAT_LB_URL"]
TOKEN = os.environ["PETCHAT_CUSTOMER_TOKEN"]
failed = []


def check(ok, what):
    if not ok:
        failed.append(what)
        print(f"FAIL {what}", file=sys.stderr)


async def recv(ws, kind):
    """The next frame of type `kind`, skipping presence."""
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if frame["type"] == kind:
            return frame
        check(frame["type"] == "presence", f"expected {kind}, got {frame}")


async def once(n):
    # Every other one puts the token in the subprotocol, as browsers do.
    if n % 2:
        connect = websockets.connect(URL, subprotocols=["petchat.v1", f"bearer.{TOKEN}"])
    else:
        connect = websockets.connect(f"{URL}?token={TOKEN}", subprotocols=["petchat.v1"])
    async with connect as ws:
        check(ws.subprotocol == "petchat.v1", f"#{n}: the node selects petchat.v1 through nginx")
        ready = await recv(ws, "session.ready")
        check(ready["data"]["user"]["id"] == "cust-lb", f"#{n}: session.ready names the user")
        await ws.send(json.dumps({"type": "ping", "id": f"p{n}", "data": {}}))
        pong = await recv(ws, "pong")
        check(pong.get("id") == f"p{n}", f"#{n}: pong carries the request id")
        await asyncio.wait_for(ws.close(code=1000, reason="bye"), 5)
        check(ws.close_code == 1000, f"#{n}: the close is echoed with 1000 through nginx, got {ws.close_code}")


async def main():
    for n in range(4):
        await once(n)


asyncio.run(main())
print(f"interop python through nginx: {'ok' if not failed else f'{len(failed)} failed'}")
sys.exit(1 if failed else 0)
