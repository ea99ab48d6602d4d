// lorb in Node.js (the package's "node" export): the wasm is read from the package's own folder
// and instantiated synchronously, so there is no init() to call; file paths and file: URLs are
// accepted wherever the browser API takes a URL (they are read with node:fs). The CPU backend
// runs here; `backend: "gpu"` is refused with kind "gpu" (Node has no WebGPU), and "auto" uses
// the CPU.
import { readFile } from "node:fs/promises";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { initSync, Rescorer } from "./lorb.js";

initSync({ module: readFileSync(new URL("./lorb_bg.wasm", import.meta.url)) });

export * from "./lorb.js";

// A string that is not an http(s), data or blob URL names a file.
async function bytes(v) {
  if (typeof v !== "string" || /^(https?|data|blob):/i.test(v)) return v;
  const path = v.startsWith("file:") ? fileURLToPath(v) : v;
  try {
    return new Uint8Array(await readFile(path));
  } catch (e) {
    const err = new Error(`${path}: ${e.message}`);
    err.kind = "io";
    throw err;
  }
}

async function adapterBytes(a) {
  return a && typeof a === "object" ? { ...a, config: await bytes(a.config), weights: await bytes(a.weights) } : a;
}

const load = Rescorer.load;
Rescorer.load = async function (opts) {
  if (!opts || typeof opts !== "object") return load.call(Rescorer, opts);
  const o = { ...opts };
  for (const k of ["config", "weights", "tokenizer", "head"]) o[k] = await bytes(o[k]);
  o.adapter = await adapterBytes(o.adapter);
  return load.call(Rescorer, o);
};

const setAdapter = Rescorer.prototype.setAdapter;
Rescorer.prototype.setAdapter = async function (adapter, ...rest) {
  return setAdapter.call(this, await adapterBytes(adapter), ...rest);
};
