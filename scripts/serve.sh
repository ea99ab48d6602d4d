#!/usr/bin/env bash
# Builds the npm package into pkg/ (scripts/package.sh), fetches the default model, and serves
# the repository so that the demo page is at http://localhost:${PORT:-8000}/www/ (any static
# server will do; this uses Python's, adding the headers that allow wasm threads).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch_model.sh
bash scripts/package.sh
if [ "${1:-}" = "--build-only" ]; then exit 0; fi
echo "lorb demo: http://localhost:${PORT:-8000}/www/"
# Served cross-origin isolated (COOP/COEP headers), so that lorb/worker may use the threaded wasm
# build (SharedArrayBuffer) when the CPU computes.
exec python3 scripts/isolated_server.py "${PORT:-8000}"
