#!/usr/bin/env bash
# Browser tests: builds the wasm package and the pages (cargo xtask web), then
# drives the customer page and the agent console in headless Chromium with
# playwright-core. Installs Debian's chromium, the npm tools and the pinned
# wasm-bindgen CLI unless they are already there.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
npm_ci() {
  if [ ! -f "$1/node_modules/.package-lock.json" ] || [ "$1/package-lock.json" -nt "$1/node_modules/.package-lock.json" ]; then
    (cd "$1" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}

if ! command -v chromium >/dev/null; then
  as_root apt-get update -qq && as_root apt-get install -y -qq chromium chromium-driver
fi
npm_ci scripts/web
npm_ci tests/browser

cargo xtask web
cargo build --quiet --package petchat-server --locked
PETCHAT_SERVER="$PWD/target/debug/petchat-server" node --test tests/browser/
