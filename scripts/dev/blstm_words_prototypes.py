#!/usr/bin/env python3
"""Issue 14, BLSTM: variants of the user's words and word language models, measured on the dev
chapters' second halves without building them (the README's "What else was tried for BLSTM").

Inputs: the BLSTM 100-best dev lists, and for each dev set the s2 of every hypothesis from the
global adapter, written by

    lorb rescore --nbest ../shared/data/librispeech-blstm-100best/SET.jsonl.gz \\
        --adapter adapters/minilm-blstm100-lorb-cor --backend cpu --out S2_DIR/s2-SET.jsonl

Then: python3 scripts/dev/blstm_words_prototypes.py S2_DIR   (about 10 minutes, 2 GB of memory)

It follows `lorb personalize` (chapters in file order, the first round(n/2) utterances adapt, the
rest are scored) and reproduces its dev figures (first pass, global adapter, the words at β 0.5);
the rarity weights are the counting script's, made here from the same books. The last rows change
the decision rule instead of the scores: a word insertion bonus, duplicate texts' first-pass
scores merged, and a minimum-Bayes-risk choice (the candidate with the least expected word errors
under the list's posterior, Stolcke et al. 1997; Goel and Byrne 2000).
"""
import collections
import gzip
import json
import math
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
DATA = os.path.join(ROOT, "..", "shared", "data")
SETS = ("dev_clean", "dev_other")
LAMBDA, FLOOR = 0.75, 6.0
WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def words(text):
    return WORD.findall(text.lower().replace("\u2019", "'"))


def books():
    for name in ("austen-6-novels.txt.gz", "moby-dick.txt.gz"):
        with gzip.open(os.path.join(DATA, "corpus", name), "rt", encoding="utf-8", errors="replace") as f:
            yield f.read()


class Trigram:
    """Interpolated Kneser-Ney trigram (one discount per order) over the books' sentences."""

    def __init__(self, texts):
        self.c3 = collections.Counter()
        for text in texts:
            for sentence in re.split(r"[.!?;:]+|\n\s*\n", text):
                t = ["<s>", "<s>"] + words(sentence) + ["</s>"]
                if len(t) > 3:
                    for i in range(2, len(t)):
                        self.c3[tuple(t[i - 2 : i + 1])] += 1
        self.n2 = collections.Counter((b, c) for (_, b, c) in self.c3)  # N1+(· b c)
        self.n1 = collections.Counter(c for (_, c) in self.n2)  # N1+(· c)
        self.d3, self.d2 = self.discount(self.c3), self.discount(self.n2)
        self.ctx3, self.fol3 = collections.Counter(), collections.Counter()
        for (a, b, _), n in self.c3.items():
            self.ctx3[(a, b)] += n
            self.fol3[(a, b)] += 1
        self.ctx2, self.fol2 = collections.Counter(), collections.Counter()
        for (b, _), n in self.n2.items():
            self.ctx2[b] += n
            self.fol2[b] += 1
        self.total1, self.vocab = sum(self.n1.values()), len(self.n1) + 1

    @staticmethod
    def discount(c):
        n1 = sum(1 for v in c.values() if v == 1)
        n2 = sum(1 for v in c.values() if v == 2)
        return n1 / (n1 + 2 * n2)

    def p1(self, w):
        return (self.n1.get(w, 0) + 0.5) / (self.total1 + self.vocab)

    def p2(self, b, w):
        cx = self.ctx2.get(b, 0)
        if not cx:
            return self.p1(w)
        return max(self.n2.get((b, w), 0) - self.d2, 0) / cx + self.d2 * self.fol2[b] / cx * self.p1(w)

    def p3(self, a, b, w):
        cx = self.ctx3.get((a, b), 0)
        if not cx:
            return self.p2(b, w)
        return max(self.c3.get((a, b, w), 0) - self.d3, 0) / cx + self.d3 * self.fol3[(a, b)] / cx * self.p2(b, w)

    def logprobs(self, ws):
        t = ["<s>", "<s>"] + ws + ["</s>"]
        return [math.log(self.p3(t[i - 2], t[i - 1], t[i])) for i in range(2, len(t))]


def edits(a, b):
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


