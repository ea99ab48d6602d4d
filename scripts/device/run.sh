#!/bin/bash
# On a GPU machine (see pack.sh): training-step timings, then LoRB trainings at full n-best depth
# on all dev lists side by side on the GPU, each given TL seconds, testing on test_clean.
# Results: $OUT/bench_train.json (one list per step), $OUT/bench_train_b8.json (8), $OUT/results.tgz (adapters, train logs, stderr), $OUT/run.log.
# Device: run `bash scripts/device/run.sh 2>&1 | tee $OUT/run.log` with carry [".gl", "devrun"].
# Local dry run (tiny, CPU): OUT=/tmp/o QUICK=1 BACKEND=cpu bash scripts/device/run.sh
# Issue 14 (personalisation) on the GPU, without the step timings (about 8 minutes):
#   BENCH=0 PERSONALIZE=1 RUNS=blstm-cont TL=200 RUNMAX=330 bash scripts/device/run.sh 2>&1 | tee $OUT/run.log
# times the personal MWER adapter per chapter on the GPU alone ($OUT/personalize_mwer_gpu.json),
# continues the shipped full-depth BLSTM adapter (0.31 epoch so far) for TL seconds, and runs the
# test_clean protocol with it and the user's words ($OUT/personalize_words_gpu.json).
set -u
T0=$(date +%s)
cd "$(dirname "$0")/../.."
here=$PWD/devrun
R=/tmp/r; mkdir -p $R/m $R/data $R/out $R/logs
TL=${TL:-240}
if [ -z "${QUICK:-}" ]; then
  for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  xz -dc $here/lorb.xz > $R/lorb; chmod +x $R/lorb
  xz -dc $here/m/model.safetensors.xz > $R/m/model.safetensors
  EXTRA=""
else
  cp target/release/lorb $R/lorb
  cp models/all-MiniLM-L6-v2/model.safetensors $R/m/
  EXTRA="--limit 16 --eval-limit 4 --depth 3"; TL=5; BLISTS=2
