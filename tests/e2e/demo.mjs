// End-to-end test of the demo page in Chromium (WebGPU: SwiftShader on CI machines):
// serves the repository, loads www/ with the default model and the shipped adapter, rescores the
// bundled sample (its first LIMIT=5 utterances by default), and checks that the WER figures on the page equal `lorb eval`'s for the same
// inputs. Then checks that a failed load (a 404) shows a typed message. Saves screenshots.
//
//   node tests/e2e/demo.mjs            (after `wasm-pack build --target web` and the model fetch)
import { chromium } from "playwright-core";
import { spawn, execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { createServer } from "node:net";

const root = new URL("../../", import.meta.url).pathname;
const out = `${root}target/e2e`;
mkdirSync(out, { recursive: true });

const freePort = () => new Promise((ok) => {
  const s = createServer();
  s.listen(0, () => { const p = s.address().port; s.close(() => ok(p)); });
});

function fail(msg) {
  console.error(`e2e: FAIL: ${msg}`);
  process.exitCode = 1;
}

const port = await freePort();
const server = spawn("python3", ["-m", "http.server", String(port), "--bind", "127.0.0.1"], { cwd: root, stdio: "ignore" });
await new Promise((r) => setTimeout(r, 800));
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--enable-unsafe-webgpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 1400 } });
  const logs = [];
  page.on("console", (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
  const base = `http://127.0.0.1:${port}/www/`;

  // 1. The main path, on the first LIMIT utterances of the sample (SwiftShader is slow).
  const limit = Number(process.env.LIMIT || 5);
  await page.goto(`${base}?limit=${limit}`);
  await page.click("#load");
  await page.waitForSelector("#data:not([hidden]), #error:not([hidden])", { timeout: 300_000 });
  if (await page.isVisible("#error")) throw new Error(`loading failed: ${await page.textContent("#error")}\n${logs.join("\n")}`);
  const backend = await page.getAttribute("#load-status", "data-backend");
  await page.click("#rescore-all");
  const done = () => document.getElementById("summary").dataset.rescoredWer !== undefined || !document.getElementById("error").hidden;
  try {
    await page.waitForFunction(done, null, { timeout: 1_200_000, polling: 1000 });
  } catch (e) {
    await page.screenshot({ path: `${out}/timeout.png`, fullPage: true });
    throw new Error(`rescoring did not finish: ${await page.textContent("#summary")}\n${logs.join("\n")}`);
  }
  if (await page.isVisible("#error")) throw new Error(`rescoring failed: ${await page.textContent("#error")}\n${logs.join("\n")}`);
  const got = await page.evaluate(() => ({ ...document.getElementById("summary").dataset }));
  await page.selectOption("#utt", String(Math.min(1, limit - 1)));
  await page.waitForTimeout(500);
  await page.screenshot({ path: `${out}/demo.png`, fullPage: true });

  const want = JSON.parse(execFileSync(process.env.LORB_BIN ? `${root}${process.env.LORB_BIN}` : `${root}target/release/lorb`, ["eval", "--json", "--backend", "cpu", "--limit", String(limit), "--nbest", `${root}www/sample/librispeech-blstm-dev_clean-20.jsonl`], { cwd: root, stdio: ["ignore", "pipe", "ignore"] }).toString());
  const close = (a, b) => Math.abs(Number(a) - Number(b)) < 1e-9;
  console.log(`e2e: backend ${backend}; page first-pass ${got.firstPassWer} rescored ${got.rescoredWer}; lorb eval ${want.first_pass_wer} ${want.rescored_wer}; ${Number(got.msPerList).toFixed(0)} ms per list`);
  if (!backend || !backend.startsWith("gpu")) fail(`the page did not use WebGPU (${backend})`);
  if (!close(got.firstPassWer, want.first_pass_wer)) fail(`first-pass WER ${got.firstPassWer} vs lorb eval ${want.first_pass_wer}`);
  if (!close(got.rescoredWer, want.rescored_wer)) fail(`rescored WER ${got.rescoredWer} vs lorb eval ${want.rescored_wer}`);

  // 2. A load failure (the model URL answers 404) is shown, with its kind.
  await page.goto(`${base}?model=../no-such-model/`);
  await page.click("#load");
  await page.waitForSelector("#error:not([hidden])", { timeout: 60_000 });
  const kind = await page.getAttribute("#error", "data-kind");
  const text = await page.textContent("#error");
  await page.screenshot({ path: `${out}/load-error.png` });
  console.log(`e2e: load failure shown as [${kind}] ${text.trim()}`);
  if (kind !== "io" || !text.includes("404")) fail(`expected an io error naming the 404, got [${kind}] ${text}`);

  // 3. No WebGPU (navigator.gpu removed): "WebGPU only" is a typed gpu error on the page, and
  // the default choice falls back to the CPU and says so.
  const nogpu = await browser.newPage();
  await nogpu.addInitScript(() => Object.defineProperty(Navigator.prototype, "gpu", { get: () => undefined }));
  await nogpu.goto(`${base}?limit=1&adapter=none`);
  await nogpu.selectOption("#backend", "gpu");
  await nogpu.click("#load");
  await nogpu.waitForSelector("#error:not([hidden])", { timeout: 60_000 });
  const gkind = await nogpu.getAttribute("#error", "data-kind");
  console.log(`e2e: no WebGPU, "WebGPU only": [${gkind}] ${(await nogpu.textContent("#error")).trim()}`);
  if (gkind !== "gpu") fail(`expected a gpu error without WebGPU, got ${gkind}`);
  await nogpu.selectOption("#backend", "auto");
  await nogpu.click("#load");
  await nogpu.waitForSelector("#data:not([hidden])", { timeout: 600_000 });
  const status = await nogpu.textContent("#load-status");
  console.log(`e2e: no WebGPU, automatic: ${status.trim()}`);
  if (!status.includes("no WebGPU")) fail(`expected the CPU fallback to be announced, got ${status}`);
  // 4. Training on the page (the tiny fixture BERT, so that SwiftShader is quick): a run with a
  // live loss plot, the adapter downloaded in PEFT's format, then a cancelled run announced.
  const tp = await browser.newPage({ acceptDownloads: true, viewport: { width: 1200, height: 1400 } });
  tp.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
  await tp.goto(`${base}?model=../tests/fixtures/bert/&adapter=none&limit=3&truncate`);
  await tp.click("#load");
  await tp.waitForSelector("#training:not([hidden])", { timeout: 120_000 });
  await tp.fill("#t-epochs", "2");
  await tp.fill("#t-lr", "0.01");
  await tp.click("#train");
  await tp.waitForFunction(() => ["done", "failed", "cancelled"].includes(document.getElementById("t-status").dataset.state), null, { timeout: 600_000, polling: 500 });
  const tstate = await tp.getAttribute("#t-status", "data-state");
  console.log(`e2e: training ${tstate}: ${(await tp.textContent("#t-status")).trim()}`);
  if (tstate !== "done") fail(`training ended ${tstate}: ${await tp.textContent("#error")}`);
  const [dl] = await Promise.all([tp.waitForEvent("download"), tp.click("#download")]);
  const cfgPath = `${out}/${dl.suggestedFilename()}`;
  await dl.saveAs(cfgPath);
  const cfg = JSON.parse((await import("node:fs")).readFileSync(cfgPath, "utf8"));
  if (cfg.peft_type !== "LORA" || !cfg.modules_to_save.includes("score")) fail(`downloaded ${dl.suggestedFilename()} is not a PEFT LoRA config`);
  await tp.screenshot({ path: `${out}/training.png`, fullPage: true });
  await tp.fill("#t-epochs", "50");
  await tp.click("#train");
  await tp.waitForFunction(() => document.getElementById("t-status").dataset.state === "running");
  await tp.click("#cancel");
  await tp.waitForFunction(() => document.getElementById("t-status").dataset.state !== "running", null, { timeout: 300_000, polling: 500 });
  const cstate = await tp.getAttribute("#t-status", "data-state");
  const ctext = (await tp.textContent("#t-status")).trim();
  console.log(`e2e: aborted training: ${ctext}`);
  if (cstate !== "cancelled" || !ctext.includes("cancelled")) fail(`expected an announced cancellation, got ${cstate}: ${ctext}`);

  if (process.exitCode) {
    console.error(logs.join("\n"));
    console.log("test result: FAILED. 0 passed; 1 failed; (e2e demo page)");
  } else {
    console.log(`e2e: ok; screenshots in ${out}/`);
    console.log("test result: ok. 1 passed; 0 failed; (e2e demo page)");
  }
} finally {
  await browser.close();
  server.kill();
}
