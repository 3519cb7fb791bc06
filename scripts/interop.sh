#!/usr/bin/env bash
# Interop tests with clients nobody here wrote: Python `websockets` and Node.js
# `ws` talk to the built petchat-server, then Python `websockets` again through
# nginx (deploy/nginx/petchat.conf) in front of two nodes. Installs them (a venv
# under target/, npm ci in tests/interop/node, nginx from Debian) unless already
# there, starts the servers on throwaway databases, and stops them at the end.
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
source scripts/nginx.sh
npm_ci tests/interop/node
nginx_install

cargo build --quiet --package petchat-server --locked
server=target/debug/petchat-server
work=$(mktemp -d)
secret="interop-$RANDOM$RANDOM"
pids=()
cleanup() {
  nginx_stop "$work/nginx" 2>/dev/null || true
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
start_server "$server" "$work" "$secret"
pids+=("$SERVER_PID")
export PETCHAT_URL="ws://$SERVER_ADDR/v1/ws/chat"
token() { "$server" token --secret "$secret" --sub "$1" --role "$2" --name "$1" --ttl 10m; }

PETCHAT_AGENT_TOKEN=$(token agent-py agent) PETCHAT_CUSTOMER_TOKEN=$(token cust-py customer) \
  "$venv/bin/python" tests/interop/interop.py
PETCHAT_AGENT_TOKEN=$(token agent-node agent) PETCHAT_CUSTOMER_TOKEN=$(token cust-node customer) \
  node --test tests/interop/node/

# Through nginx, in front of this node and a second one.
first=$SERVER_ADDR
mkdir "$work/second"
start_server "$server" "$work/second" "$secret"
pids+=("$SERVER_PID")
port=$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
nginx_start "$work/nginx" "127.0.0.1:$port" "$first" "$SERVER_ADDR"
PETCHAT_LB_URL="ws://127.0.0.1:$port/v1/ws/chat" PETCHAT_CUSTOMER_TOKEN=$(token cust-lb customer) \
  "$venv/bin/python" tests/interop/through_nginx.py
