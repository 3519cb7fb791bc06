#!/usr/bin/env bash
# Runs scripts/measure/group_commit.py against the release server twice: with
# group commit (--commit-batch 256, the default) and without (--commit-batch 1,
# one fsync per message). Needs the interop venv (scripts/interop.sh makes it).
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-2000}
source scripts/lib.sh
cargo build --quiet --release --package petchat-server --locked
server=target/release/petchat-server
python=target/interop-venv/bin/python
[ -x "$python" ] || { echo "run scripts/interop.sh once first (it makes $python)" >&2; exit 1; }
for batch in 256 1; do
  work=$(mktemp -d)
  secret="measure-$RANDOM"
  start_server "$server" "$work" "$secret" --messages-per-second 1000000 --commit-batch "$batch"
  addr=$SERVER_ADDR pid=$SERVER_PID
  printf 'commit-batch %-4s ' "$batch"
  PETCHAT_URL="ws://$addr/v1/ws/chat" \
  PETCHAT_AGENT_TOKEN=$("$server" token --secret "$secret" --sub agent --role agent) \
  PETCHAT_CUSTOMER_TOKEN=$("$server" token --secret "$secret" --sub customer --role customer) \
    "$python" scripts/measure/group_commit.py "$N"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$work"
done
