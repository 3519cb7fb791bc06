#!/usr/bin/env bash
# The one test command of petchat (README, .ci/run): installs what the checks
# need on a fresh Debian machine, skipping what is already there, then runs
# every check. Each step prints a "==>" header; the first failure stops it.
set -euo pipefail
# Incremental build data is never reused between CI runs and grew target/ to 77 GB here.
export CARGO_INCREMENTAL=0
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

step "toolchain and packages"
for component in rustfmt clippy; do
  rustup component list --installed | grep -q "^$component" || rustup component add "$component"
done
rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  as_root apt-get update -qq && as_root apt-get install -y -qq nodejs npm
fi
# The cluster link's tests start a real redis-server (crates/server/tests/common/redis.rs).
if ! command -v redis-server >/dev/null; then
  as_root apt-get update -qq && as_root apt-get install -y -qq redis-server
fi
# PostgreSQL's binaries: the bench's cluster target (crates/bench/tests/smoke.rs)
# starts a PostgreSQL of its own in the cargo test step; the PostgreSQL step
# below starts the suite's shared one.
source scripts/services.sh
services_install postgresql "$SERVICES_POSTGRES_BIN/initdb"
source scripts/lib.sh
# The load balancer's tests put a real nginx in front of server processes
# (crates/server/tests/nginx.rs, and scripts/interop.sh).
source scripts/nginx.sh
nginx_install
# The contract validators (ajv, @asyncapi/parser) and the benchmark's Node peers
# (ws and socket.io, for the bench's smoke test), pinned by their package-lock.json.
npm_ci scripts/contract
npm_ci benches/peers/node-ws
npm_ci benches/peers/socket-io

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy -D warnings"
# With postgres-tests, so that the tests it gates (postgres_store.rs, cluster.rs) are linted too.
cargo clippy --workspace --all-targets --features petchat-server/postgres-tests --locked -- -D warnings
# The browser code and its tests exist only on wasm32 (the harness address is set at run time).
PETCHAT_HARNESS=unset cargo clippy --package petchat-web --target wasm32-unknown-unknown --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

step "cargo test: the server suite on PostgreSQL, and the cluster"
# The same server tests on a PostgreSQL database each (tests/common/database.rs),
# with postgres_store.rs and cluster.rs, which are built only with the
# postgres-tests feature because they need PostgreSQL (several nodes' pools on
# one database, a restart; server processes on one database and a real
# redis-server each, nginx in front, SPEC §10). One command, so one build.
source scripts/services.sh
services_postgres
PETCHAT_TEST_STORE=postgres cargo test -p petchat-server --features postgres-tests --tests --locked

step "fuzz: short run of every target"
bash scripts/fuzz.sh

step "interop: Python websockets and Node ws against the built server"
bash scripts/interop.sh

step "browser: the pages in headless Chromium"
bash scripts/browser.sh

step "protocol crate for wasm32-unknown-unknown"
cargo build --package petchat-protocol --target wasm32-unknown-unknown --locked

step "generated files are fresh"
cargo xtask schemas --check

step "contract checked by ajv and @asyncapi/parser"
node scripts/contract/validate.mjs
