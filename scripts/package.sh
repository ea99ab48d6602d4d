#!/usr/bin/env bash
# Builds the npm package `lorb` in pkg/: wasm-pack (target web, release), wasm-opt -O3 (binaryen
# from npm: Debian's old binaryen breaks the output, see ../shared/TOOLCHAIN.md), then the
# package's own files (the Node.js entry, the Web Worker entry, LICENSE) and package.json's
# exports map and metadata.
# Prints the wasm's size before and after wasm-opt, raw and gzipped.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wasm-pack > /dev/null || cargo install wasm-pack --locked
rustup target add wasm32-unknown-unknown > /dev/null 2>&1 || true
wasm-pack build --target web --release --no-default-features
tools=target/tools
[ -x "$tools/node_modules/.bin/wasm-opt" ] || npm install --prefix "$tools" --no-audit --no-fund --silent binaryen@132.0.0
size() { printf '%s bytes (%s gzipped)' "$(stat -c %s "$1")" "$(gzip -9c "$1" | wc -c)"; }
before=$(size pkg/lorb_bg.wasm)
# The features rustc's wasm32 target and lorb's build use (simd128 for the CPU kernels).
"$tools/node_modules/.bin/wasm-opt" -O3 --enable-simd --enable-bulk-memory --enable-nontrapping-float-to-int \
  --enable-sign-ext --enable-mutable-globals --enable-reference-types --enable-multivalue \
  pkg/lorb_bg.wasm -o pkg/lorb_bg.opt.wasm
mv pkg/lorb_bg.opt.wasm pkg/lorb_bg.wasm
echo "lorb: lorb_bg.wasm $before before wasm-opt, $(size pkg/lorb_bg.wasm) after"
cp js/node.js js/worker.js js/worker-thread.js js/worker.d.ts LICENSE pkg/
node scripts/package.mjs pkg/package.json
