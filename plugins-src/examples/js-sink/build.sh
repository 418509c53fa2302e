#!/usr/bin/env bash
# Builds this example into a component: build.sh [OUT.wasm] (default: ./js-sink.wasm).
# The SDK's build.sh installs componentize-qjs (pinned in plugins-src/sdk-js/package.json).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec "$here/../../sdk-js/build.sh" "$here/app.js" sink "${1:-$here/js-sink.wasm}"
