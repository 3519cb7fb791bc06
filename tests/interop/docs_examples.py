"""Runs the Node and Python examples of docs/protocol.md ("Live updates from JavaScript, Node
and Python") as they stand there: each is taken out of the file by its `<!-- example: NAME -->`
marker, started against the server of scripts/interop.sh, and must print the topic events and
notifications the server API sends. The Node example must also mark its notification read,
which a new connection of its user sees in session.ready. The browser example runs in
tests/browser/live.test.mjs."""

import asyncio
import json
import os
import pathlib
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import httpx
import websockets

from tally import ROOT, Tally

HTTP = os.environ["PETCHAT_HTTP"]
KEY = os.environ["PETCHAT_API_KEY"]
TOPIC = f"pets:docs-{uuid.uuid4().hex[:8]}"
TALLY = Tally()
check = TALLY.check


def examples():
    """The marked code blocks of docs/protocol.md, by name."""
    text = (ROOT / "docs" / "protocol.md").read_text()
    found = re.findall(r"<!-- example: (\S+) -->\n```\w+\n(.*?)\n```", text, re.S)
    return {name: code + "\n" for name, code in found}


class Program:
    """An example running as a child process; `expect` waits for a line of its output."""

    def __init__(self, argv, cwd, token):
        env = {**os.environ, "PETCHAT_TOKEN": token}
        self.child = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = queue.Queue()
        self.seen = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.child.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, line, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                got = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(got)
            if got == line:
                return True
        check(False, f"{self.child.args[-2]} printed {line!r} (it printed {self.seen})")
        return False

    def stop(self):
        self.child.terminate()
        self.child.wait(10)


def api(path, body):
    response = httpx.post(f"{HTTP}{path}", json=body, headers={"Authorization": f"Bearer {KEY}"})
    check(response.status_code == 200, f"{path}: {response.status_code} {response.text}")
    return response.json()


def publish(n):
    api("/v1/api/publish", {"topic": TOPIC, "event": "pet.status", "data": {"n": n}})


async def unread(token):
    async with websockets.connect(f"{os.environ['PETCHAT_URL']}?token={token}", subprotocols=["petchat.v1"]) as ws:
        ready = json.loads(await asyncio.wait_for(ws.recv(), 10))
        return ready["data"]["notifications"]["unread"]


def main():
    found = examples()
    check({"follow-order.js", "watch-topic.mjs", "listen.py"} <= found.keys(), f"the examples are there: {list(found)}")
    # Node resolves `ws` from the directory the file is in.
    node_dir = tempfile.mkdtemp(dir=ROOT / "tests" / "interop" / "node", prefix=".examples-")
    py_dir = tempfile.mkdtemp(prefix="petchat-examples-")
    (pathlib.Path(node_dir) / "watch-topic.mjs").write_text(found["watch-topic.mjs"])
    (pathlib.Path(py_dir) / "listen.py").write_text(found["listen.py"])
    node_token, node_user = os.environ["PETCHAT_NODE_TOKEN"], os.environ["PETCHAT_NODE_USER"]
    node = Program(["node", "watch-topic.mjs", TOPIC], node_dir, node_token)
    python = Program([sys.executable, "listen.py", TOPIC], py_dir, os.environ["PETCHAT_PYTHON_TOKEN"])
    try:
        node.expect(f"subscribed to {TOPIC} at 0")
        python.expect("listening")
        for n in [1, 2]:
            publish(n)
        for n in [1, 2]:
            node.expect(f'{TOPIC} {n} pet.status {{"n":{n}}}')
            python.expect(f'{TOPIC} {n} pet.status {{"n": {n}}}')
        shipped = api("/v1/api/notify", {"userId": node_user, "kind": "order.shipped", "title": "Shipped", "body": ""})
        hi = api("/v1/api/notify", {"userId": os.environ["PETCHAT_PYTHON_USER"], "kind": "k", "title": "Hi", "body": ""})
        node.expect(f"notification {shipped['seq']}: Shipped")
        python.expect(f"notification {hi['seq']}: Hi")
        # Quiet for longer than the keep-alive interval: the comment line breaks nothing.
        time.sleep(float(os.environ.get("PETCHAT_KEEPALIVE_S", "0")))
        publish(3)
        node.expect(f'{TOPIC} 3 pet.status {{"n":3}}')
        python.expect(f'{TOPIC} 3 pet.status {{"n": 3}}')
        # The Node example marked it read: a new connection of its user has none unread.
        deadline = time.monotonic() + 10
        while (left := asyncio.run(unread(node_token))) and time.monotonic() < deadline:
            time.sleep(0.1)
        check(left == 0, f"the Node example marked its notification read ({left} unread)")
    finally:
        node.stop()
        python.stop()
        for directory in [node_dir, py_dir]:
            for file in pathlib.Path(directory).iterdir():
                file.unlink()
            pathlib.Path(directory).rmdir()


main()
TALLY.finish("interop docs examples")
