// The npm package in Node.js, imported by name through its exports map ("node" condition: no
// init(), file paths accepted): the CPU backend's CLS scores and PLL against HF transformers'
// (tests/fixtures/*/expected.json; CLS ≤ 1e-4, PLL ≤ 1e-3 absolute, as in tests/checks), an
// adapter loaded from file paths, and the typed errors Node users meet.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Rescorer, webgpuInfo } from "lorb";

const fixtures = fileURLToPath(new URL("../fixtures/", import.meta.url));

for (const arch of ["bert", "roberta", "distilbert"]) {
  const dir = `${fixtures}${arch}/`;
  const expected = JSON.parse(readFileSync(`${dir}expected.json`, "utf8"));
  const texts = expected.sentences.map((s) => s.text);
  // Paths for some files, bytes for others: both are accepted.
  const r = await Rescorer.load({
    config: `${dir}config.json`,
    weights: readFileSync(`${dir}model.safetensors`),
    tokenizer: `${dir}tokenizer.json`,
    head: `${dir}cls_head.safetensors`,
    backend: "auto",
  });
  assert.equal(r.capabilities().backend, "cpu");
  const cls = await r.score(texts, { method: "cls" });
  const pll = await r.score(texts, { method: "pll" });
  expected.sentences.forEach((s, i) => {
    assert.ok(Math.abs(cls[i] - s.cls_score) <= 1e-4, `${arch}: CLS score ${i} is ${cls[i]}, transformers ${s.cls_score}`);
    assert.ok(Math.abs(pll[i] - s.pll) <= 1e-3, `${arch}: PLL ${i} is ${pll[i]}, transformers ${s.pll}`);
  });
  console.log(`node: ${arch} CLS and PLL match transformers (${texts.length} sentences)`);
  r.free();
}

// An adapter from file paths (the BERT fixture's PEFT adapter) changes the scores, and rescore works.
const bert = `${fixtures}bert/`;
const base = { config: `${bert}config.json`, weights: `${bert}model.safetensors`, tokenizer: `${bert}tokenizer.json`, head: `${bert}cls_head.safetensors` };
const plain = await Rescorer.load(base);
const adapted = await Rescorer.load({ ...base, adapter: { config: `${bert}adapter/adapter_config.json`, weights: `${bert}adapter/adapter_model.safetensors` } });
const list = { utt: "u1", ref: "the cat sat", hyps: [{ text: "the cat sat", score: -1 }, { text: "the cat sad", score: -1.5 }] };
const a = await plain.score(list.hyps.map((h) => h.text)), b = await adapted.score(list.hyps.map((h) => h.text));
assert.notDeepEqual(Array.from(a), Array.from(b), "the adapter changes the scores");
const out = await adapted.rescore(list);
assert.equal(out.hyps.length, 2);
assert.ok(out.hyps.every((h) => Number.isFinite(h.total)));

// Typed errors: no WebGPU in Node, a missing file, a bad input.
const noGpu = await Rescorer.load({ ...base, backend: "gpu" }).then(() => null, (e) => e);
assert.equal(noGpu?.kind, "gpu", `backend "gpu" in Node: ${noGpu}`);
assert.equal((await webgpuInfo()).available, false);
const missing = await Rescorer.load({ ...base, weights: `${bert}no-such-file.safetensors` }).then(() => null, (e) => e);
assert.equal(missing?.kind, "io", `a missing file: ${missing}`);
const empty = await plain.score([]).then(() => null, (e) => e);
assert.equal(empty?.kind, "input", `no texts: ${empty}`);
console.log("node: adapter from paths, rescore and typed errors (gpu, io, input) as expected");
