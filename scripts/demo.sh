#!/usr/bin/env bash
# The main job on a fresh machine: fetch the default model, build lorb, rescore the bundled
# LibriSpeech sample with the shipped LoRB adapter (adapters/minilm-blstm-lorb, its λ and n-best
# depth) and print WER before and after, then the same on the first 300 test_clean utterances
# when ../shared/data is there.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch_model.sh
cargo build --release --quiet
# Quiet Mesa/Vulkan probes on headless machines.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/lorb-xdg}"; mkdir -p -m 0700 "$XDG_RUNTIME_DIR"
./target/release/lorb eval --nbest www/sample/librispeech-blstm-dev_clean-20.jsonl "$@"
test_clean=../shared/data/librispeech-blstm-100best/test_clean.jsonl.gz
if [ -f "$test_clean" ]; then
  ./target/release/lorb eval --nbest "$test_clean" --limit 300 "$@"
fi
