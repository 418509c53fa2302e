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
    mqtt-source
    mqtt-sink
    postgres-sink
    postgres-source
    postgres-cdc
    http-sink
    http-source
)
for crate in "${bundled[@]}"; do
    cargo build --quiet --profile plugin --target wasm32-wasip2 -p "$crate"
    cp "$target/wasm32-wasip2/plugin/${crate//-/_}.wasm" "plugins/$crate.wasm"
done
# The bundled transforms: one component per transform, from the `transforms` crate with
# the feature of the same name (plugins/<transform>.wasm).
transforms=(
    insert-field replace-field mask-field value-to-key extract-field hoist-field cast flatten
    timestamp-converter regex-router timestamp-router filter insert-header drop-headers
    header-from
)
for transform in "${transforms[@]}"; do
    cargo build --quiet --profile plugin --target wasm32-wasip2 -p transforms --features "$transform"
    cp "$target/wasm32-wasip2/plugin/transforms.wasm" "plugins/$transform.wasm"
done
mkdir -p tests/fixtures
for variant in "1.0.0:" "2.0.0:v2"; do
    cargo build --quiet --profile plugin --target wasm32-wasip2 -p versioned-source --features "${variant#*:}"
    cp "$target/wasm32-wasip2/plugin/versioned_source.wasm" "tests/fixtures/versioned-source-${variant%%:*}.wasm"
done
ls -l plugins/*.wasm tests/fixtures/*.wasm
