"""Measures what group commit buys: one customer pipelines N chat.sends to a
running petchat-server and waits for every chat.ack (each ack means the
message is durable), then reads the server's commit metrics.

    scripts/measure/group_commit.sh   # starts the server twice and runs this

Until the benchmark tool lands (docs/benchmarks.md), this is the quick check.
Prints one JSON object: messages, seconds, acked per second, commits, writes per commit."""

import asyncio
import json
import os
import re
import sys
import time
import urllib.request
import uuid

import websockets

URL = os.environ["PETCHAT_URL"]
N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000


def metric(text, name):
    match = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


async def main():
    agent_token = os.environ["PETCHAT_AGENT_TOKEN"]
    customer_token = os.environ["PETCHAT_CUSTOMER_TOKEN"]
    async with websockets.connect(f"{URL}?token={agent_token}", subprotocols=["petchat.v1"]) as agent, \
            websockets.connect(f"{URL}?token={customer_token}", subprotocols=["petchat.v1"], max_queue=None) as customer:
        await agent.recv()
        await agent.send(json.dumps({"type": "agent.status", "data": {"available": True}}))
        await customer.recv()
        await customer.send(json.dumps({"type": "conversation.open", "data": {}}))
        while True:
            frame = json.loads(await customer.recv())
            if frame["type"] == "conversation.opened":
                conversation = frame["data"]["conversation"]["id"]
                break
        http = URL.replace("ws://", "http://").replace("/v1/ws/chat", "/metrics")
        before = urllib.request.urlopen(http).read().decode()
        started = time.perf_counter()
        for _ in range(N):
            await customer.send(json.dumps({"type": "chat.send", "data": {
                "conversationId": conversation, "clientMessageId": str(uuid.uuid4()), "text": "measure"}}))
        acked = 0
        while acked < N:
            frame = json.loads(await customer.recv())
            if frame["type"] == "chat.ack":
                acked += 1
            elif frame["type"] == "error":
                raise SystemExit(f"error: {frame}")
        seconds = time.perf_counter() - started
        after = urllib.request.urlopen(http).read().decode()
    commits = metric(after, "petchat_store_commit_writes_count") - metric(before, "petchat_store_commit_writes_count")
    writes = metric(after, "petchat_store_commit_writes_sum") - metric(before, "petchat_store_commit_writes_sum")
    print(json.dumps({"messages": N, "seconds": round(seconds, 3), "acked_per_second": round(N / seconds),
                      "commits": int(commits), "writes_per_commit": round(writes / commits, 1) if commits else None}))


asyncio.run(main())
