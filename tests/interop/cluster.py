"""Interop across a cluster (SPEC §10): Python `websockets` talks to two petchat nodes
that share one PostgreSQL database and one Redis. An agent on the second node and a
customer on the first chat both ways, in seq order, with a read receipt; then the customer
resends an acked chat.send, with its clientMessageId, to the second node: the original
chat.ack comes back and the agent gets no second chat.message. Every server frame is
validated against schemas/server-message.schema.json. Run by scripts/interop.sh, which
starts the cluster and mints the tokens (PETCHAT_NODE_URLS: two URLs, space-separated)."""

import asyncio
import json
import os
import uuid

import websockets

from tally import Tally

FIRST, SECOND = os.environ["PETCHAT_NODE_URLS"].split()
AGENT_TOKEN = os.environ["PETCHAT_AGENT_TOKEN"]
CUSTOMER_TOKEN = os.environ["PETCHAT_CUSTOMER_TOKEN"]
# Frames a test may meet between the ones it waits for.
BACKGROUND = {"presence", "typing.start", "typing.stop", "agent.status", "conversation.queued", "message.delivered"}
TALLY = Tally()
check = TALLY.check


def connect(url, token):
    return websockets.connect(f"{url}?token={token}", subprotocols=["petchat.v1"])


def recv(ws, kind, where=""):
    """The next frame of type `kind`, skipping background frames; every frame is schema-checked."""
    return TALLY.recv(ws, kind, where, BACKGROUND, 20)


def send_frame(conversation, text, key=None):
    key = key or str(uuid.uuid4())
    return {"type": "chat.send", "id": key, "data": {"conversationId": conversation, "clientMessageId": key, "text": text}}


async def main():
    async with connect(SECOND, AGENT_TOKEN) as agent, connect(FIRST, CUSTOMER_TOKEN) as customer:
        await recv(agent, "session.ready", "agent on the second node")
        await agent.send(json.dumps({"type": "agent.status", "data": {"available": True}}))
        status = await recv(agent, "agent.status", "agent on the second node")
        check(status["data"]["available"] is True, "agent.status answers the new state")

        await recv(customer, "session.ready", "customer on the first node")
        await customer.send(json.dumps({"type": "conversation.open", "id": "o1", "data": {"topic": "cluster"}}))
        opened = await recv(customer, "conversation.opened", "customer")
        conversation = opened["data"]["conversation"]["id"]
        assigned = await recv(customer, "agent.assigned", "customer")
        check(assigned["data"]["agent"]["id"] == "agent-cluster-py", "the agent on the other node is assigned")
        assigned = await recv(agent, "agent.assigned", "agent")
        check(assigned["data"]["conversationId"] == conversation, "the agent on the second node hears of it")

        # Both ways across nodes, in seq order.
        first = send_frame(conversation, "héllo from node one 🐾")
        await customer.send(json.dumps(first))
        ack = await recv(customer, "chat.ack", "customer")
        check(ack["data"]["seq"] == 1 and ack["id"] == first["id"], "chat.ack has seq 1 and the request id")
        message = await recv(agent, "chat.message", "agent")
        check(message["data"]["messageId"] == ack["data"]["messageId"], "the agent gets the message acked by the other node")
        check(message["data"]["text"] == "héllo from node one 🐾", "the text crosses nodes intact")
        await agent.send(json.dumps(send_frame(conversation, "hello from node two")))
        reply = await recv(agent, "chat.ack", "agent")
        check(reply["data"]["seq"] == 2, "the agent's reply takes seq 2")
        got = await recv(customer, "chat.message", "customer")
        check(got["data"]["seq"] == 2, "the customer on the first node gets seq 2")

        await agent.send(json.dumps({"type": "message.read", "data": {"conversationId": conversation, "upToSeq": 1}}))
        read = await recv(customer, "message.read", "customer")
        check(read["data"]["by"] == "agent-cluster-py" and read["data"]["upToSeq"] == 1, "the read receipt crosses nodes")

        # The same clientMessageId resent to the second node: the original ack, once.
        async with connect(SECOND, CUSTOMER_TOKEN) as elsewhere:
            await recv(elsewhere, "session.ready", "customer on the second node")
            await elsewhere.send(json.dumps(first))
            again = await recv(elsewhere, "chat.ack", "customer on the second node")
            check(again["data"] == ack["data"], f"a resend to the other node gets the original ack: {again['data']} vs {ack['data']}")
            await elsewhere.send(json.dumps(send_frame(conversation, "one more")))
            more = await recv(elsewhere, "chat.ack", "customer on the second node")
            check(more["data"]["seq"] == 3, "the resend used no seq")
            following = await recv(agent, "chat.message", "agent")
            check(following["data"]["seq"] == 3, f"no second chat.message for the resend, got seq {following['data']['seq']}")


asyncio.run(main())
TALLY.finish("interop python cluster")
