#!/usr/bin/env bash
# Packs what a GPU machine without package access needs into devrun/ (git-ignored; carry it with
# .gl, see ../shared/TOOLCHAIN.md): the release binary, all-MiniLM-L6-v2 with its weights rounded
# to float16 (the f32 file does not fit the 64 MiB transfer limit beside the data; lorb loads F16
# as f32), and the n-best lists recompressed with xz. Then: `bash scripts/device/run.sh` there.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/devrun/' .git/info/exclude || echo /devrun/ >> .git/info/exclude
mkdir -p devrun/m devrun/data
cargo build --release --quiet
xz -T2 -9 -c target/release/lorb > devrun/lorb.xz
cp models/all-MiniLM-L6-v2/config.json models/all-MiniLM-L6-v2/tokenizer.json devrun/m/
python3 - <<'PY'
import json, struct
src = "models/all-MiniLM-L6-v2/model.safetensors"
raw = open(src, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
head = json.loads(raw[8:8 + n])
out, body = {}, bytearray()
for k, v in head.items():
    if k == "__metadata__":
        continue
    a, b = v["data_offsets"]
    x, dtype = raw[8 + n + a:8 + n + b], v["dtype"]
    if dtype == "F32":  # rounded to the nearest half, ties to even; other tensors (I64 ids) as they are
        x, dtype = struct.pack(f"<{len(x) // 4}e", *struct.unpack(f"<{len(x) // 4}f", x)), "F16"
    out[k] = {"dtype": dtype, "shape": v["shape"], "data_offsets": [len(body), len(body) + len(x)]}
    body += x
h = json.dumps(out).encode()
h += b" " * (-len(h) % 8)
open("devrun/m/model.safetensors", "wb").write(struct.pack("<Q", len(h)) + h + body)
PY
xz -T2 -6 -f devrun/m/model.safetensors
for s in espnet-30best blstm-100best; do
  for f in dev_clean dev_other test_clean; do
    zcat ../shared/data/librispeech-$s/$f.jsonl.gz | xz -T2 -9 > devrun/data/$s-$f.jsonl.xz
  done
done
du -sh devrun .gl
