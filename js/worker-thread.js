// The dedicated Web Worker behind "lorb/worker" (js/worker.js starts it): one Rescorer, driven by
// messages { id, op, args } and answering { id, ok, value | error } plus { id, progress } events.
// Calls run one at a time, in order (a Rescorer takes one call at a time); a cancel message acts
// at once, on the training run it names.
import init, { Rescorer, CancelToken } from "./lorb.js";

const ready = init();
let rescorer = null;
let queue = Promise.resolve();
const tokens = new Map();

// Buffers that move to the page instead of being copied.
function transfers(v) {
  if (ArrayBuffer.isView(v)) return [v.buffer];
  if (v && typeof v === "object" && ArrayBuffer.isView(v.config) && ArrayBuffer.isView(v.weights)) return [v.config.buffer, v.weights.buffer];
  return [];
}

async function run(id, op, args) {
  await ready;
  const progress = (...p) => self.postMessage({ id, progress: p });
  if (op === "load") {
    rescorer?.free();
    rescorer = null;
    rescorer = await Rescorer.load({ ...args[0], onProgress: progress });
    return rescorer.capabilities();
  }
  if (!rescorer) throw Object.assign(new Error("the Rescorer is not loaded"), { kind: "input" });
  switch (op) {
    case "score": return rescorer.score(args[0], args[1]);
    case "rescore": return rescorer.rescore(args[0], args[1]);
    case "setAdapter": return rescorer.setAdapter(args[0], progress);
    case "train": {
      const token = new CancelToken();
      tokens.set(id, token);
      if (args[2]) token.cancel();
      try {
        return await rescorer.train(args[0], args[1], progress, token);
      } finally {
        tokens.delete(id);
        token.free();
      }
    }
    case "personalize": return rescorer.personalize(args[0], args[1], args[2]);
    case "exportAdapter": return rescorer.exportAdapter();
    case "capabilities": return rescorer.capabilities();
    case "free":
      rescorer.free();
      rescorer = null;
      return null;
    default: throw Object.assign(new Error(`unknown operation ${op}`), { kind: "input" });
  }
}

self.onmessage = ({ data: { id, op, args } }) => {
  if (op === "cancel") {
    tokens.get(args[0])?.cancel();
    return;
  }
  queue = queue.then(async () => {
    try {
      const value = await run(id, op, args);
      self.postMessage({ id, ok: true, value }, transfers(value));
    } catch (e) {
      self.postMessage({ id, ok: false, error: { message: e?.message ?? String(e), kind: e?.kind } });
    }
  });
};
