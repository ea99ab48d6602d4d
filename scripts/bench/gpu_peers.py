#!/usr/bin/env python3
"""lorb's GPU backend against PyTorch on the same GPU and the same n-best lists, in one run (issue
16; run by developers on the GPU machine through scripts/device/gpu_bench.sh, not by CI).

    V/bin/python scripts/bench/gpu_peers.py --lorb target/release/lorb --out docs/bench/GPU-DATE.json

Writes {"gpu", "driver", "date", "workloads": [{"name", "dtype", "lorb_ms", "torch_ms", ...}]}:
- cls_30best, pll_30best: milliseconds per ESPnet 30-best list (lists 1..N; list 0 and every
  shape once warm up), as scripts/bench/cpu_peers.py defines them (random heads, PyTorch's MLM
  head at the masked slot only). f32 with TF32 off, and f16 (PyTorch: weights in half; lorb:
  `--dtype f16`, weights in f16, products in f16 accumulated in f32).
- train_lora_8lists, train_full_8lists: milliseconds per optimiser step of 8 lists (all their
  hypotheses in one padded batch): MWER over each list of κ·s1 + CLS score, backward, AdamW;
  LoRA r 4, α 8 on query and value plus the CLS head (as `lorb bench --train`), or every weight.
- sgemm_4096, matmul_MxNxK: one 4096³ product and the encoder's own four (20,480 token rows:
  QKV, attention output, FFN in and out), f32 with TF32 off and f16; PyTorch `F.linear`, lorb
  `lorb bench --matmul ...` (its forward kernel A·Wᵀ, 20 products in one submission; f32 with the
  default tiles and with `--tiles vec4`, and `--dtype f16`).
- bert_base_30x32, bert_base_960x32: BERT-base shape (random weights) forward, 30 and 960
  sequences of 32 tokens, f32 and f16 (`lorb bench --shape bert-base`, which reads back the
  [CLS] vectors; PyTorch returns the whole last hidden state on the GPU).
lorb's figures come from `lorb bench` (its own JSON is kept under "lorb_raw"; lorb_ms_vec4: with
`--tiles vec4`, the forward's products with 16-byte loads); a workload lorb
cannot run yet has lorb_ms null and says why. `--device cpu` runs the whole thing tiny on the CPU
(a dry run of the plumbing; its times mean nothing).
"""
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

import torch
from transformers import BertConfig, BertModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cpu_peers import parser, prepare  # noqa: E402  (the same models, batches and arguments as the CPU bench)


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed(dev, fn, reps):
    """Median milliseconds of `reps` calls of fn (after one untimed call)."""
    fn()
    out = []
    for _ in range(reps):
        sync(dev)
        t0 = time.perf_counter()
        fn()
        sync(dev)
        out.append(1000 * (time.perf_counter() - t0))
    return statistics.median(out)


def per_list(dev, models, batches, work):
    """Milliseconds per list for work ("cls" or "pll") over batches[1:], every shape run once first."""
    moved = [[torch.from_numpy(x).to(dev) for x in b[work]] for b in batches]
    model = models[work]
    with torch.inference_mode():
        for b in moved:
            model(*b)
        sync(dev)
        best = None
        for _ in range(3):
            t0 = time.perf_counter()
            for b in moved[1:]:
                model(*b)
            sync(dev)
            ms = 1000 * (time.perf_counter() - t0) / (len(moved) - 1)
            best = ms if best is None else min(best, ms)
    return best


class LoRA(torch.nn.Module):
    """y = W x + b + (α/r)·B A x, W frozen (PEFT's LoRA, written out)."""

    def __init__(self, base, r=4, alpha=8.0):
        super().__init__()
        self.base = base
        self.a = torch.nn.Parameter(torch.randn(r, base.in_features) * 0.01)
        self.b = torch.nn.Parameter(torch.zeros(base.out_features, r))
        self.s = alpha / r

    def forward(self, x):
        return self.base(x) + self.s * (x @ self.a.T) @ self.b.T


