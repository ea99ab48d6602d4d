// The same check through "lorb/worker" (the Rescorer in a Web Worker, bundled with the worker
// script and, for threads, the package's threaded build and its helper workers): loads the tiny
// fixture BERT with `threads: 2`, scores a sentence by PLL and by its CLS head, and puts the
// result and the thread count on the page. tests/e2e/threads.mjs opens it on a cross-origin
// isolated page, where the threaded build must start (threads 2).
import { Rescorer } from "lorb/worker";

const fixture = new URL("/tests/fixtures/bert/", location.href).href;
const out = document.getElementById("result");
try {
  const r = await Rescorer.load({
    config: fixture + "config.json",
    weights: fixture + "model.safetensors",
    tokenizer: fixture + "tokenizer.json",
    head: fixture + "cls_head.safetensors",
    backend: "cpu",
    threads: 2,
  });
  const text = "the quick brown fox jumped over the lazy dog";
  const [pll] = await r.score([text], { method: "pll" });
  const [cls] = await r.score([text], { method: "cls" });
  const caps = await r.capabilities();
  out.dataset.result = JSON.stringify({ pll, cls, backend: caps.backend, threads: caps.threads });
  out.textContent = `PLL ${pll.toFixed(4)}, CLS ${cls.toFixed(4)} on ${caps.backend}, ${caps.threads} threads`;
  await r.free();
} catch (e) {
  out.dataset.error = `[${e.kind}] ${e.message}`;
  out.textContent = `error: ${out.dataset.error}`;
}
