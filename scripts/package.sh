#!/usr/bin/env bash
# Builds the npm package `lorb` in pkg/: wasm-pack (target web, release), wasm-opt -O3 (binaryen
# from npm: Debian's old binaryen breaks the output, see ../shared/TOOLCHAIN.md), then the
# package's own files (the Node.js entry, the Web Worker entry, LICENSE) and package.json's
# exports map and metadata.
# The package holds two builds of the wasm: lorb_bg.wasm (one thread; every page, bundler and
# Node) and threads/lorb_bg.wasm (rayon on Web Workers sharing one memory, which "lorb/worker"
# loads when the page is cross-origin isolated). The second needs nightly Rust with rust-src
# (the dated nightly below; installed here when missing):
# std is rebuilt with atomics (-Z build-std), in its own target folder (target/threads).
# Prints the wasm's size before and after wasm-opt, raw and gzipped.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wasm-pack > /dev/null || cargo install wasm-pack --locked
rustup target add wasm32-unknown-unknown > /dev/null 2>&1 || true
# A dated nightly, so that a new one cannot break the threaded build unseen.
nightly=nightly-2026-05-20
rustup run $nightly rustc --version > /dev/null 2>&1 || rustup toolchain install $nightly --profile minimal
rustup component list --toolchain $nightly --installed | grep -q '^rust-src' || rustup component add rust-src --toolchain $nightly

wasm-pack build --target web --release --no-default-features
# The threaded build: shared, imported memory (up to 4 GiB, as the single-threaded one) and the
# thread-local storage exports wasm-bindgen's thread support needs.
link="--shared-memory --import-memory --max-memory=4294967296 --export=__wasm_init_tls --export=__tls_size --export=__tls_align --export=__tls_base"
RUSTUP_TOOLCHAIN=$nightly CARGO_TARGET_DIR=target/threads \
  RUSTFLAGS="-C target-feature=+atomics,+bulk-memory,+mutable-globals,+simd128 $(printf -- '-C link-arg=%s ' $link)" \
  wasm-pack build --target web --release --no-default-features --out-dir target/pkg-threads --out-name lorb \
  -- --features threads -Z build-std=panic_abort,std
rm -rf pkg/threads && mkdir pkg/threads
cp -r target/pkg-threads/lorb.js target/pkg-threads/lorb_bg.wasm target/pkg-threads/snippets pkg/threads/
# wasm-bindgen-rayon's helper worker imports its package as '../../..', which bundlers resolve
# (through a package.json) and browsers cannot (a folder is not a module): name the file.
helper=$(ls pkg/threads/snippets/wasm-bindgen-rayon-*/src/workerHelpers.js)
grep -q "import('../../..')" "$helper" || { echo "lorb: $helper no longer imports '../../..': check the patch below" >&2; exit 1; }
sed -i "s#import('../../..')#import('../../../lorb.js')#" "$helper"

tools=target/tools
[ -x "$tools/node_modules/.bin/wasm-opt" ] || npm install --prefix "$tools" --no-audit --no-fund --silent binaryen@132.0.0
size() { printf '%s bytes (%s gzipped)' "$(stat -c %s "$1")" "$(gzip -9c "$1" | wc -c)"; }
for wasm in pkg/lorb_bg.wasm pkg/threads/lorb_bg.wasm; do
  before=$(size $wasm)
  # The features rustc's wasm32 target and lorb's builds use (simd128 for the CPU kernels;
  # atomics and shared memory in the threaded one).
  "$tools/node_modules/.bin/wasm-opt" -O3 --enable-simd --enable-bulk-memory --enable-nontrapping-float-to-int \
    --enable-sign-ext --enable-mutable-globals --enable-reference-types --enable-multivalue --enable-threads \
    $wasm -o $wasm.opt
  mv $wasm.opt $wasm
  echo "lorb: $wasm $before before wasm-opt, $(size $wasm) after"
done
cp js/node.js js/worker.js js/worker-thread.js js/worker.d.ts LICENSE pkg/
node scripts/package.mjs pkg/package.json
