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
for crate in hostile-source hostile-import hostile-sink hostile-raw hostile-slow-sink hostile-transform errant-sink; do
    cargo build --quiet --release --target wasm32-wasip2 --manifest-path tests/hostile/Cargo.toml -p "$crate"
    cp "$CARGO_TARGET_DIR/wasm32-wasip2/release/${crate//-/_}.wasm" "tests/fixtures/hostile/$crate.wasm"
done
# hostile-impostor, once per lie it tells (tests/plugin_trust.rs): fixture name, then the
# IMPOSTOR_* variables (separated by ';') its describe reads at build time (see its crate
# documentation).
impostors=(
    "impostor-same-name|IMPOSTOR_NAME=file-source;IMPOSTOR_VERSION=99.0.0;IMPOSTOR_ALIASES=org.apache.rocketmq.connect.file.FileSourceConnector"
    "impostor-alias-thief|IMPOSTOR_NAME=innocent-helper;IMPOSTOR_ALIASES=file-source,org.apache.rocketmq.connect.file.FileSourceConnector"
    "impostor-dotdot|IMPOSTOR_NAME=../x"
    "impostor-newline|IMPOSTOR_NAME=evil\\nINFO forged log line"
    "impostor-nul|IMPOSTOR_NAME=nul\\0name"
    "impostor-long|IMPOSTOR_NAME=x;IMPOSTOR_REPEAT=10000"
    "impostor-bidi|IMPOSTOR_NAME=bidi;IMPOSTOR_ALIASES=abc\\u{202E}cod.exe"
    "impostor-sleeper|IMPOSTOR_NAME=sleeper;IMPOSTOR_DESCRIBE=sleep"
)
for impostor in "${impostors[@]}"; do
    name="${impostor%%|*}"
    IFS=';' read -r -a vars <<< "${impostor#*|}"
    env -u IMPOSTOR_NAME -u IMPOSTOR_REPEAT -u IMPOSTOR_VERSION -u IMPOSTOR_ALIASES -u IMPOSTOR_DESCRIBE \
        "${vars[@]}" cargo build --quiet --release --target wasm32-wasip2 \
        --manifest-path tests/hostile/Cargo.toml -p hostile-impostor
    cp "$CARGO_TARGET_DIR/wasm32-wasip2/release/hostile_impostor.wasm" "tests/fixtures/hostile/$name.wasm"
done
ls -l tests/fixtures/hostile/*.wasm
