// Shared by the e2e scripts: serves the repository over HTTP on a free port and launches
// Debian's Chromium with WebGPU (SwiftShader where there is no GPU) through playwright-core.
import { chromium } from "playwright-core";
import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { createServer } from "node:net";

export const root = new URL("../../", import.meta.url).pathname;
export const out = `${root}target/e2e`;
mkdirSync(out, { recursive: true });

const freePort = () => new Promise((ok) => {
  const s = createServer();
  s.listen(0, () => { const p = s.address().port; s.close(() => ok(p)); });
});


/** `{ browser, base, origin, close }`: `base` is the demo page's URL; `isolated` serves every
 *  file with COOP/COEP headers. */
export async function open({ isolated = false } = {}) {
  const port = await freePort();
  // Python's static server; scripts/isolated_server.py adds the headers that make a page
  // cross-origin isolated (SharedArrayBuffer, hence wasm threads).
  const args = isolated ? ["scripts/isolated_server.py", String(port), "127.0.0.1"] : ["-m", "http.server", String(port), "--bind", "127.0.0.1"];
  const server = spawn("python3", args, { cwd: root, stdio: "ignore" });
  let browser;
  try {
    // Wait until the server answers (a busy machine may take a while to start Python).
    for (let i = 0; ; i++) {
      try {
        if ((await fetch(`http://127.0.0.1:${port}/`)).ok) break;
      } catch (e) {
        if (i >= 100) throw new Error(`the HTTP server on port ${port} did not start: ${e.message}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    browser = await chromium.launch({
      executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
      args: ["--enable-unsafe-webgpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic"],
    });
  } catch (e) {
    server.kill();
    throw e;
  }
  return {
    browser,
    base: `http://127.0.0.1:${port}/www/`,
    origin: `http://127.0.0.1:${port}`,
    close: async () => {
      await browser.close();
      server.kill();
    },
  };
}
