// Completes the package.json wasm-pack wrote: an exports map (Node.js gets node.js, which loads
// the wasm itself; browsers and bundlers get lorb.js; "lorb/worker" runs the Rescorer in a Web
// Worker), the files that ship, and npm metadata.
import { readFileSync, writeFileSync } from "node:fs";

const path = process.argv[2];
const p = JSON.parse(readFileSync(path, "utf8"));
p.exports = {
  ".": { types: "./lorb.d.ts", node: "./node.js", default: "./lorb.js" },
  "./worker": { types: "./worker.d.ts", default: "./worker.js" },
  "./package.json": "./package.json",
};
p.files = [...new Set([...(p.files || []), "node.js", "worker.js", "worker-thread.js", "worker.d.ts", "threads/", "LICENSE", "README.md"])];
// node.js instantiates the wasm on import, worker-thread.js installs a message handler, and so
// does the threaded build's helper worker (a snippet).
p.sideEffects = [...new Set([...(p.sideEffects || []), "./node.js", "./worker-thread.js", "./threads/snippets/*"])];
p.keywords = ["speech-recognition", "asr", "n-best", "rescoring", "bert", "lora", "webgpu", "wgsl", "wasm"];
p.engines = { node: ">=18" };
writeFileSync(path, JSON.stringify(p, null, 2) + "\n");
