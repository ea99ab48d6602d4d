#!/usr/bin/env python3
"""Time lorb's CPU backend against PyTorch and ONNX Runtime on the same n-best lists, interleaved
(run by developers, not by CI; see docs/benchmarks.md).

    python3 -m venv V && V/bin/pip install torch transformers onnxruntime onnx numpy tokenizers safetensors
    cargo build --release
    V/bin/python scripts/bench/cpu_peers.py --lists 5 --rounds 5 --threads 2 --out docs/bench/cpu-DATE.json

Workloads, on lists 1..N of the n-best file (list 0 warms every runner up), milliseconds per list:
- cls: the final [CLS] vector of every hypothesis through a linear head (one batch per list);
- pll: every non-special token of every hypothesis masked in its own copy, all copies of a list
  in one batch, the masked-LM head (dense, GELU, LayerNorm, tied decoder) at the masked slot only.
The heads are random (speed does not depend on their values), as `lorb bench` does. The peers get
the token ids ready (their tokenisation is not timed); lorb's figures include its tokenisation.

PyTorch and ONNX Runtime first run every list once untimed (they prepare kernels per input
shape); lorb warms up on list 0 only. Each round runs the three runners one after another, one process computing at a time, in rotated
order; the JSON and the table give min and median over the rounds.
"""
import argparse
import datetime
import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer
from transformers import BertModel

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read_lists(path, n):
    out = []
    with (gzip.open(path, "rt", encoding="utf-8") if path.endswith(".gz") else open(path, encoding="utf-8")) as f:
        for line in f:
            if line.strip():
                out.append([h["text"] for h in json.loads(line)["hyps"]])
            if len(out) >= n:
                break
    return out


class Cls(torch.nn.Module):
    def __init__(self, bert):
        super().__init__()
        self.bert = bert
        self.head = torch.nn.Linear(bert.config.hidden_size, 1)

    def forward(self, input_ids, attention_mask):
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(h[:, 0]).squeeze(-1)


class Pll(torch.nn.Module):
    """log P(target) at one masked slot per row (the head runs at those slots only)."""

    def __init__(self, bert):
        super().__init__()
        c = bert.config
        self.bert = bert
        self.dense = torch.nn.Linear(c.hidden_size, c.hidden_size)
        self.ln = torch.nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.bias = torch.nn.Parameter(torch.randn(c.vocab_size) * 0.02)

    def forward(self, input_ids, attention_mask, positions, targets):
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        rows = torch.arange(h.shape[0], device=h.device)
        t = self.ln(torch.nn.functional.gelu(self.dense(h[rows, positions])))
        logits = t @ self.bert.embeddings.word_embeddings.weight.T + self.bias
        lp = torch.log_softmax(logits, dim=-1)
        return lp.gather(1, targets.unsqueeze(1)).squeeze(1)


