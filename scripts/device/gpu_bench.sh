#!/bin/bash
# On the GPU machine (issue 16): lorb's `bench` and the same workloads in PyTorch, on the same
# lists and the same GPU, in one run (scripts/bench/gpu_peers.py says what is timed).
# Here first: `bash scripts/device/pack.sh` (devrun/: the release binary, the model rounded to f16,
# the lists) and .gl (../shared/TOOLCHAIN.md). Then, through the device tool:
#   bash scripts/device/gpu_bench.sh 2>&1 | tail -60        with carry [".gl", "devrun"]
# It writes $OUT/gpu.json (commit it as docs/bench/<gpu>-<date>.json) and $OUT/gpu.log.
# Dry run here (tiny, CPU torch, lavapipe): DRY=1 OUT=/tmp/o bash scripts/device/gpu_bench.sh
set -u
T0=$(date +%s)
cd "$(dirname "$0")/../.."
R=/tmp/r; mkdir -p $R/m $R/data "$OUT"
if [ -z "${DRY:-}" ]; then
  for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  xz -dc devrun/lorb.xz > $R/lorb; chmod +x $R/lorb
  xz -dc devrun/m/model.safetensors.xz > $R/m/model.safetensors
  cp devrun/m/config.json devrun/m/tokenizer.json $R/m/
  xz -dc devrun/data/espnet-30best-dev_clean.jsonl.xz > $R/data/espnet-dev_clean.jsonl
  PY=${PY:-python3}; ARGS="--lists 10"
  nvidia-smi -L
else
  cp target/release/lorb $R/lorb
  cp models/all-MiniLM-L6-v2/* $R/m/
  # 10 lists of 4 hypotheses: lavapipe is slow.
  zcat ../shared/data/librispeech-espnet-30best/dev_clean.jsonl.gz | head -10 | python3 -c 'import json, sys
for l in sys.stdin: d = json.loads(l); d["hyps"] = d["hyps"][:4]; print(json.dumps(d))' > $R/data/espnet-dev_clean.jsonl
  PY=${PY:-/work/V/bin/python}; ARGS="--lists 2 --device cpu"
fi
export XDG_RUNTIME_DIR=/tmp WGPU_BACKEND=vulkan
echo "setup $(( $(date +%s) - T0 )) s"
timeout ${LIMIT:-540} $PY scripts/bench/gpu_peers.py --lorb $R/lorb --model $R/m --nbest $R/data/espnet-dev_clean.jsonl $ARGS --out $OUT/gpu.json 2> $OUT/gpu.log > /dev/null
echo "exit $? after $(( $(date +%s) - T0 )) s"
cat $OUT/gpu.log | grep -v "^ "
