#!/usr/bin/env bash
# Behaviour unchanged? Runs the same seeded `lorb train` runs (LoRA MWER + L_cor, CLS head only,
# full fine-tuning, MLM with the MLM head; CPU and GPU) on the bundled sample with the tiny BERT
# fixture, once with each of two lorb binaries, and compares the adapters byte for byte and
# train_log.json without its timings. For refactors: build the binary before the change, copy it
# away, build after, and pass both.
#   scripts/dev/same_training.sh BEFORE_BIN AFTER_BIN [OUT_DIR]
set -euo pipefail
old=$1 new=$2 out=${3:-target/tmp/same-training}
root="$(cd "$(dirname "$0")/../.." && pwd)"
sample=$root/www/sample/librispeech-blstm-dev_clean-20.jsonl model=$root/tests/fixtures/bert
mkdir -p "$out"
common=(--train "$sample" --model "$model" --truncate --depth 6 --holdout 5 --epochs 2 --batch 4 --kappa 0.5 --json)
declare -A modes=([lora]="--cor-weight 0.1 --lr 1e-2" [head]="--head-only --lr 1e-2" [full]="--full --lr 1e-4" [mlm]="--objective mlm --mlm-head --lr 1e-2")
for be in cpu gpu; do
  for name in lora head full mlm; do
    for v in old new; do
      bin=${!v}; dir=$out/$v-$be-$name; rm -rf "$dir"
      # shellcheck disable=SC2086
      "$bin" train "${common[@]}" ${modes[$name]} --backend $be --out "$dir" > /dev/null 2> "$dir.err" || echo "$v $be $name failed: $(tail -1 "$dir.err")"
    done
    python3 - "$out/old-$be-$name" "$out/new-$be-$name" "$be $name" <<'PY'
import json, os, sys
a, b, what = sys.argv[1:]
for f in sorted(os.listdir(a)):
    if f.endswith(".safetensors"):
        same = open(os.path.join(a, f), "rb").read() == open(os.path.join(b, f), "rb").read()
        print(f"{what} {f}: {'identical' if same else 'DIFFERS'}")
def strip(v):
    if isinstance(v, dict):
        return {k: strip(x) for k, x in v.items() if not any(t in k for t in ("second", "time", "ms", "trainer"))}
    return [strip(x) for x in v] if isinstance(v, list) else v
la, lb = (strip(json.load(open(os.path.join(d, "train_log.json")))) for d in (a, b))
print(f"{what} train_log.json: {'same (timings aside)' if la == lb else 'DIFFERS: ' + ', '.join(k for k in la if la[k] != lb.get(k))}")
PY
  done
done
