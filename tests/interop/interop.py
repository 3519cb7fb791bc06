"""Interop test: a customer and an agent, written with Python `websockets`, talk to
petchat-server. Every server frame is validated against schemas/server-message.schema.json
with `jsonschema`. Run by scripts/interop.sh, which starts the server and mints the tokens."""

import asyncio
import json
import os
import pathlib
import sys
import uuid

import jsonschema
import websockets

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schemas" / "server-message.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
URL = os.environ["PETCHAT_URL"]
passed = 0
failed = 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print(f"FAIL {what}", file=sys.stderr)


async def recv(ws, kind):
    """The next frame of type `kind`, skipping presence; every frame is schema-checked."""
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        errors = list(VALIDATOR.iter_errors(frame))
        check(not errors, f"{frame.get('type')} matches the schema: {[e.message for e in errors]}")
        if frame["type"] == kind:
            return frame
        if frame["type"] != "presence":
            check(False, f"expected {kind}, got {frame}")


async def main():
    agent_token = os.environ["PETCHAT_AGENT_TOKEN"]
    customer_token = os.environ["PETCHAT_CUSTOMER_TOKEN"]
    # The agent authenticates with the subprotocol, the customer with the query.
    async with websockets.connect(URL, subprotocols=["petchat.v1", f"bearer.{agent_token}"]) as agent, \
            websockets.connect(f"{URL}?token={customer_token}", subprotocols=["petchat.v1"]) as customer:
        check(agent.subprotocol == "petchat.v1", "the server selects petchat.v1")
        ready = await recv(agent, "session.ready")
        check(ready["data"]["user"]["role"] == "agent", "session.ready names the agent")
        await agent.send(json.dumps({"type": "agent.status", "data": {"available": True}}))
        await recv(agent, "agent.status")

        await recv(customer, "session.ready")
        await customer.send(json.dumps({"type": "conversation.open", "id": "o1", "data": {"topic": "python"}}))
        opened = await recv(customer, "conversation.opened")
        check(opened["id"] == "o1", "the reply carries the request id")
        conversation = opened["data"]["conversation"]["id"]
        await recv(customer, "agent.assigned")
        await recv(agent, "agent.assigned")

        key = str(uuid.uuid4())
        send = {"type": "chat.send", "id": "s1", "data": {"conversationId": conversation, "clientMessageId": key, "text": "héllo 🐾"}}
        await customer.send(json.dumps(send))
        ack = await recv(customer, "chat.ack")
        check(ack["data"]["clientMessageId"] == key and ack["data"]["seq"] == 1, "chat.ack echoes the key with seq 1")
        message = await recv(agent, "chat.message")
        check(message["data"]["text"] == "héllo 🐾", "the agent gets the text intact")
        await customer.send(json.dumps(send))
        again = await recv(customer, "chat.ack")
        check(again["data"] == ack["data"], "a resent key gets the original ack")

        await agent.send(json.dumps({"type": "message.read", "data": {"conversationId": conversation, "upToSeq": 1}}))
        read = await recv(customer, "message.read")
        check(read["data"]["by"] == "agent-py", "the read receipt names the agent")

        await customer.send("{not json")
        error = await recv(customer, "error")
        check(error["data"]["code"] == "invalid_json", "bad JSON is answered with invalid_json")

    # No token: the upgrade completes and the server closes with 4500.
    async with websockets.connect(URL, subprotocols=["petchat.v1"]) as anonymous:
        try:
            await asyncio.wait_for(anonymous.recv(), 10)
            check(False, "a frame arrived without a token")
        except websockets.ConnectionClosed as closed:
            check(closed.rcvd is not None and closed.rcvd.code == 4500, f"closed with 4500, got {closed.rcvd}")


asyncio.run(main())
print(f"interop python: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
