// The dedicated Web Worker behind "lorb/worker" (js/worker.js starts it): one Rescorer, driven by
// messages { id, op, args } and answering { id, ok, value | error } plus { id, progress } events.
// Calls run one at a time, in order (a Rescorer takes one call at a time); a cancel message acts
// at once, on the training run it names.
//
// The wasm is loaded by the first "load": the multi-threaded build (threads/lorb.js: rayon on
// helper Web Workers sharing one wasm memory) when more than one thread is wanted and the page is
// cross-origin isolated, else the single-threaded build (lorb.js). Blocking waits, which rayon's
// threads need, are allowed here in a worker and not on a page's main thread.

let lorb = null;
let rescorer = null;
let queue = Promise.resolve();
const tokens = new Map();

// Buffers that move to the page instead of being copied.
function transfers(v) {
  if (ArrayBuffer.isView(v)) return [v.buffer];
  if (v && typeof v === "object" && ArrayBuffer.isView(v.config) && ArrayBuffer.isView(v.weights)) return [v.config.buffer, v.weights.buffer];
  return [];
}

function inputError(message) {
  return Object.assign(new Error(message), { kind: "input" });
}

// Threads when the caller names none: the cores, at most 8 (more helper workers than that add
// start-up time and memory for little gain on lists of this size); one with `backend: "gpu"`,
// where the GPU computes.
const DEFAULT_MAX_THREADS = 8;
// A helper worker that fails to start never answers initThreadPool: give up after this long.
const POOL_START_MS = 60_000;

async function start(threads, backend) {
  if (lorb) return lorb;
  const n = threads ?? (backend === "gpu" ? 1 : Math.min(self.navigator?.hardwareConcurrency ?? 1, DEFAULT_MAX_THREADS));
  if (!Number.isInteger(n) || n < 1 || n > 256) throw inputError(`threads must be a whole number from 1 to 256, not ${threads}`);
  if (n > 1 && self.crossOriginIsolated) {
    try {
      const threaded = await import("./threads/lorb.js");
      await threaded.default();
      let timer;
      const timeout = new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`its ${n} helper workers did not start within ${POOL_START_MS / 1000} s`)), POOL_START_MS)));
      try {
        await Promise.race([threaded.initThreadPool(n), timeout]);
      } finally {
        clearTimeout(timer);
      }
      return (lorb = threaded);
    } catch (e) {
      // What did start of the threaded build stays behind, idle, until the worker ends.
      console.warn(`lorb: the multi-threaded build did not start (${e?.message ?? e}); computing on one thread`);
    }
  }
  const single = await import("./lorb.js");
  await single.default();
  return (lorb = single);
}

async function run(id, op, args) {
  const progress = (...p) => self.postMessage({ id, progress: p });
  if (op === "load") {
    const { threads, ...opts } = args[0] ?? {};
    const { Rescorer } = await start(threads, opts.backend);
    rescorer?.free();
    rescorer = null;
    rescorer = await Rescorer.load({ ...opts, onProgress: progress });
    return rescorer.capabilities();
  }
  if (!rescorer) throw Object.assign(new Error("the Rescorer is not loaded"), { kind: "input" });
  switch (op) {
    case "score": return rescorer.score(args[0], args[1]);
    case "rescore": return rescorer.rescore(args[0], args[1]);
    case "setAdapter": return rescorer.setAdapter(args[0], progress);
    case "train": {
      const token = new lorb.CancelToken();
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
