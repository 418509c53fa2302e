#!/usr/bin/env bash
# Builds the bundled connectors in plugins-src/ for wasm32-wasip2 into plugins/, and the
# test-only fixtures (two versions of `versioned-source`) into tests/fixtures/.
# Each connector is built on its own: the SDK's `source` and `sink` features pick the WIT
# world and must not be unified into one build.
set -euo pipefail
cd "$(dirname "$0")/.."
# Honour a CARGO_TARGET_DIR set by the caller (helpers and CI may use their own).
target="${CARGO_TARGET_DIR:-target}"
rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
# One line per bundled connector crate (name = crate = plugins/<name>.wasm).
bundled=(
    file-source
    file-sink
    http-sink
    http-source
)
for crate in "${bundled[@]}"; do
    cargo build --quiet --profile plugin --target wasm32-wasip2 -p "$crate"
    cp "$target/wasm32-wasip2/plugin/${crate//-/_}.wasm" "plugins/$crate.wasm"
done
mkdir -p tests/fixtures
for variant in "1.0.0:" "2.0.0:v2"; do
    cargo build --quiet --profile plugin --target wasm32-wasip2 -p versioned-source --features "${variant#*:}"
    cp "$target/wasm32-wasip2/plugin/versioned_source.wasm" "tests/fixtures/versioned-source-${variant%%:*}.wasm"
done
ls -l plugins/*.wasm tests/fixtures/*.wasm
