#!/usr/bin/env bash
# The main job on a fresh machine: fetch the default model, build lorb, rescore the bundled
# LibriSpeech sample and print WER before and after.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch_model.sh
cargo build --release --quiet
# Quiet Mesa/Vulkan probes on headless machines.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/lorb-xdg}"; mkdir -p -m 0700 "$XDG_RUNTIME_DIR"
./target/release/lorb eval --nbest www/sample/librispeech-blstm-dev_clean-20.jsonl --head heads/minilm-blstm-cls.safetensors "$@"
