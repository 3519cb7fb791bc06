"""Interop test of live updates (SPEC §11–§14) with clients nobody here wrote: Python
`websockets` subscribes to a topic, `httpx` calls the server API, `httpx-sse` reads the SSE
stream (with a token and with a ticket) and resumes it with Last-Event-ID. Every frame and
every SSE event is validated against schemas/server-message.schema.json. Run by
scripts/interop.sh, which starts the server with --api-keys and --public-topics 'pets:*'."""

import asyncio
import json
import os
import uuid

import httpx
import websockets
from httpx_sse import aconnect_sse

from tally import Tally

URL = os.environ["PETCHAT_URL"]
HTTP = os.environ["PETCHAT_HTTP"]
KEY = os.environ["PETCHAT_API_KEY"]
TOKEN = os.environ["PETCHAT_CUSTOMER_TOKEN"]
USER = os.environ["PETCHAT_CUSTOMER_ID"]
TOPIC = f"pets:py-{uuid.uuid4().hex[:8]}"
TALLY = Tally()
check = TALLY.check


def recv(ws, kind):
    """The next frame of type `kind` on the socket, skipping presence; schema-checked."""
    return TALLY.recv(ws, kind, "socket")


async def api(http, method, path, body=None, key=KEY):
    """Calls the server API; returns the status and the JSON answer."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = await http.request(method, f"{HTTP}{path}", json=body, headers=headers)
    return response.status_code, response.json()


async def publish(http, seq, key=None):
    body = {"topic": TOPIC, "event": "pet.status", "data": {"n": seq}}
    if key:
        body["idempotencyKey"] = key
    status, answer = await api(http, "POST", "/v1/api/publish", body)
    check(status == 200 and answer == {"topic": TOPIC, "seq": seq}, f"publish {seq}: {status} {answer}")


class Stream:
    """An SSE stream read with httpx-sse; `next()` waits 10 s at most."""

    def __init__(self, source):
        self.source = source
        self.events = source.aiter_sse()

    async def next(self):
        event = await asyncio.wait_for(anext(self.events), 10)
        while not event.data:  # httpx-sse yields an empty event after a keep-alive comment
            event = await asyncio.wait_for(anext(self.events), 10)
        data = TALLY.valid(json.loads(event.data), "sse")
        check(event.event == data["type"], f"the SSE event is the message type: {event.event}")
        return event, data


async def main():
    async with httpx.AsyncClient(timeout=httpx.Timeout(30)) as http:
        # The API wants a key: none or a wrong one gets 401 with a JSON error.
        for key in [None, "wrong-key"]:
            status, answer = await api(http, "POST", "/v1/api/publish", {"topic": TOPIC, "event": "x", "data": {}}, key)
            check(status == 401 and answer["error"]["code"] == "unauthorized", f"key {key}: {status} {answer}")

        async with websockets.connect(f"{URL}?token={TOKEN}", subprotocols=["petchat.v1"]) as ws:
            ready = await recv(ws, "session.ready")
            check(ready["data"]["notifications"] == {"unread": 0, "lastSeq": 0}, f"no notifications yet: {ready}")
            await ws.send(json.dumps({"type": "topic.subscribe", "id": "t1", "data": {"topic": TOPIC}}))
            subscribed = await recv(ws, "topic.subscribed")
            check(subscribed["id"] == "t1" and subscribed["data"] == {"topic": TOPIC, "lastSeq": 0, "recovered": True},
                  f"subscribed live: {subscribed}")
            await ws.send(json.dumps({"type": "topic.subscribe", "id": "t2", "data": {"topic": "orders:999"}}))
            refused = await recv(ws, "error")
            check(refused["data"]["code"] == "forbidden" and refused["data"].get("refId") == "t2",
                  f"a topic the token does not grant is forbidden: {refused}")

            # The same idempotency key publishes once: the socket gets 1, then 2.
            await publish(http, 1, key="py-once")
            await publish(http, 1, key="py-once")
            await publish(http, 2)
            for seq in [1, 2]:
                event = await recv(ws, "topic.event")
                check(event["data"]["seq"] == seq and event["data"]["data"] == {"n": seq}, f"event {seq}: {event}")

            # The user's notification reaches the socket, with the id the API answered.
            status, notified = await api(http, "POST", "/v1/api/notify",
                                         {"userId": USER, "kind": "order.shipped", "title": "Shipped", "body": "On its way."})
            check(status == 200 and notified["userId"] == USER and notified["seq"] == 1, f"notify: {status} {notified}")
            notification = await recv(ws, "notification")
            check(notification["data"]["id"] == notified["id"], f"the socket gets the notification: {notification}")

            status, presence = await api(http, "GET", f"/v1/api/presence/{USER}")
            check(status == 200 and presence["online"] and presence["connections"] >= 1, f"online: {presence}")

        status, presence = await api(http, "GET", "/v1/api/presence/nobody-ever")
        check(status == 200 and presence == {"userId": "nobody-ever", "online": False, "connections": 0},
              f"a stranger is offline: {presence}")
        status, stats = await api(http, "GET", "/v1/api/stats")
        check(status == 200 and {"connections", "queue", "agents", "conversations"} <= stats.keys(), f"stats: {stats}")

        await sse(http)


async def sse(http):
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    url = f"{HTTP}/v1/sse?topics={TOPIC}"
    # Without Last-Event-ID: the unread notification, then live events only.
    async with aconnect_sse(http, "GET", url, headers=bearer) as source:
        response = source.response
        check(response.status_code == 200, f"the stream opens: {response.status_code}")
        check(response.headers.get("x-accel-buffering") == "no", "X-Accel-Buffering: no")
        check("no-cache" in response.headers.get("cache-control", ""), "Cache-Control: no-cache")
        stream = Stream(source)
        _, first = await stream.next()
        check(first["type"] == "notification" and first["data"]["seq"] == 1, f"the unread notification first: {first}")
        await publish(http, 3)
        event, data = await stream.next()
        check(data["type"] == "topic.event" and data["data"]["seq"] == 3, f"then live events: {data}")
        cursor = event.id
        check(bool(cursor), "each event has an id")

    # Resumed after event 3: 4 and 5 exactly once, then 6 live.
    await publish(http, 4)
    await publish(http, 5)
    async with aconnect_sse(http, "GET", url, headers={**bearer, "Last-Event-ID": cursor}) as source:
        stream = Stream(source)
        seqs = []
        for expected in [4, 5]:
            _, data = await stream.next()
            seqs.append(data["data"]["seq"])
        await publish(http, 6)
        _, data = await stream.next()
        seqs.append(data["data"]["seq"])
        check(seqs == [4, 5, 6], f"resumed with Last-Event-ID: {seqs}")

    # A ticket opens one stream, once.
    response = await http.post(f"{HTTP}/v1/sse/tickets", headers=bearer)
    check(response.status_code == 200, f"a ticket: {response.status_code}")
    ticket = response.json()["ticket"]
    async with aconnect_sse(http, "GET", f"{url}&ticket={ticket}") as source:
        check(source.response.status_code == 200, f"the ticket opens a stream: {source.response.status_code}")
        async with aconnect_sse(http, "GET", f"{url}&ticket={ticket}") as again:
            check(again.response.status_code == 401, f"a used ticket gets 401: {again.response.status_code}")
    async with aconnect_sse(http, "GET", f"{HTTP}/v1/sse?topics=orders:999", headers=bearer) as source:
        check(source.response.status_code == 403, f"a forbidden topic gets 403: {source.response.status_code}")


asyncio.run(main())
TALLY.finish("interop python live")