fi
export XDG_RUNTIME_DIR=/tmp WGPU_BACKEND=vulkan LORB_MODEL=$R/m
cp $here/m/config.json $here/m/tokenizer.json $R/m/
for f in $here/data/*.xz; do b=$(basename $f .xz); xz -dc $f > $R/data/$b; done
nvidia-smi -L 2>/dev/null
echo "setup $(( $(date +%s) - T0 )) s"
snap() { tar czf $OUT/results.tgz -C $R out logs 2>/dev/null; }
( sleep ${WATCHDOG:-540}; echo watchdog; snap ) & WD=$!

E=$R/data/espnet-30best; B=$R/data/blstm-100best
GB=adapters/minilm-blstm100-lorb-cor  # the shipped full-depth BLSTM adapter
if [ -n "${QUICK:-}" ]; then PM="--limit 24 --depth 3 --epochs 1"; PW="--limit 24 --depth 3"; else PM="--limit 300"; PW=""; fi
if [ "${BENCH:-1}" = 1 ]; then
# 1. Training step timings, alone on the machine: LoRA, head-only and full fine-tuning on the GPU and on the CPU cores.
timeout 90 $R/lorb bench --train --backend gpu --nbest $E-dev_clean.jsonl --lists ${BLISTS:-6} --json > $OUT/bench_train.json 2> $R/logs/bench_train.err
# The same with the 8 lists of a step batched into one forward and backward (as training runs).
timeout 150 $R/lorb bench --train --backend gpu --batch 8 --nbest $E-dev_clean.jsonl --lists ${B8LISTS:-9} --json > $OUT/bench_train_b8.json 2> $R/logs/bench_train_b8.err
echo "bench $(( $(date +%s) - T0 )) s"
fi
if [ -n "${PERSONALIZE:-}" ]; then
  # Issue 14: the personal MWER adapter at full depth (defaults: 2 epochs, lr 1e-3, κ 1), alone on
  # the GPU, on test_clean's first chapters: seconds per chapter and its WER against the global one.
  timeout 100 $R/lorb personalize --nbest $B-test_clean.jsonl --adapter $GB --backend ${BACKEND:-gpu} $PM --json > $OUT/personalize_mwer_gpu.json 2> $R/logs/personalize_mwer_gpu.err
  echo "personal MWER $(( $(date +%s) - T0 )) s"
fi

# 2. Trainings side by side on the GPU (RUNS picks them), each with TL seconds of training.
run() { name=$1; shift; ( timeout ${RUNMAX:-470} $R/lorb train --backend ${BACKEND:-gpu} --time-limit $TL --out $R/out/$name $EXTRA "$@" > $R/logs/$name.json 2> $R/logs/$name.err; echo "$name exit $? at $(( $(date +%s) - T0 )) s" ) & PIDS="$PIDS $!"; }
PIDS=""
X="--exclude www/sample/librispeech-blstm-dev_clean-20.jsonl --holdout 500"
EA="--train $E-dev_clean.jsonl --train $E-dev_other.jsonl --test $E-test_clean.jsonl --kappa 0.16666667 --epochs 3 --batch 8 $X"
BA="--train $B-dev_clean.jsonl --train $B-dev_other.jsonl --test $B-test_clean.jsonl --kappa 1 --epochs 2 --batch 8 $X"
for name in ${RUNS:-espnet-lorb espnet-full blstm-full blstm-head}; do
  case $name in
    espnet-lorb) run $name $EA --lr 5e-4 ;;
    espnet-lorb-cor) run $name $EA --lr 5e-4 --cor-weight 0.1 ;;
    espnet-full) run $name $EA --full --lr 5e-5 --head-lr 1e-3 ;;
    espnet-head) run $name $EA --head-only --lr 1e-2 ;;
    blstm-lorb) run $name $BA --lr 1e-3 ;;
    blstm-lorb-cor) run $name $BA --lr 1e-3 --cor-weight 0.1 ;;
    blstm-cont) run $name $BA --lr 1e-3 --cor-weight 0.1 --adapter $GB ;;
    blstm-full) run $name $BA --full --lr 5e-5 --head-lr 1e-3 ;;
    blstm-head) run $name $BA --head-only --lr 1e-2 ;;
  esac
done
wait $PIDS
if [ -n "${PERSONALIZE:-}" ] && [ -f $R/out/blstm-cont/train_log.json ]; then
  # The protocol on all of test_clean with the continued adapter (λ from its held-out dev lists)
  # and the user's words at the β chosen on dev for the shipped one.
  timeout 120 $R/lorb personalize --nbest $B-test_clean.jsonl --adapter $R/out/blstm-cont --adapt none --lexicon-weight 0.5 --backend ${BACKEND:-gpu} $PW --json > $OUT/personalize_words_gpu.json 2> $R/logs/personalize_words_gpu.err
  echo "personalize $(( $(date +%s) - T0 )) s"
fi
pkill -P $WD 2>/dev/null; kill $WD 2>/dev/null
snap
echo "done $(( $(date +%s) - T0 )) s"
for f in $R/out/*/train_log.json; do echo "== $f"; python3 -c "
import json,sys
d=json.load(open('$f')); r=d['report']
print('steps',r['steps'],'limited',r.get('time_limited_steps'),'ms/step %.1f'%d['ms_per_step'],'dev %.3f -> %.3f'%(r['dev_first_pass_wer'],r['best_dev_wer']),'λ',d['weight'],'test',d['test'] and '%.3f -> %.3f'%(d['test']['first_pass_wer'],d['test']['wer']))
" 2>&1 | tail -2; done
for f in $OUT/personalize_*.json; do [ -s $f ] && python3 -c "
import json; d=json.load(open('$f'))
print('$f', {k: d.get(k) for k in ('chapters','eval_utterances','words','first_pass_wer','base_wer','lexicon_wer','adapter_wer','personalized_wer','seconds_per_chapter','backend')})"; done
