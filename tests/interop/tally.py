"""What the Python interop scripts share: the server frames' JSON Schema, and a tally of checks."""

import asyncio
import json
import pathlib
import sys

import jsonschema

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schemas" / "server-message.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


class Tally:
    """Counts checks; a failed one is printed at once."""

    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            print(f"FAIL {what}", file=sys.stderr)

    def valid(self, frame, where=""):
        """Checks a server frame against the schema; returns it."""
        errors = [e.message for e in VALIDATOR.iter_errors(frame)]
        self.check(not errors, f"{where}: {frame.get('type')} matches the schema: {errors}")
        return frame

    async def recv(self, ws, kind, where="", skip=frozenset({"presence"}), timeout=10):
        """The next frame of type `kind` on a socket, skipping those whose type is in `skip`;
        every frame is schema-checked."""
        while True:
            frame = self.valid(json.loads(await asyncio.wait_for(ws.recv(), timeout)), where)
            if frame["type"] == kind:
                return frame
            self.check(frame["type"] in skip, f"{where}: expected {kind}, got {frame}")

    def finish(self, name):
        """Prints the summary line and exits, non-zero if a check failed."""
        print(f"{name}: {self.passed} passed, {self.failed} failed")
        sys.exit(1 if self.failed else 0)
