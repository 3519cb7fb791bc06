#!/usr/bin/env bash
# Interop tests with clients nobody here wrote: Python `websockets` and Node.js
# `ws` talk to the built petchat-server. Installs them (a venv under target/,
# npm ci in tests/interop/node) unless already there, starts the server on a
# throwaway database, and stops it at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

venv=target/interop-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" 2>/dev/null || {
    as_root apt-get update -qq && as_root apt-get install -y -qq python3-venv
    python3 -m venv "$venv"
  }
fi
"$venv/bin/python" -c 'import websockets, jsonschema, rfc3339_validator' 2>/dev/null \
  || "$venv/bin/pip" install --quiet --disable-pip-version-check 'websockets>=13,<16' 'jsonschema>=4.20' rfc3339-validator
source scripts/lib.sh
npm_ci tests/interop/node

cargo build --quiet --package petchat-server --locked
server=target/debug/petchat-server
work=$(mktemp -d)
secret="interop-$RANDOM$RANDOM"
trap 'kill "${SERVER_PID:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
start_server "$server" "$work" "$secret"
export PETCHAT_URL="ws://$SERVER_ADDR/v1/ws/chat"
token() { "$server" token --secret "$secret" --sub "$1" --role "$2" --name "$1" --ttl 10m; }

PETCHAT_AGENT_TOKEN=$(token agent-py agent) PETCHAT_CUSTOMER_TOKEN=$(token cust-py customer) \
  "$venv/bin/python" tests/interop/interop.py
PETCHAT_AGENT_TOKEN=$(token agent-node agent) PETCHAT_CUSTOMER_TOKEN=$(token cust-node customer) \
  node --test tests/interop/node/
