#!/usr/bin/env python3
"""Writes assets/word-counts.txt.gz, the word frequencies behind `lorb::lexicon` (how rare a word
is, so that the user's rare words can be boosted and common ones not).

Source: the two public-domain book corpora in ../shared/data/corpus (Jane Austen's six novels and
Moby-Dick, 0.94 M words). Words are what `lorb::lexicon::words` splits a text into: in the
lower-cased text (’ read as '), runs of letters and digits, with inner apostrophes kept ("don't",
"o'clock"). The file's first
line is `# total N` (every word counted, hapaxes included); then `word count` lines, most frequent
first, for the words seen at least twice (a word seen once is as rare as an unseen one, to within
ln 2, and leaving them out halves the file).

Run from the repository root: python3 scripts/data/word_counts.py
"""
import collections
import gzip
import os
import re

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
CORPUS = os.path.join(ROOT, "..", "shared", "data", "corpus")
WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")

counts = collections.Counter()
for name in ("austen-6-novels.txt.gz", "moby-dick.txt.gz"):
    with gzip.open(os.path.join(CORPUS, name), "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            counts.update(WORD.findall(line.lower().replace("\u2019", "'")))
total = sum(counts.values())
rows = sorted(((w, c) for w, c in counts.items() if c >= 2), key=lambda x: (-x[1], x[0]))
out = os.path.join(ROOT, "assets", "word-counts.txt.gz")
with gzip.GzipFile(out, "wb", compresslevel=9, mtime=0) as f:
    f.write(f"# total {total}\n".encode())
    f.write("".join(f"{w} {c}\n" for w, c in rows).encode())
print(f"{out}: {len(rows)} words (of {len(counts)}), {total} in all")