def train_step_ms(dev, models, batches, lora, reps):
    """Milliseconds per MWER step of 8 lists (one padded batch), LoRA or full fine-tuning."""
    cls = models["cls"]
    bert = cls.bert
    if lora:
        for p in bert.parameters():
            p.requires_grad_(False)
        for layer in bert.encoder.layer:
            att = layer.attention.self
            att.query, att.value = LoRA(att.query), LoRA(att.value)
    cls.to(dev).eval()  # no dropout, as lorb; gradients flow all the same
    params = [p for p in cls.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    lists = batches[1:9]
    seqs, sizes = [], []
    for b in lists:
        ids, m = b["cls"]
        sizes.append(ids.shape[0])
        seqs += [row[: int(mm.sum())] for row, mm in zip(ids, m)]
    t = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), t, dtype=torch.long)
    mask = torch.zeros(len(seqs), t, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.from_numpy(s)
        mask[i, : len(s)] = 1
    ids, mask = ids.to(dev), mask.to(dev)
    g = torch.Generator().manual_seed(0)
    s1 = torch.randn(len(seqs), generator=g).to(dev)
    errs = torch.randint(0, 4, (len(seqs),), generator=g).float().to(dev)

    def step():
        opt.zero_grad(set_to_none=True)
        s = cls(ids, mask) + s1 / 6
        loss, start = 0.0, 0
        for n in sizes:
            p = torch.softmax(s[start : start + n], 0)
            e = errs[start : start + n]
            loss = loss + (p * (e - e.mean())).sum()
            start += n
        loss.backward()
        opt.step()

    ms = timed(dev, step, reps)
    n = sum(p.numel() for p in params)
    return ms, n


def main():
    p = parser(10)
    p.add_argument("--device", default="cuda")
    p.add_argument("--reps", type=int, default=20)
    args = p.parse_args()
    dev = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    quick = dev.type == "cpu"
    work = []

    def add(name, dtype, lorb_ms, torch_ms, **kw):
        work.append({"name": name, "dtype": dtype, "lorb_ms": lorb_ms, "torch_ms": torch_ms, **kw})
        print(f"{name} {dtype}: lorb {lorb_ms} ms, torch {torch_ms} ms {kw}", file=sys.stderr)

    # The products timed alone: the square one, then the encoder's own (all-MiniLM-L6-v2, the
    # PLL copies of a 30-best list: about 26,600 token rows, which lorb runs in chunks of at most
    # 128 MiB per operand: 20,480 rows here): QKV, attention output, FFN in, FFN out.
    sq = 256 if quick else 4096
    tok = 64 if quick else 20480
    encoder_shapes = [(tok, 1152, 384), (tok, 384, 384), (tok, 1536, 384), (tok, 384, 1536)]
    MM = ",".join([str(sq)] + [f"{m}x{nn}x{k}" for m, nn, k in encoder_shapes])

    # lorb first, alone on the GPU.
    def lorb(*extra):
        cmd = [args.lorb, "bench", "--backend", "gpu", "--model", args.model, "--nbest", args.nbest, "--json", *extra]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            print(f"{' '.join(cmd)}: {r.stderr[-2000:]}", file=sys.stderr)
            return None
        return json.loads(r.stdout)

    raw = {
        "score": lorb("--lists", str(args.lists)),
        "score_vec4": lorb("--lists", str(args.lists), "--tiles", "vec4"),
        "score_f16": lorb("--lists", str(args.lists), "--dtype", "f16"),
        "profile": lorb("--lists", str(min(args.lists, 3)), "--profile"),
        "profile_f16": lorb("--lists", str(min(args.lists, 3)), "--profile", "--dtype", "f16"),
        "train_b8": lorb("--train", "--batch", "8", *(["--lists", "8", "--no-full"] if quick else ["--lists", "16"])),
        "bert_base": lorb("--shape", "bert-base", *(["--rows", "1", "--lists", "1"] if quick else ["--lists", "10"])),
        "bert_base_f16": None if quick else lorb("--shape", "bert-base", "--lists", "10", "--dtype", "f16"),
        "sgemm": lorb("--matmul", MM, "--lists", "3" if quick else "20"),
        "sgemm_vec4": lorb("--matmul", MM, "--lists", "3" if quick else "20", "--tiles", "vec4"),
        "sgemm_f16": None if quick else lorb("--matmul", MM, "--lists", "20", "--dtype", "f16"),
    }
    sc, tr, v4, h16 = raw["score"] or {}, (raw["train_b8"] or {}).get("train", {}), raw["score_vec4"] or {}, raw["score_f16"] or {}

    models, lists, batches = prepare(args.model, args.nbest, args.lists + 1, attn="sdpa")
    for m in models.values():
        m.to(dev)
    cls_f32, pll_f32 = per_list(dev, models, batches, "cls"), per_list(dev, models, batches, "pll")
    add("cls_30best", "f32", sc.get("cls_ms_per_list"), cls_f32, lorb_ms_vec4=v4.get("cls_ms_per_list"))
    add("pll_30best", "f32", sc.get("pll_ms_per_list"), pll_f32, lorb_ms_vec4=v4.get("pll_ms_per_list"))
    if dev.type == "cuda":
        for m in models.values():
            m.half()
        add("cls_30best", "f16", h16.get("cls_ms_per_list"), per_list(dev, models, batches, "cls"))
        add("pll_30best", "f16", h16.get("pll_ms_per_list"), per_list(dev, models, batches, "pll"))
    for lora, name, key in ((True, "train_lora_8lists", "lora_gpu"), (False, "train_full_8lists", "full_gpu")):
        models, _, _ = prepare(args.model, args.nbest, 1, attn="sdpa")
        ms, n = train_step_ms(dev, models, batches, lora, 3 if quick else args.reps)
        add(name, "f32", tr.get(key, {}).get("ms_per_step"), ms, torch_trainable=n, lorb_trainable=tr.get(key, {}).get("trainable_parameters"))

    def lorb_mm(key, m, nn, k):
        return next((r for r in (raw[key] or {}).get("matmul", []) if (r["m"], r["n"], r["k"]) == (m, nn, k)), {})

    for m, nn, k in [(sq, sq, sq)] + encoder_shapes:
        x, w = torch.randn(m, k, device=dev), torch.randn(nn, k, device=dev)
        name = f"sgemm_{sq}" if (m, nn, k) == (sq, sq, sq) else f"matmul_{m}x{nn}x{k}"
        for dtype, key in (("f32", "sgemm"), ("f16", "sgemm_f16")) if dev.type == "cuda" else (("f32", "sgemm"),):
            if dtype == "f16":
                x, w = x.half(), w.half()
            ms = timed(dev, lambda: torch.nn.functional.linear(x, w), 3 if quick else args.reps)
            lo = lorb_mm(key, m, nn, k)
            extra = {"lorb_ms_vec4": lorb_mm("sgemm_vec4", m, nn, k).get("ms")} if dtype == "f32" else {}
            if "error" in lo:
                extra["lorb_error"] = lo["error"]
            add(name, dtype, lo.get("ms"), ms, torch_tflops=2 * m * nn * k / ms / 1e9, lorb_tflops=lo.get("tflops"), lorb_kernel=lo.get("kernel"), **extra)

    cfg = BertConfig()  # BERT-base: 12 layers, hidden 768, 12 heads, FFN 3072
    if quick:
        cfg = BertConfig(num_hidden_layers=2)
    torch.manual_seed(0)
    base = BertModel(cfg, add_pooling_layer=False).to(dev).eval()
    def lorb_forward(key, rows):
        return next((f["ms"] for f in (raw[key] or {}).get("forward", []) if f["rows"] == rows), None)

    for dtype in ("f32", "f16") if dev.type == "cuda" else ("f32",):
        if dtype == "f16":
            base.half()
        for rows in (30, 960):
            x = torch.randint(1000, 20000, (rows if not quick else rows // 30, 32), device=dev)
            with torch.inference_mode():
                ms = timed(dev, lambda: base(input_ids=x), 3 if quick else args.reps)
            key = "bert_base" if dtype == "f32" else "bert_base_f16"
            add(f"bert_base_{rows}x32", dtype, lorb_forward(key, rows if not quick else rows // 30), ms, lorb_reads_back="[CLS] vectors (its last layer at the [CLS] rows only)")

    gpu = torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu (dry run)"
    driver = None
    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True).stdout.strip() or None
    except OSError:
        pass
    out = {
        "gpu": gpu,
        "driver": driver,
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "lorb_backend": sc.get("backend"),
        "nbest": os.path.basename(args.nbest),
        "lists": args.lists,
        "hyps_per_list": statistics.mean(len(l) for l in lists[1:]),
        "pll_copies_per_list": statistics.mean(b["copies"] for b in batches[1:]),
        "workloads": work,
        "lorb_raw": raw,
    }
    text = json.dumps(out, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
