// Milliseconds per n-best list on the demo page, in this browser's WebGPU (SwiftShader where
// there is no GPU): loads the default model with the shipped adapter, rescores the first LISTS=2
// utterances of the sample at DEPTH=30 hypotheses ("Rescore all"), prints one JSON line.
//
//   LISTS=2 DEPTH=30 node tests/e2e/bench.mjs
import { open } from "./harness.mjs";

const lists = Number(process.env.LISTS || 2), depth = Number(process.env.DEPTH || 30);
const { browser, base, close } = await open();
try {
  const page = await browser.newPage();
  await page.goto(`${base}?limit=${lists}&depth=${depth}`);
  await page.click("#load");
  await page.waitForSelector("#data:not([hidden]), #error:not([hidden])", { timeout: 300_000 });
  const gpu = (await page.textContent("#gpu-info")).trim();
  const backend = await page.getAttribute("#load-status", "data-backend");
  // The first list shown on load warms the pipelines up; time "Rescore all" on fresh lists.
  await page.fill("#weight", "0.999");
  await page.click("#rescore-all");
  await page.waitForFunction(() => document.getElementById("summary").dataset.msPerList !== undefined || !document.getElementById("error").hidden, null, { timeout: 3_600_000, polling: 1000 });
  if (await page.isVisible("#error")) throw new Error(await page.textContent("#error"));
  const ms = Number(await page.getAttribute("#summary", "data-ms-per-list"));
  console.log(JSON.stringify({ ms_per_list: ms, lists, depth, backend, webgpu: gpu, browser: browser.version() }));
} finally {
  await close();
}
