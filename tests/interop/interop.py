"""Interop test: a customer and an agent, written with Python `websockets`, talk to
petchat-server. Every server frame is validated against schemas/server-message.schema.json
with `jsonschema`. Run by scripts/interop.sh, which starts the server and mints the tokens."""

import asyncio
import json
import os
import uuid

import websockets

from tally import Tally

URL = os.environ["PETCHAT_URL"]
TALLY = Tally()
check = TALLY.check


recv = TALLY.recv


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

        # The lifecycle: the agent resolves; the conversation is read, not written; it is listed.
        await customer.send(json.dumps({"type": "conversation.resolve", "id": "x1", "data": {"conversationId": conversation}}))
        refused = await recv(customer, "error")
        check(refused["data"]["code"] == "forbidden" and refused["data"]["refId"] == "x1", "a customer does not resolve")
        await agent.send(json.dumps({"type": "conversation.resolve", "id": "x2", "data": {"conversationId": conversation}}))
        resolved = await recv(agent, "conversation.closed")
        check(resolved["id"] == "x2" and resolved["data"]["reason"] == "resolved" and resolved["data"]["by"] == "agent-py",
              "conversation.closed answers the resolve with its reason and closer")
        closed = await recv(customer, "conversation.closed")
        check(closed["data"]["reason"] == "resolved", "the customer hears why it ended")
        late = {"type": "chat.send", "id": "s2", "data": {"conversationId": conversation, "clientMessageId": str(uuid.uuid4()), "text": "one more"}}
        await customer.send(json.dumps(late))
        error = await recv(customer, "error")
        check(error["data"]["code"] == "conversation_closed", "a closed conversation is not written")
        await customer.send(json.dumps({"type": "conversation.list", "id": "l1", "data": {"status": "closed", "limit": 5}}))
        listed = await recv(customer, "conversation.listed")
        first = listed["data"]["conversations"][0]
        check(listed["id"] == "l1" and first["conversation"]["id"] == conversation, "conversation.list lists it")
        check(first["lastMessage"]["text"] == "héllo 🐾" and listed["data"]["hasMore"] is False,
              "with its last message and no more pages")

    # No token: the upgrade completes and the server closes with 4500.
    async with websockets.connect(URL, subprotocols=["petchat.v1"]) as anonymous:
        try:
            await asyncio.wait_for(anonymous.recv(), 10)
            check(False, "a frame arrived without a token")
        except websockets.ConnectionClosed as closed:
            check(closed.rcvd is not None and closed.rcvd.code == 4500, f"closed with 4500, got {closed.rcvd}")

    await rfc6455(customer_token)


async def rfc6455(token):
    """RFC 6455 as websockets sees it: a client's Close is echoed (close code 1000,
    not 1006), and a protocol violation written under the library is answered
    with a Close frame carrying 1002 (1007 for invalid UTF-8)."""
    async with websockets.connect(f"{URL}?token={token}", subprotocols=["petchat.v1"]) as ws:
        await recv(ws, "session.ready")
        await asyncio.wait_for(ws.close(code=1000, reason="bye"), 5)
        check(ws.close_code == 1000, f"a client close is echoed with 1000, got {ws.close_code}")
    # An unmasked frame, then text that is not UTF-8, written to the transport directly.
    for raw, expected in [(b"\x81\x02{}", 1002), (b"\x81\x82\x00\x00\x00\x00\xff\xfe", 1007)]:
        async with websockets.connect(f"{URL}?token={token}", subprotocols=["petchat.v1"]) as ws:
            await recv(ws, "session.ready")
            ws.transport.write(raw)
            try:
                await asyncio.wait_for(ws.recv(), 10)
                check(False, f"a frame arrived after a protocol violation ({expected})")
            except websockets.ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd is not None else None
                check(code == expected, f"a violation is closed with {expected}, got {code}")


asyncio.run(main())
TALLY.finish("interop python")