def pad(seqs):
    t = max(len(s) for s in seqs)
    ids = np.zeros((len(seqs), t), dtype=np.int64)
    mask = np.zeros((len(seqs), t), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return ids, mask


def inputs(tok, lists):
    """Per list: the CLS batch and the PLL batch (copies, slot positions, targets)."""
    mask_id = tok.token_to_id("[MASK]")
    out = []
    for texts in lists:
        encs = [tok.encode(t) for t in texts]
        seqs = [e.ids for e in encs]
        copies, pos, tgt = [], [], []
        for e in encs:
            for i, sp in enumerate(e.special_tokens_mask):
                if not sp:
                    c = list(e.ids)
                    c[i] = mask_id
                    copies.append(c)
                    pos.append(i)
                    tgt.append(e.ids[i])
        ids, m = pad(seqs)
        pids, pm = pad(copies)
        out.append({"cls": (ids, m), "pll": (pids, pm, np.array(pos, dtype=np.int64), np.array(tgt, dtype=np.int64)), "tokens": sum(len(s) for s in seqs), "copies": len(copies)})
    return out


def prepare(model, nbest, n, attn=None):
    """The CLS and PLL models (seeded random heads), the first `n` lists and their batches."""
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    kw = {"attn_implementation": attn} if attn else {}
    bert = BertModel.from_pretrained(model, add_pooling_layer=False, **kw).eval()
    models = {"cls": Cls(bert).eval(), "pll": Pll(bert).eval()}
    tok = Tokenizer.from_file(os.path.join(model, "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    lists = read_lists(nbest, n)
    return models, lists, inputs(tok, lists)


def time_torch(models, batches, work):
    with torch.inference_mode():
        run = lambda b: models[work](*[torch.from_numpy(x) for x in b[work]])
        for b in batches:  # every shape once: oneDNN and MKL prepare kernels per shape
            run(b)
        t0 = time.perf_counter()
        for b in batches[1:]:
            run(b)
        return 1000 * (time.perf_counter() - t0) / (len(batches) - 1)


def export_onnx(models, batches, dir):
    paths = {}
    for work, names in (("cls", ["input_ids", "attention_mask"]), ("pll", ["input_ids", "attention_mask", "positions", "targets"])):
        path = os.path.join(dir, f"{work}.onnx")
        axes = {"input_ids": {0: "b", 1: "t"}, "attention_mask": {0: "b", 1: "t"}, "positions": {0: "b"}, "targets": {0: "b"}}
        args = tuple(torch.from_numpy(x) for x in batches[0][work])
        torch.onnx.export(models[work], args, path, input_names=names, output_names=["out"], dynamic_axes={k: axes[k] for k in names}, opset_version=17, dynamo=False)
        paths[work] = path
    return paths


def time_ort(sessions, batches, work):
    s = sessions[work]
    names = [i.name for i in s.get_inputs()]
    run = lambda b: s.run(None, dict(zip(names, b[work])))
    for b in batches:
        run(b)
    t0 = time.perf_counter()
    for b in batches[1:]:
        run(b)
    return 1000 * (time.perf_counter() - t0) / (len(batches) - 1)


def time_lorb(args, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    cmd = [args.lorb, "bench", "--backend", "cpu", "--model", args.model, "--nbest", args.nbest, "--lists", str(args.lists), "--json"]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    v = json.loads(out)
    return {"cls": v["cls_ms_per_list"], "pll": v["pll_ms_per_list"]}


def parser(lists):
    """The arguments every peer bench takes: the lists, the model, lorb's binary, how many lists."""
    p = argparse.ArgumentParser()
    p.add_argument("--nbest", default=os.path.join(ROOT, "..", "shared", "data", "librispeech-espnet-30best", "dev_clean.jsonl.gz"))
    p.add_argument("--model", default=os.path.join(ROOT, "models", "all-MiniLM-L6-v2"))
    p.add_argument("--lorb", default=os.path.join(ROOT, "target", "release", "lorb"))
    p.add_argument("--lists", type=int, default=lists)
    p.add_argument("--out")
    return p


def main():
    p = parser(5)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import onnxruntime as ort

    torch.set_num_threads(args.threads)
    models, lists, batches = prepare(args.model, args.nbest, args.lists + 1)
    tmp = tempfile.mkdtemp()
    eager = {"cls": Cls(BertModel.from_pretrained(args.model, add_pooling_layer=False, attn_implementation="eager").eval()), "pll": None}
    eager["pll"] = Pll(eager["cls"].bert)
    eager["pll"].load_state_dict(models["pll"].state_dict())
    eager["cls"].head.load_state_dict(models["cls"].head.state_dict())
    paths = export_onnx({k: m.eval() for k, m in eager.items()}, batches, tmp)
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    sessions = {k: ort.InferenceSession(v, so, providers=["CPUExecutionProvider"]) for k, v in paths.items()}

    # The exported graphs must compute what PyTorch computes, on a list of another length too.
    with torch.inference_mode():
        for w in ("cls", "pll"):
            for b in (batches[0], batches[-1]):
                want = models[w](*[torch.from_numpy(x) for x in b[w]]).numpy()
                got = sessions[w].run(None, dict(zip([i.name for i in sessions[w].get_inputs()], b[w])))[0]
                err = float(np.abs(got - want).max())
                if err > 1e-3:
                    sys.exit(f"ONNX Runtime's {w} output differs from PyTorch's by {err}")

    runners = {
        "pytorch": lambda: {w: time_torch(models, batches, w) for w in ("cls", "pll")},
        "onnxruntime": lambda: {w: time_ort(sessions, batches, w) for w in ("cls", "pll")},
        "lorb": lambda: time_lorb(args, args.threads),
    }
    names = list(runners)
    times = {n: {"cls": [], "pll": []} for n in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            got = runners[n]()
            for w in ("cls", "pll"):
                times[n][w].append(got[w])
            print(f"round {r + 1}: {n}: cls {got['cls']:.1f} ms, pll {got['pll']:.1f} ms", file=sys.stderr)

    timed = batches[1:]
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": args.threads, "python": platform.python_version()},
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__},
        "nbest": os.path.relpath(args.nbest, ROOT),
        "lists": args.lists,
        "rounds": args.rounds,
        "hyps_per_list": statistics.mean(len(l) for l in lists[1:]),
        "tokens_per_hyp": sum(b["tokens"] for b in timed) / sum(len(l) for l in lists[1:]),
        "pll_copies_per_list": statistics.mean(b["copies"] for b in timed),
        "workloads": [
            {"name": f"{w}_30best", "runner": n, "min_ms": min(times[n][w]), "median_ms": statistics.median(times[n][w]), "all_ms": times[n][w]}
            for w in ("cls", "pll")
            for n in names
        ],
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print("\n| workload | " + " | ".join(names) + " | lorb / best peer (median) |", file=sys.stderr)
    for w in ("cls", "pll"):
        med = {n: statistics.median(times[n][w]) for n in names}
        mn = {n: min(times[n][w]) for n in names}
        best = min(med["pytorch"], med["onnxruntime"])
        print(f"| {w} | " + " | ".join(f"{mn[n]:.0f} / {med[n]:.0f}" for n in names) + f" | {med['lorb'] / best:.2f} |", file=sys.stderr)


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
