// lorb's wasm CPU path against ONNX Runtime Web (WASM backend, SIMD) in the same headless
// Chromium, on the same lists, interleaved: one page per runner (lorb on the page's thread;
// lorb/worker with LORB_THREADS threads, default 2: the threaded build; ORT with 1 and with 2
// threads; every page cross-origin isolated), rounds in rotated order, one runner computing at a
// time. Prepare with scripts/bench/web_peers.py (see its docstring), then
//
//   LISTS=5 PLL_LISTS=2 ROUNDS=3 MEMORY=1 OUT=docs/bench/web-DATE.json node tests/e2e/peers/bench.mjs
//
// prints one JSON document (min and median ms per list for every runner and workload) and a table.
import { open, root } from "../harness.mjs";
import { writeFileSync, readFileSync } from "node:fs";
import { cpus } from "node:os";

const env = process.env;
const lists = Number(env.LISTS || 5), pllLists = Number(env.PLL_LISTS || 2), rounds = Number(env.ROUNDS || 3);
const threads = (env.ORT_THREADS || "1,2").split(",").map(Number);
// lorb on the page's thread, lorb/worker with each of LORB_THREADS (the threaded build above 1).
const lorbThreads = (env.LORB_THREADS || "2").split(",").filter(Boolean).map(Number);
const runners = [
  { name: "lorb", query: "runner=lorb" },
  ...lorbThreads.map((t) => ({ name: `lorb-worker-${t}t`, query: `runner=lorb-worker&threads=${t}` })),
  ...threads.map((t) => ({ name: `ort-web-${t}t`, query: `runner=ort&threads=${t}` })),
];
const { browser, origin, close } = await open({ isolated: true });
const log = (...a) => console.error(...a);
try {
  for (const r of runners) {
    r.page = await browser.newPage();
    r.page.on("console", (m) => m.type() === "error" && log(`${r.name}: ${m.text()}`));
    await r.page.goto(`${origin}/tests/e2e/peers/bench.html?${r.query}`);
    await r.page.waitForFunction(() => window.benchReady || window.benchError, null, { timeout: 600_000, polling: 500 });
    const err = await r.page.evaluate(() => window.benchError);
    if (err) throw new Error(`${r.name}: ${err}`);
    r.info = await r.page.evaluate(() => window.bench.info);
    r.times = { cls: [], pll: [] };
    log(`${r.name} ready: ${JSON.stringify(r.info)}`);
  }
  for (let round = 0; round < rounds; round++) {
    const order = runners.slice(round % runners.length).concat(runners.slice(0, round % runners.length));
    for (const r of order) {
      await r.page.bringToFront();
      for (const [w, n] of [["cls", lists], ["pll", pllLists]]) {
        r.times[w].push(await r.page.evaluate(([w, n]) => window.bench.run(w, n), [w, n]));
      }
      log(`round ${round + 1}: ${r.name}: cls ${r.times.cls.at(-1).toFixed(1)} ms, pll ${r.times.pll.at(-1).toFixed(0)} ms`);
    }
  }
  let memory = null;
  if (env.MEMORY) {
    const p = runners[0].page;
    await p.bringToFront();
    memory = { after_timing_bytes: await p.evaluate(() => window.bench.memory()) };
    // The threaded build's memory (one per worker: the CLS scorer's, then the PLL scorer's).
    const tp = runners.find((r) => r.name.startsWith("lorb-worker") && r.info.threads > 1)?.page;
    if (tp) {
      await tp.bringToFront();
      memory.threaded = { after_timing_bytes: await tp.evaluate(() => window.bench.memory()) };
      memory.threaded.cls_100x100 = await tp.evaluate(() => window.bench.memoryFor("cls", 100, 100));
      memory.threaded.pll_20x100 = await tp.evaluate(() => window.bench.memoryFor("pll", 20, 100));
    }
    // The 100-best list of 100-word hypotheses of docs/benchmarks.md's native figure (CLS), and
    // PLL on 20 such hypotheses (2,000+ masked copies: several chunks, like any longer list).
    memory.cls_100x100 = await p.evaluate(() => window.bench.memoryFor("cls", 100, 100));
    memory.pll_20x100 = await p.evaluate(() => window.bench.memoryFor("pll", 20, 100));
    log(`wasm memory: ${JSON.stringify(memory)}`);
  }
  const median = (a) => { const s = [...a].sort((x, y) => x - y); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
  const data = JSON.parse(readFileSync(`${root}target/bench-web/lists.json`, "utf8"));
  const timed = (n) => data.lists.slice(1, 1 + n);
  const result = {
    date: new Date().toISOString().slice(0, 10),
    machine: { cpu: cpus()[0]?.model, cores: cpus().length },
    browser: `Chromium ${browser.version()} (headless)`,
    nbest: data.nbest,
    rounds,
    lists: { cls: lists, pll: pllLists },
    hyps_per_list: timed(lists).reduce((a, l) => a + l.texts.length, 0) / lists,
    pll_copies_per_list: timed(pllLists).reduce((a, l) => a + l.copies, 0) / pllLists,
    runners: runners.map((r) => ({ name: r.name, info: r.info })),
    workloads: ["cls", "pll"].flatMap((w) => runners.map((r) => ({
      name: `${w}_30best`, runner: r.name, min_ms: Math.min(...r.times[w]), median_ms: median(r.times[w]), all_ms: r.times[w],
    }))),
    wasm_memory: memory,
  };
  const text = JSON.stringify(result, null, 1);
  console.log(text);
  if (env.OUT) writeFileSync(env.OUT, text + "\n");
  log(`\n| workload | ${runners.map((r) => r.name).join(" | ")} |`);
  for (const w of ["cls", "pll"]) log(`| ${w} | ${runners.map((r) => `${Math.min(...r.times[w]).toFixed(0)} / ${median(r.times[w]).toFixed(0)}`).join(" | ")} |`);
} finally {
  await close();
}
