// One runner per page (bench.mjs opens one page each and alternates them): lorb's wasm CPU path
// or ONNX Runtime Web's WASM backend, on the lists of target/bench-web/lists.json
// (scripts/bench/web_peers.py). window.bench = { ready, run(work, lists) → ms per list, memory() }.
const q = new URLSearchParams(location.search);
const runner = q.get("runner");
const data = await (await fetch("/target/bench-web/lists.json")).json();
const M = `/${data.model}/`;

// lorb's CPU backend: on the page's thread (runner=lorb, the single-threaded build) or in
// "lorb/worker" (runner=lorb-worker&threads=N: the threaded build where N > 1, the page being
// cross-origin isolated).
async function lorb() {
  const worker = runner === "lorb-worker";
  const { default: init, Rescorer } = await import(worker ? "/pkg/worker.js" : "/pkg/lorb.js");
  if (!worker) await init();
  const threads = Number(q.get("threads") || 1);
  const load = (adapter) => Rescorer.load({
    config: `${M}config.json`, weights: `${M}model.safetensors`, tokenizer: `${M}tokenizer.json`,
    adapter: { config: `/adapters/${adapter}/adapter_config.json`, weights: `/adapters/${adapter}/adapter_model.safetensors` },
    backend: "cpu", ...(worker ? { threads } : {}),
  });
  // CLS: the shipped ESPnet adapter's head; PLL: the books adapter's trained masked-LM head.
  const scorers = { cls: await load("minilm-espnet30-lorb-cor"), pll: await load("minilm-books-mlm") };
  const run = async (work, list) => {
    const s = await scorers[work].score(list.texts, { method: work });
    if (s.length !== list.texts.length || !s.every(Number.isFinite)) throw new Error(`lorb ${work}: bad scores`);
  };
  for (const w of ["cls", "pll"]) await run(w, data.lists[0]);
  const info = await scorers.cls.capabilities();
  if (info.threads !== (worker ? threads : 1)) throw new Error(`lorb computes on ${info.threads} threads, not ${threads}`);
  // Each worker has its own wasm memory: the figure is the CLS scorer's, or the PLL one's after
  // memoryFor("pll") (the page's build shares one memory between both scorers).
  const memory = async (work = "cls") => (await scorers[work].capabilities()).memoryBytes;
  return { run, memory, scorers, info: { ...info, crossOriginIsolated } };
}

async function ort() {
  const ort = await import("./node_modules/onnxruntime-web/dist/ort.wasm.min.mjs");
  ort.env.wasm.numThreads = Number(q.get("threads") || 1);
  ort.env.wasm.simd = true;
  ort.env.wasm.wasmPaths = new URL("./node_modules/onnxruntime-web/dist/", location.href).href;
  const opts = { executionProviders: ["wasm"], graphOptimizationLevel: "all" };
  const sessions = {};
  for (const w of ["cls", "pll"]) sessions[w] = await ort.InferenceSession.create(`/target/bench-web/${w}.onnx`, opts);
  // PLL's copies go in batches of `batch` rows (ORT Web runs out of its 4 GiB wasm memory on
  // a whole list's ~1,000 copies at once); CLS takes a list in one batch.
  const batch = Number(q.get("batch") || 128);
  const feeds = (work, list, from, to) => {
    const s = sessions[work];
    return Object.fromEntries(s.inputNames.map((name, i) => {
      const t = list[work][i];
      const row = t.shape.length > 1 ? t.shape[1] : 1;
      const data = BigInt64Array.from(t.data.slice(from * row, to * row), BigInt);
      return [name, new ort.Tensor("int64", data, [to - from, ...t.shape.slice(1)])];
    }));
  };
  const run = async (work, list) => {
    const rows = list[work][0].shape[0], step = work === "pll" ? batch : rows, out = new Float32Array(rows);
    for (let i = 0; i < rows; i += step) {
      const j = Math.min(rows, i + step);
      out.set((await sessions[work].run(feeds(work, list, i, j))).out.data, i);
    }
    return out;
  };
  // The graphs must compute what PyTorch computed (list 0), as scripts/bench/cpu_peers.py checks natively.
  const err = {};
  for (const w of ["cls", "pll"]) {
    const got = await run(w, data.lists[0]);
    err[w] = Math.max(...data.expect[w].map((v, i) => Math.abs(v - got[i])));
    if (!(err[w] <= 1e-3)) throw new Error(`ONNX Runtime Web's ${w} output differs from PyTorch's by ${err[w]}`);
  }
  // Every shape once, untimed, as the native peers get (they prepare kernels per input shape).
  for (const w of ["cls", "pll"]) for (const l of data.lists.slice(1)) await run(w, l);
  return { run, memory: async () => null, info: { threads: ort.env.wasm.numThreads, pllBatch: batch, crossOriginIsolated, maxAbsErr: err, version: ort.env.versions?.web } };
}

let r;
try {
  r = await (runner.startsWith("lorb") ? lorb() : ort());
} catch (e) {
  window.benchError = String(e?.stack || e);
  throw e;
}
window.bench = {
  info: r.info,
  memory: r.memory,
  /** Milliseconds per list over lists 1..n for "cls" or "pll". */
  async run(work, n) {
    const lists = data.lists.slice(1, 1 + n);
    const t0 = performance.now();
    for (const l of lists) await r.run(work, l);
    return (performance.now() - t0) / lists.length;
  },
  /** lorb only: wasm memory after scoring `hyps` hypotheses of `words` random words each. */
  async memoryFor(work, hyps, words) {
    const vocab = data.lists.flatMap((l) => l.texts.join(" ").split(/\s+/));
    let seed = 1;
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
    const texts = Array.from({ length: hyps }, () => Array.from({ length: words }, () => vocab[Math.floor(rand() * vocab.length)]).join(" "));
    const t0 = performance.now();
    await r.scorers[work].score(texts, { method: work });
    return { ms: performance.now() - t0, bytes: await r.memory(work) };
  },
};
window.benchReady = true;
