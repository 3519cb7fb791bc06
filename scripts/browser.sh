#!/usr/bin/env bash
# Browser tests: builds the wasm package and the pages (cargo xtask web), then,
# in headless Chromium, runs the client's wasm-bindgen-test suite against a
# real server (tests/browser/client.test.mjs, through chromedriver) and drives
# the customer widget (on the demo page and on a shop page of another origin)
# and the agent console with playwright-core (tests/browser/pages.test.mjs,
# widget.test.mjs, live.test.mjs); checks the TypeScript declarations with tsc
# (tests/browser/usage.ts). Installs Debian's chromium and
# chromium-driver, the npm tools and the pinned wasm-bindgen CLI (with its
# test runner) unless they are already there.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
source scripts/lib.sh

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  as_root apt-get update -qq && as_root apt-get install -y -qq chromium chromium-driver
fi
npm_ci scripts/web
npm_ci tests/browser

cargo xtask web
# The package's TypeScript declarations: usage compiles, misuse does not; with
# the newest library, and with ES2022's plus only the `esnext.disposable` that
# wasm-bindgen's `[Symbol.dispose]()` on every class needs.
for lib in esnext,dom es2022,dom,esnext.disposable; do
  scripts/web/node_modules/.bin/tsc --noEmit --strict --target es2022 --module es2022 \
    --moduleResolution bundler --lib "$lib" tests/browser/usage.ts
done
cargo build --quiet --package petchat-server --locked
PETCHAT_SERVER="$PWD/target/debug/petchat-server" node --test tests/browser/
