// The multi-threaded wasm build in Chromium: "lorb/worker" with `threads: 2` on a cross-origin
// isolated page must start the threaded build (capabilities().threads is 2) and score the
// transformers fixtures as the single-threaded build does (CLS ≤ 1e-4, PLL ≤ 1e-3 absolute
// against transformers, as tests/node/score.mjs and the native checks); on a page that is not
// isolated the same call must fall back to one thread and still score. The PLL copies of the
// fixtures (≈ 700 tokens) and a CLS batch of 8 copies of every sentence are split over both
// threads. The worker app of tests/bundler, bundled by webpack and by Vite, must do the same.
// Run by .ci/run after scripts/package.sh and the bundler build:
//
//   node tests/e2e/threads.mjs
import { open, root } from "./harness.mjs";
import { existsSync, readFileSync } from "node:fs";

const fail = (m) => {
  console.error(`threads: FAIL: ${m}`);
  process.exitCode = 1;
};

// A page call that fails instead of hanging CI (a worker that never answers).
function evaluate(page, fn, arg, seconds = 600) {
  let timer;
  const timeout = new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer from the page within ${seconds} s`)), seconds * 1000)));
  return Promise.race([page.evaluate(fn, arg), timeout]).finally(() => clearTimeout(timer));
}

// Loads the fixtures through lorb/worker with `threads` on `backend`, and returns capabilities
// and scores.
async function scoreFixtures(page, threads, backend = "cpu", archs = ["bert", "roberta", "distilbert"]) {
  return evaluate(page, async ([threads, backend, archs]) => {
    const { Rescorer } = await import("/pkg/worker.js");
    const out = {};
    for (const arch of archs) {
      const dir = `/tests/fixtures/${arch}/`;
      const expected = await (await fetch(`${dir}expected.json`)).json();
      const texts = expected.sentences.map((s) => s.text);
      const r = await Rescorer.load({
        config: `${dir}config.json`, weights: `${dir}model.safetensors`, tokenizer: `${dir}tokenizer.json`,
        head: `${dir}cls_head.safetensors`, backend, threads,
      });
      try {
        const many = Array.from({ length: 8 }, () => texts).flat();
        const t0 = performance.now();
        const cls = Array.from(await r.score(many, { method: "cls" }));
        const pll = Array.from(await r.score(texts, { method: "pll" }));
        out[arch] = { caps: await r.capabilities(), cls, pll, ms: performance.now() - t0 };
      } finally {
        await r.free();
      }
    }
    return out;
  }, [threads, backend, archs]);
}

function check(label, got, wantThreads) {
  for (const [arch, r] of Object.entries(got)) {
    const expected = JSON.parse(readFileSync(`${root}tests/fixtures/${arch}/expected.json`, "utf8")).sentences;
    if (r.caps.threads !== wantThreads) fail(`${label} ${arch}: capabilities().threads is ${r.caps.threads}, expected ${wantThreads}`);
    let cls = 0, pll = 0;
    r.cls.forEach((v, i) => (cls = Math.max(cls, Math.abs(v - expected[i % expected.length].cls_score))));
    r.pll.forEach((v, i) => (pll = Math.max(pll, Math.abs(v - expected[i].pll))));
    if (!(cls <= 1e-4)) fail(`${label} ${arch}: CLS differs from transformers by ${cls}`);
    if (!(pll <= 1e-3)) fail(`${label} ${arch}: PLL differs from transformers by ${pll}`);
    console.log(`threads: ${label} ${arch}: ${r.caps.threads} thread(s), max |Δ| CLS ${cls.toExponential(1)}, PLL ${pll.toExponential(1)} (${r.ms.toFixed(0)} ms)`);
  }
}

for (const isolated of [true, false]) {
  const { browser, origin, close } = await open({ isolated });
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(`${origin}/tests/e2e/`);
    if ((await page.evaluate(() => self.crossOriginIsolated)) !== isolated) fail(`the page's crossOriginIsolated is not ${isolated}`);
    const label = isolated ? "isolated page" : "plain page";
    check(`${label}, threads 2,`, await scoreFixtures(page, 2), isolated ? 2 : 1);
    if (isolated) {
      check(`${label}, threads 1,`, await scoreFixtures(page, 1), 1);
      // The threaded build also drives WebGPU (Chromium's SwiftShader here) when asked to.
      const gpu = await scoreFixtures(page, 2, "gpu", ["bert"]);
      if (!gpu.bert.caps.gpu) fail(`backend gpu with threads 2 computed on ${gpu.bert.caps.backend}`);
      check(`${label}, threads 2, WebGPU,`, gpu, 2);
    }
    // A bad thread count is a typed error, not a hang.
    const bad = await evaluate(page, async () => {
      const { Rescorer } = await import("/pkg/worker.js");
      return Rescorer.load({ config: "/tests/fixtures/bert/config.json", threads: 0.5 }).then(() => null, (e) => e.kind);
    });
    if (bad !== "input") fail(`threads 0.5: expected an input error, got ${bad}`);
    // The same through bundlers: tests/bundler's worker app (lorb/worker, threads 2) from webpack
    // and from Vite, which must bundle the threaded build and its helper worker as well.
    const ref = JSON.parse(readFileSync(`${root}tests/fixtures/bert/expected.json`, "utf8")).sentences[0];
    for (const html of ["worker.html", "dist-vite/vite-worker.html"]) {
      const built = html === "worker.html" ? "dist/worker-app.js" : html;
      if (!existsSync(`${root}tests/bundler/${built}`)) {
        fail(`tests/bundler/${html}: not built (cd tests/bundler && npm install && npm run build)`);
        continue;
      }
      const bp = await browser.newPage();
      bp.on("pageerror", (e) => errors.push(`${html}: ${e.message}`));
      await bp.goto(`${origin}/tests/bundler/${html}`);
      await bp.waitForFunction(() => { const d = document.getElementById("result").dataset; return d.result || d.error; }, null, { timeout: 300_000, polling: 500 });
      const err = await bp.getAttribute("#result", "data-error");
      const res = err ? null : JSON.parse(await bp.getAttribute("#result", "data-result"));
      console.log(`threads: ${label}, bundled ${html}: ${err || JSON.stringify(res)}; transformers PLL ${ref.pll}, CLS ${ref.cls_score}`);
      if (err || res.threads !== (isolated ? 2 : 1) || !(Math.abs(res.pll - ref.pll) <= 1e-3) || !(Math.abs(res.cls - ref.cls_score) <= 1e-4)) fail(`${label}: the bundled worker app (${html}) gave ${err || JSON.stringify(res)}`);
      await bp.close();
    }
    if (errors.length) fail(`page errors: ${errors.join("; ")}`);
  } finally {
    await close();
  }
}
if (!process.exitCode) console.log("test result: ok. 1 passed; 0 failed; (threads)");
