#!/usr/bin/env bash
# Builds a JavaScript connector into a component:
#   build.sh APP.js source|sink OUT.wasm
# APP.js default-exports `{connector, task}` (see wasm-connect.js). This script writes the
# entry module that joins APP.js to the WIT glue, then runs componentize-qjs (pinned in
# package.json; installed into this folder's node_modules when missing) with the non-async
# runtime (`--sync`: the host does not enable component-model async).
set -euo pipefail
app="$(realpath "$1")"
kind="$2"
out="$(realpath -m "$3")"
sdk="$(cd "$(dirname "$0")" && pwd)"
case "$kind" in
    source | sink) ;;
    *) echo "build.sh: the kind is source or sink, not '$kind'" >&2; exit 2 ;;
esac
if [ ! -x "$sdk/node_modules/.bin/componentize-qjs" ]; then
    command -v npm >/dev/null || { echo "build.sh: npm is missing: install Node.js 20+ (it brings npm)" >&2; exit 1; }
    (cd "$sdk" && npm ci --no-audit --no-fund --silent)
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The WIT: the SDK's worlds, the WASI interfaces they import and the connector package
# (copied, so the symlinked connector.wit of the repository resolves).
cp -rL "$sdk/wit" "$work/wit"
cat >"$work/entry.js" <<JS
import host from "wasm-connect:connector/host@0.1.0";
import preopens from "wasi:filesystem/preopens@0.2.12";
import { exportConnector } from "$sdk/wasm-connect.js";
import plugin from "$app";
const glue = exportConnector(plugin, { host, preopens });
export const connector = glue.connector;
export const $kind = glue.$kind;
JS
"$sdk/node_modules/.bin/componentize-qjs" --sync --wit "$work/wit" --world "js-$kind" \
    --js "$work/entry.js" --module-root / -o "$out"
echo "built $out"
