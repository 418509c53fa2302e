#!/usr/bin/env bash
# Builds the Python and JavaScript example connectors (plugins-src/examples/) into
# tests/fixtures/polyglot/<name>.wasm for tests/polyglot.rs and the polyglot bench. They
# are not committed (a Python component is ~18 MB): CI runs this script; so does a developer
# before those tests. Needs componentize-py 0.25.1 (pip) and npm (the JS SDK's build.sh
# installs its pinned componentize-qjs into plugins-src/sdk-js/node_modules).
set -euo pipefail
cd "$(dirname "$0")/.."
out=tests/fixtures/polyglot
mkdir -p "$out"
for example in python-csv-source python-jsonl-sink js-source js-sink; do
    "plugins-src/examples/$example/build.sh" "$out/$example.wasm" >/dev/null
done
ls -l "$out"/*.wasm
