#!/usr/bin/env bash
# Builds {{name}}.wasm in this folder with componentize-py 0.25.1 (the version the SDK in
# wasm_connect/ is written for). When componentize-py 0.25.1 is not on PATH, it is
# installed into .venv/ here (needs python3 with venv).
set -euo pipefail
cd "$(dirname "$0")"
want=0.25.1
tool=componentize-py
if ! { command -v "$tool" >/dev/null && "$tool" --version 2>/dev/null | grep -q "$want"; }; then
    tool=.venv/bin/componentize-py
    if [ ! -x "$tool" ]; then
        python3 -m venv .venv
        .venv/bin/pip install --quiet "componentize-py==$want"
    fi
fi
"$tool" -d wit -w {{kind}}-connector componentize app -p . -o {{name}}.wasm
echo "built $(pwd)/{{name}}.wasm"
