#!/usr/bin/env bash
# Builds {{name}}.wasm in this folder. sdk/build.sh installs componentize-qjs (pinned in
# sdk/package-lock.json) into sdk/node_modules when missing (needs Node.js 20+ with npm).
set -euo pipefail
cd "$(dirname "$0")"
sdk/build.sh app.js {{kind}} {{name}}.wasm