def main(s2_dir):
    counts = collections.Counter()
    texts = list(books())
    for t in texts:
        counts.update(words(t))
    total = sum(counts.values())
    alias = {"mister": "mr", "missus": "mrs"}

    def rarity(w, aliased=False):
        c = counts.get(alias.get(w, w) if aliased else w, 0)
        return math.log(total / ((c if c >= 2 else 0) + 1))

    def p_books(w):  # the unigram behind the rarities (unseen: half a count; an end every 20 words)
        if w == "</s>":
            return 1 / 20
        c = counts.get(w, 0)
        return max(c if c >= 2 else 0, 0.5) / total

    lm = Trigram(texts)
    chapters = collections.OrderedDict()
    for s in SETS:
        s2 = {}
        for line in open(os.path.join(s2_dir, f"s2-{s}.jsonl")):
            d = json.loads(line)
            s2[d["utt"]] = {h["first_rank"]: h["s2"] for h in d["hyps"]}
        with gzip.open(os.path.join(DATA, "librispeech-blstm-100best", f"{s}.jsonl.gz"), "rt") as f:
            for line in f:
                d = json.loads(line)
                chapters.setdefault("-".join(d["utt"].split("-")[:2]), []).append((d, s2[d["utt"]]))
    scored = []  # per evaluated utterance: (reference words, [hypothesis features])
    for utts in chapters.values():
        k = int(len(utts) / 2 + 0.5)
        uni, bi, ctx = collections.Counter(), collections.Counter(), collections.Counter()
        for d, _ in utts[:k]:
            t = ["<s>"] + words(d["ref"]) + ["</s>"]
            uni.update(t[1:])
            for i in range(1, len(t)):
                bi[(t[i - 1], t[i])] += 1
                ctx[t[i - 1]] += 1
        n = sum(uni.values())
        for d, s2 in utts[k:]:
            hyps = []
            for r, h in enumerate(d["hyps"]):
                w = words(h["text"])
                t = ["<s>"] + w + ["</s>"]
                cache = [(uni.get(t[i], 0) / n, bi.get((t[i - 1], t[i]), 0) / ctx[t[i - 1]] if ctx.get(t[i - 1]) else 0.0) for i in range(1, len(t))]
                lex = [x for x in w if x in uni and rarity(x) > FLOOR]
                boosts = (
                    sum(rarity(x) - FLOOR for x in lex),
                    sum(rarity(x) - FLOOR for x in set(lex)),
                    sum(max(rarity(x, True) - FLOOR, 0) for x in set(lex)),
                )
                ratio = [u / p_books(x) for (u, _), x in zip(cache, w + ["</s>"])]
                hyps.append((h["text"], h["score"], s2[r], lm.logprobs(w), cache, boosts, ratio))
            scored.append((d["ref"].split(), hyps))

    def wer(lam=LAMBDA, beta=0.0, which=0, lm_weight=0.0, per_word=0.0, mu=0.0, bigram=0.0, uni_mu=0.0, uni_weight=0.0):
        errors = ref_words = 0
        for ref, hyps in scored:
            def score(h):
                _, s1, s2, lp, cache, boosts, ratio = h
                v = s1 + lam * s2 + beta * boosts[which] + per_word * len(lp)
                if lm_weight:
                    v += lm_weight * sum(math.log((1 - mu) * math.exp(p) + mu * ((1 - bigram) * u + bigram * b)) for p, (u, b) in zip(lp, cache))
                if uni_weight:
                    v += uni_weight * sum(math.log(1 - uni_mu + uni_mu * x) for x in ratio)
                return v
            errors += edits(ref, max(hyps, key=score)[0].split())
            ref_words += len(ref)
        return 100 * errors / ref_words

    def logsumexp(xs):
        m = max(xs)
        return m + math.log(sum(math.exp(x - m) for x in xs))

    distances = {}

    def distance(a, b):
        if a == b:
            return 0
        key = (a, b) if a < b else (b, a)
        if key not in distances:
            distances[key] = edits(a.split(), b.split())
        return distances[key]

    def decided(merge=0.0, alpha=0.0, candidates=10, evidence=1e-4, beta=0.5):
        """s1 + λ·s2 + β·boost, with duplicate texts' s1 merged as (1/merge)·log Σ exp(merge·s1),
        or the minimum-Bayes-risk choice among the `candidates` likeliest texts under
        p(text) ∝ Σ exp(alpha·total) (texts below `evidence` ignored)."""
        errors = ref_words = 0
        for ref, hyps in scored:
            by_text = collections.OrderedDict()
            for text, s1, s2, _, _, boosts, _ in hyps:
                by_text.setdefault(text, [[], LAMBDA * s2 + beta * boosts[0]])[0].append(s1)
            if merge:
                best = max(by_text, key=lambda t: logsumexp([merge * x for x in by_text[t][0]]) / merge + by_text[t][1])
            else:
                post = {t: logsumexp([alpha * (x + rest) for x in s1s]) for t, (s1s, rest) in by_text.items()}
                z = logsumexp(list(post.values()))
                post = sorted(((math.exp(v - z), t) for t, v in post.items()), reverse=True)
                seen = [(p, t) for p, t in post if p > evidence]
                best = min((t for _, t in post[:candidates]), key=lambda c: sum(p * distance(c, t) for p, t in seen))
            errors += edits(ref, best.split())
            ref_words += len(ref)
        return 100 * errors / ref_words

    tri = dict(lm_weight=0.05, per_word=-0.5)
    rows = [
        ("first pass", wer(lam=0)),
        ("global adapter", wer()),
        ("+ the user's words, as built (β 0.5)", wer(beta=0.5)),
        ("… each word once", wer(beta=0.5, which=1)),
        ("… once, mister/missus as mr/mrs", wer(beta=0.5, which=2)),
        ("… as a cache LM over the unigram (μ 0.01), no words", wer(uni_mu=0.01, uni_weight=1)),
        ("the books' trigram, no words", wer(**tri)),
        ("the trigram + the words", wer(beta=0.5, **tri)),
        ("the trigram + a unigram cache (μ 0.4) + the words", wer(beta=0.5, mu=0.4, **tri)),
        ("the trigram + a unigram/bigram cache (μ 0.2, 0.6) + the words", wer(beta=0.5, mu=0.2, bigram=0.6, **tri)),
        ("the words + a bonus of 0.2 per word", wer(beta=0.5, per_word=0.2)),
        ("the words + a penalty of 0.2 per word", wer(beta=0.5, per_word=-0.2)),
        ("the words, duplicate texts' s1 merged (log-sum-exp, scale 1)", decided(merge=1.0)),
        ("the words, minimum Bayes risk (α 1)", decided(alpha=1.0)),
        ("the words, minimum Bayes risk (α 2)", decided(alpha=2.0)),
        ("the words, minimum Bayes risk (α 4)", decided(alpha=4.0)),
    ]
    print(json.dumps({"utterances": len(scored), "words": sum(len(r) for r, _ in scored), "wer": dict(rows)}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
