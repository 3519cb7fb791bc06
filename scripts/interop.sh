#!/usr/bin/env bash
# Interop tests with clients nobody here wrote: Python `websockets` and Node.js
# `ws` talk to the built petchat-server; `httpx`, `httpx-sse` and the npm
# `eventsource` call its server API and read its SSE streams; then Python `websockets` again through
# nginx (deploy/nginx/petchat.conf) in front of two nodes, and across a cluster
# of two nodes on one PostgreSQL database and one Redis (SPEC §10). Installs
# them (a venv under target/, npm ci in tests/interop/node, nginx, PostgreSQL
# and Redis from Debian) unless already there, starts the servers on throwaway
# databases (PostgreSQL: the one of scripts/services.sh, reused when test.sh
# has started it), and stops them at the end.
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
"$venv/bin/python" -c 'import websockets, jsonschema, rfc3339_validator, httpx, httpx_sse' 2>/dev/null \
  || "$venv/bin/pip" install --quiet --disable-pip-version-check 'websockets>=13,<16' 'jsonschema>=4.20' \
    rfc3339-validator 'httpx>=0.27,<1' 'httpx-sse>=0.4,<1'
source scripts/lib.sh
source scripts/nginx.sh
npm_ci tests/interop/node
nginx_install

cargo build --quiet --package petchat-server --locked
server=target/debug/petchat-server
work=$(mktemp -d)
secret="interop-$RANDOM$RANDOM"
pids=()
cluster_db=""
cleanup() {
  nginx_stop "$work/nginx" 2>/dev/null || true
  if [ -n "$cluster_db" ]; then
    kill "${pids[@]}" 2>/dev/null || true
    "$PETCHAT_TEST_POSTGRES_BIN/psql" -q "$PETCHAT_TEST_POSTGRES_URL" \
      -c "DROP DATABASE IF EXISTS $cluster_db WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
api_key="interop-key-$RANDOM$RANDOM"
start_server "$server" "$work" "$secret" --api-keys "$api_key" --public-topics 'pets:*' --sse-keepalive-ms 500
pids+=("$SERVER_PID")
export PETCHAT_URL="ws://$SERVER_ADDR/v1/ws/chat" PETCHAT_HTTP="http://$SERVER_ADDR" PETCHAT_API_KEY="$api_key"
token() { "$server" token --secret "$secret" --sub "$1" --role "$2" --name "$1" --ttl 10m; }

PETCHAT_AGENT_TOKEN=$(token agent-py agent) PETCHAT_CUSTOMER_TOKEN=$(token cust-py customer) \
  "$venv/bin/python" tests/interop/interop.py
PETCHAT_AGENT_TOKEN=$(token agent-node agent) PETCHAT_CUSTOMER_TOKEN=$(token cust-node customer) \
  node --test tests/interop/node/interop.test.mjs
PETCHAT_CUSTOMER_ID=cust-live-py PETCHAT_CUSTOMER_TOKEN=$(token cust-live-py customer) \
  "$venv/bin/python" tests/interop/live.py
PETCHAT_CUSTOMER_ID=cust-live-node PETCHAT_CUSTOMER_TOKEN=$(token cust-live-node customer) \
  node --test tests/interop/node/live.test.mjs
PETCHAT_NODE_USER=docs-node PETCHAT_NODE_TOKEN=$(token docs-node customer) PETCHAT_PYTHON_USER=docs-py \
  PETCHAT_PYTHON_TOKEN=$(token docs-py customer) PETCHAT_KEEPALIVE_S=1.5 "$venv/bin/python" tests/interop/docs_examples.py

# Through nginx, in front of this node and a second one.
first=$SERVER_ADDR
mkdir "$work/second"
start_server "$server" "$work/second" "$secret"
pids+=("$SERVER_PID")
port=$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
nginx_start "$work/nginx" "127.0.0.1:$port" "$first" "$SERVER_ADDR"
PETCHAT_LB_URL="ws://127.0.0.1:$port/v1/ws/chat" PETCHAT_CUSTOMER_TOKEN=$(token cust-lb customer) \
  "$venv/bin/python" tests/interop/through_nginx.py

# A cluster: two nodes on one PostgreSQL database and a Redis of their own.
source scripts/services.sh
services_postgres
services_install redis-server redis-server
cluster_db="petchat_interop_$$_$RANDOM"
"$PETCHAT_TEST_POSTGRES_BIN/psql" -q "$PETCHAT_TEST_POSTGRES_URL" -c "CREATE DATABASE $cluster_db"
redis_port=$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
pids+=("$!")
for _ in $(seq 1 50); do
  redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
  sleep 0.1
done
urls=()
for node in 1 2; do
  mkdir "$work/node$node"
  start_server_on "$server" "$work/node$node" "$secret" "${PETCHAT_TEST_POSTGRES_URL%/*}/$cluster_db" \
    --redis-url "redis://127.0.0.1:$redis_port/" --node-id "interop-$node"
  pids+=("$SERVER_PID")
  urls+=("ws://$SERVER_ADDR/v1/ws/chat")
done
PETCHAT_NODE_URLS="${urls[*]}" PETCHAT_AGENT_TOKEN=$(token agent-cluster-py agent) \
  PETCHAT_CUSTOMER_TOKEN=$(token cust-cluster-py customer) "$venv/bin/python" tests/interop/cluster.py
