// "lorb/worker": the Rescorer in a dedicated Web Worker, behind the same promise API, so that
// loading, scoring and training never block the page. Each Rescorer.load() starts its own worker
// (js/worker-thread.js, which loads the wasm there); progress callbacks and CancelTokens are
// forwarded as messages. Differences from "lorb": no init() to call; capabilities() and
// exportAdapter() return promises; free() also ends the worker. Relative URLs are resolved
// against the page before they are passed on.
//
//   import { Rescorer, CancelToken } from "lorb/worker";
//   const r = await Rescorer.load({ config: "…/config.json", weights: "…", tokenizer: "…" });
//   const out = await r.rescore(list, { method: "cls" });   // the page stays responsive

function lorbError(e) {
  return Object.assign(new Error(e.message), { kind: e.kind });
}

// A string source is a URL: absolute before it goes to the worker, whose base URL is its script.
function absolute(v) {
  return typeof v === "string" && globalThis.location ? new URL(v, globalThis.location.href).href : v;
}

function withAbsoluteUrls(o) {
  const out = { ...o };
  for (const k of ["config", "weights", "tokenizer", "head"]) if (k in out) out[k] = absolute(out[k]);
  if (out.adapter && typeof out.adapter === "object") out.adapter = withAdapterUrls(out.adapter);
  return out;
}

function withAdapterUrls(a) {
  return a && typeof a === "object" ? { ...a, config: absolute(a.config), weights: absolute(a.weights) } : a;
}

/** Cancels a training run in the worker (after its current step), like lorb's CancelToken. */
export class CancelToken {
  #cancelled = false;
  #send = null;
  cancel() {
    this.#cancelled = true;
    this.#send?.();
  }
  cancelled() {
    return this.#cancelled;
  }
  free() {}
  /** @internal the worker call this token cancels */
  _attach(send) {
    this.#send = send;
    return this.#cancelled;
  }
}

export class Rescorer {
  #worker;
  #pending = new Map();
  #next = 1;

  constructor(worker) {
    this.#worker = worker;
    worker.onmessage = ({ data }) => {
      const p = this.#pending.get(data.id);
      if (!p) return;
      if (data.progress) {
        p.onProgress?.(...data.progress);
        return;
      }
      this.#pending.delete(data.id);
      if (data.ok) p.resolve(data.value);
      else p.reject(lorbError(data.error));
    };
    // The worker could not start (its script or the wasm failed to load) or died.
    worker.onerror = (e) => {
      e.preventDefault?.();
      const err = lorbError({ message: `the lorb worker failed: ${e.message || "it could not start"}`, kind: "worker" });
      for (const p of this.#pending.values()) p.reject(err);
      this.#pending.clear();
    };
  }

  #call(op, args, onProgress, cancel) {
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, onProgress: typeof onProgress === "function" ? onProgress : null });
      const cancelled = cancel?._attach(() => this.#worker.postMessage({ op: "cancel", args: [id] })) ?? false;
      this.#worker.postMessage({ id, op, args: cancel ? [...args, cancelled] : args });
    });
  }

  /** Starts a worker and loads the model there (the options of lorb's Rescorer.load). */
  static async load(opts = {}) {
    const worker = new Worker(new URL("./worker-thread.js", import.meta.url), { type: "module" });
    const r = new Rescorer(worker);
    const { onProgress, ...rest } = opts;
    try {
      await r.#call("load", [withAbsoluteUrls(rest)], onProgress);
    } catch (e) {
      worker.terminate();
      throw e;
    }
    return r;
  }

  score(texts, opts) {
    return this.#call("score", [texts, opts]);
  }
  rescore(nbest, opts) {
    return this.#call("rescore", [nbest, opts]);
  }
  setAdapter(adapter, onProgress) {
    return this.#call("setAdapter", [withAdapterUrls(adapter)], onProgress);
  }
  train(lists, opts, onProgress, cancel) {
    return this.#call("train", [lists, opts], onProgress, cancel ?? new CancelToken());
  }
  personalize(adapt, evaluated, opts) {
    return this.#call("personalize", [adapt, evaluated, opts]);
  }
  capabilities() {
    return this.#call("capabilities", []);
  }
  exportAdapter() {
    return this.#call("exportAdapter", []);
  }
  /** Frees the model and ends the worker. */
  async free() {
    try {
      await this.#call("free", []);
    } finally {
      this.#worker.terminate();
    }
  }
}
