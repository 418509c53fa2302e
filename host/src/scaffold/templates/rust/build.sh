#!/usr/bin/env bash
# Builds {{name}}.wasm in this folder. Installs the wasm32-wasip2 target when missing
# (rustup); honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo >/dev/null || { echo "build.sh: cargo is missing: install Rust with rustup" >&2; exit 1; }
rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --quiet --release --target wasm32-wasip2
cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/{{crate}}.wasm" {{name}}.wasm
echo "built $(pwd)/{{name}}.wasm"
