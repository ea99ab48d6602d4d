#!/usr/bin/env python3
"""Prepares the browser benchmark (tests/e2e/peers/): exports all-MiniLM-L6-v2 to ONNX for ONNX
Runtime Web, with the same CLS and PLL graphs and lists as scripts/bench/cpu_peers.py, and
PyTorch's outputs on list 0 so that the page can check ONNX Runtime Web before timing it.
Run by developers, not by CI:

    V/bin/python scripts/bench/web_peers.py --lists 5        # V: cpu_peers.py's virtual environment
    bash scripts/serve.sh --build-only                      # lorb's package in pkg/
    (cd tests/e2e/peers && npm install) && node tests/e2e/peers/bench.mjs

Writes target/bench-web/{cls.onnx, pll.onnx, lists.json}.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cpu_peers import ROOT, export_onnx, prepare  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--nbest", default=os.path.join(ROOT, "..", "shared", "data", "librispeech-espnet-30best", "dev_clean.jsonl.gz"))
    p.add_argument("--model", default=os.path.join(ROOT, "models", "all-MiniLM-L6-v2"))
    p.add_argument("--lists", type=int, default=5, help="timed lists (list 0 warms up and checks)")
    p.add_argument("--out", default=os.path.join(ROOT, "target", "bench-web"))
    args = p.parse_args()

    models, lists, batches = prepare(args.model, args.nbest, args.lists + 1, attn="eager")
    os.makedirs(args.out, exist_ok=True)
    export_onnx(models, batches, args.out)

    def tensors(arrays):
        return [{"shape": list(a.shape), "data": a.reshape(-1).tolist()} for a in arrays]

    with torch.inference_mode():
        expect = {w: models[w](*[torch.from_numpy(x) for x in batches[0][w]]).numpy().astype(np.float64).tolist() for w in ("cls", "pll")}
    doc = {
        "nbest": os.path.relpath(args.nbest, ROOT),
        "model": os.path.relpath(args.model, ROOT),
        "lists": [{"texts": texts, "tokens": b["tokens"], "copies": b["copies"], "cls": tensors(b["cls"]), "pll": tensors(b["pll"])} for texts, b in zip(lists, batches)],
        "expect": expect,
    }
    with open(os.path.join(args.out, "lists.json"), "w") as f:
        json.dump(doc, f)
    print(f"wrote {args.out}: {len(lists)} lists, ONNX graphs cls.onnx and pll.onnx", file=sys.stderr)


if __name__ == "__main__":
    main()
