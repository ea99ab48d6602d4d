// A web app using lorb as an npm package (bundled by webpack from either wasm-pack target, or by
// Vite): loads the tiny fixture BERT, scores a sentence by PLL and by its CLS head, and puts the
// result on the page for the e2e test, which compares it with Hugging Face transformers' values
// in tests/fixtures/bert/expected.json.
import * as lorb from "lorb";

const { Rescorer, webgpuInfo } = lorb;

// The e2e server serves the repository root; the bundles sit at different depths below it.
const fixture = new URL("/tests/fixtures/bert/", location.href).href;
const out = document.getElementById("result");
try {
  // The `web` build exports init() as its default (it fetches the .wasm); the `bundler` build is
  // ready on import and has no default export (a computed key keeps webpack from refusing that).
  const initKey = "default";
  if (typeof lorb[initKey] === "function") await lorb[initKey]();
  const info = await webgpuInfo();
  const r = await Rescorer.load({
    config: fixture + "config.json",
    weights: fixture + "model.safetensors",
    tokenizer: fixture + "tokenizer.json",
    head: fixture + "cls_head.safetensors",
  });
  const text = "the quick brown fox jumped over the lazy dog";
  const [pll] = await r.score([text], { method: "pll" });
  const [cls] = await r.score([text], { method: "cls" });
  out.dataset.result = JSON.stringify({ pll, cls, backend: r.capabilities().backend, webgpu: info.available });
  out.textContent = `PLL ${pll.toFixed(4)}, CLS ${cls.toFixed(4)} on ${r.capabilities().backend}`;
} catch (e) {
  out.dataset.error = `[${e.kind}] ${e.message}`;
  out.textContent = out.dataset.error;
}
