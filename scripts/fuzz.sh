#!/usr/bin/env bash
# Coverage-guided fuzzing of the protocol crate (docs/reliability.md, "Fuzzing").
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Replays the committed corpora and fixed crashes with plain `cargo test`, builds
# the AFL targets of fuzz/ (client_decode, server_decode, session), runs each for
# SECONDS (default 40) and fails if AFL saved any crash or hang, printing each
# input in hex with the panic it causes. Installs cargo-afl (which builds its
# AFL++) when missing. AFL's output stays in fuzz/out/<target> (FUZZ_OUT to move it).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-40}
shift $(($# > 0 ? 1 : 0))
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(client_decode server_decode session)
out=${FUZZ_OUT:-fuzz/out}
manifest=fuzz/Cargo.toml

# cargo-afl 0.18.2 matches the `afl` crate that fuzz/Cargo.lock pins. Its
# install builds AFL++ for the current toolchain; `config --build` redoes that
# after a toolchain update (and refuses when it is already built).
if ! cargo afl --version 2>/dev/null | grep -q '^cargo-afl 0\.18\.'; then
  cargo install cargo-afl --version 0.18.2
fi
if ! built=$(cargo afl config --build 2>&1) && ! grep -q 'already built' <<<"$built"; then
  echo "$built" >&2
  exit 1
fi

echo "fuzz: fmt, clippy and the corpus replay (plain cargo test)"
cargo fmt --manifest-path "$manifest" --check
cargo clippy --manifest-path "$manifest" --all-targets --locked --quiet -- -D warnings
cargo test --manifest-path "$manifest" --locked --quiet
replay=fuzz/target/debug/examples/replay

echo "fuzz: building the AFL targets"
cargo afl build --manifest-path "$manifest" --release --features afl --locked --quiet

export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
failed=0
for target in "${targets[@]}"; do
  # Seeds: what earlier runs kept, the fixed crashes, and for the decoders the golden frames.
  seeds="$out/seeds/$target"
  rm -rf "$seeds" "${out:?}/$target"
  mkdir -p "$seeds"
  for dir in "fuzz/corpus/$target" "fuzz/regressions/$target"; do
    [ -d "$dir" ] && find "$dir" -maxdepth 1 -type f -exec cp {} "$seeds/" \;
  done
  if [ "$target" != session ]; then
    for file in schemas/examples/valid/* schemas/examples/invalid/*; do cp "$file" "$seeds/example-${file##*/}"; done
  fi

  echo "fuzz: $target for ${seconds}s"
  if ! timeout $((seconds + 120)) cargo afl fuzz -V "$seconds" -t 1000 -i "$seeds" -o "$out/$target" \
    -- "fuzz/target/release/$target" >"$out/$target.log" 2>&1; then
    tail -n 30 "$out/$target.log" >&2
    echo "fuzz: afl-fuzz failed on $target (log: $out/$target.log)" >&2
    failed=1
    continue
  fi
  stats="$out/$target/default/fuzzer_stats"
  stat() { sed -n "s/^$1 *: //p" "$stats"; }
  echo "fuzz: $target: $(stat execs_done) executions, $(stat execs_per_sec)/s, $(stat edges_found) edges," \
    "$(stat corpus_count) paths, $(stat saved_crashes) crashes, $(stat saved_hangs) hangs"
  for kind in crashes hangs; do
    for input in "$out/$target/default/$kind"/id:*; do
      [ -e "$input" ] || continue
      failed=1
      echo "fuzz: $target: ${kind%es}: $input" >&2
      echo "  hex: $(od -An -tx1 -v "$input" | tr -d ' \n')" >&2
      "$replay" "$target" "$input" 2>&1 | grep -A2 'panicked at' | sed 's/^/  /' >&2 || true
    done
  done
done
if [ "$failed" != 0 ]; then
  echo "fuzz: FAILED. Reproduce with: cargo run --manifest-path $manifest --example replay -- TARGET FILE" >&2
  exit 1
fi
