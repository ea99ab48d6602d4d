// Browser helpers for the wasm package: fetching a URL's bytes with progress reports (lorb's Rust
// side cannot stream a Response body without many web-sys features).

// Returns a Uint8Array; calls onProgress(label, loaded, total) as chunks arrive (total 0 when the
// server sends no Content-Length). HTTP errors and network failures throw an Error with kind "io".
export async function fetchBytes(url, label, onProgress) {
  let response;
  try {
    response = await fetch(url);
  } catch (e) {
    throw ioError(`${label}: fetching ${url} failed: ${e.message || e}`);
  }
  if (!response.ok) {
    throw ioError(`${label}: ${url} answered HTTP ${response.status} ${response.statusText}`);
  }
  const total = Number(response.headers.get("Content-Length")) || 0;
  const report = typeof onProgress === "function" ? onProgress : () => {};
  if (!response.body) {
    const buf = new Uint8Array(await response.arrayBuffer());
    report(label, buf.length, total || buf.length);
    return buf;
  }
  const reader = response.body.getReader();
  const chunks = [];
  let loaded = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    loaded += value.length;
    report(label, loaded, total);
  }
  const out = new Uint8Array(loaded);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

function ioError(message) {
  const e = new Error(message);
  e.kind = "io";
  return e;
}

// Resolves on a later turn of the event loop, so that a page (or worker) can redraw and take a
// click between training steps. A MessageChannel message, unlike setTimeout(0), is neither
// clamped to 4 ms when chained nor throttled to one a second in a background tab.
export function yieldToEventLoop() {
  return new Promise((resolve) => {
    const c = new MessageChannel();
    c.port1.onmessage = () => {
      c.port1.close();
      resolve();
    };
    c.port2.postMessage(null);
  });
}
