#!/usr/bin/env bash
# The main job on a fresh machine: fetch the default model, build lorb, rescore the bundled
# LibriSpeech sample and print WER before and after.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch_model.sh
cargo build --release --quiet
./target/release/lorb eval --nbest www/sample/librispeech-blstm-dev_clean-20.jsonl "$@"
