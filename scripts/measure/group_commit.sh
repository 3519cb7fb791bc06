#!/usr/bin/env bash
# Runs scripts/measure/group_commit.py against the release server twice: with
# group commit (--commit-batch 256, the default) and without (--commit-batch 1,
# one fsync per message). Needs the interop venv (scripts/interop.sh makes it).
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-2000}
cargo build --quiet --release --package petchat-server --locked
server=target/release/petchat-server
python=target/interop-venv/bin/python
[ -x "$python" ] || { echo "run scripts/interop.sh once first (it makes $python)" >&2; exit 1; }
for batch in 256 1; do
  work=$(mktemp -d)
  secret="measure-$RANDOM"
  "$server" --bind 127.0.0.1:0 --database-url "sqlite://$work/m.db" --jwt-secret "$secret" \
    --messages-per-second 1000000 --commit-batch "$batch" --log-format json 2>"$work/log" &
  pid=$!
  addr=""
  for _ in $(seq 1 100); do
    addr=$(sed -n 's/.*"message":"petchat listening","addr":"\([^"]*\)".*/\1/p' "$work/log" | head -n1)
    [ -n "$addr" ] && break
    sleep 0.1
  done
  printf 'commit-batch %-4s ' "$batch"
  PETCHAT_URL="ws://$addr/v1/ws/chat" \
  PETCHAT_AGENT_TOKEN=$("$server" token --secret "$secret" --sub agent --role agent) \
  PETCHAT_CUSTOMER_TOKEN=$("$server" token --secret "$secret" --sub customer --role customer) \
    "$python" scripts/measure/group_commit.py "$N"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$work"
done
