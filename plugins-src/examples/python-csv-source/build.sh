#!/usr/bin/env bash
# Builds this example into a component: build.sh [OUT.wasm] (default: ./python-csv-source.wasm).
# componentize-py (pinned 0.25.1, the version the SDK is written for) must be on PATH:
#   python3 -m pip install componentize-py==0.25.1
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(realpath -m "${1:-$here/python-csv-source.wasm}")"
command -v componentize-py >/dev/null || { echo "build.sh: componentize-py is missing: python3 -m pip install componentize-py==0.25.1" >&2; exit 1; }
cd "$here"
componentize-py -d ../../../wit -w source-connector componentize app -p . -p ../../sdk-python -o "$out"
