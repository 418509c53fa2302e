#!/usr/bin/env bash
# Builds the hostile test connectors (tests/hostile/, a Cargo workspace of its own) for
# wasm32-wasip2 and copies them to tests/fixtures/hostile/, where tests/hostile.rs and the
# noisy-neighbour bench load them from. Needs `rustup target add wasm32-wasip2`.
# Uses the main target dir so the SDK's dependencies are built once.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
mkdir -p tests/fixtures/hostile
# Each crate on its own: the SDK's `source` and `sink` features pick the WIT world and must
# not be unified into one build.
for crate in hostile-source hostile-import hostile-sink hostile-raw hostile-slow-sink; do
    cargo build --quiet --release --target wasm32-wasip2 --manifest-path tests/hostile/Cargo.toml -p "$crate"
    cp "$CARGO_TARGET_DIR/wasm32-wasip2/release/${crate//-/_}.wasm" "tests/fixtures/hostile/$crate.wasm"
done
ls -l tests/fixtures/hostile/*.wasm
