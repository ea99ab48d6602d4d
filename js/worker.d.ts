// Types of "lorb/worker": lorb's Rescorer, run in a dedicated Web Worker.
import type { LoadOptions, AdapterSource, AdapterInfo, NBestList, RescoreOptions, Rescored, Capabilities, TrainOptions, TrainProgress, TrainResult, PersonalizeOptions, PersonalizeResult } from "./lorb.js";
export type { LoadOptions, AdapterSource, AdapterInfo, NBestList, RescoreOptions, Rescored, Capabilities, TrainOptions, TrainProgress, TrainResult, PersonalizeOptions, PersonalizeResult, LorbError } from "./lorb.js";

export class CancelToken {
  constructor();
  cancel(): void;
  cancelled(): boolean;
  free(): void;
}

/** lorb's LoadOptions, and the size of the worker's thread pool. */
export interface WorkerLoadOptions extends LoadOptions {
  /**
   * Threads for the CPU backend (default `navigator.hardwareConcurrency`, at most 8; 1 with
   * `backend: "gpu"`). Above 1, and where the
   * page is cross-origin isolated (COOP/COEP headers, so SharedArrayBuffer exists), the worker
   * loads the multi-threaded wasm build and starts that many helper workers; otherwise it uses
   * one thread. `capabilities().threads` says which it got.
   */
  threads?: number;
}

export class Rescorer {
  private constructor();
  /** Starts a worker and loads the model there. Errors reject with a LorbError (`kind "worker"` when the worker could not start). */
  static load(opts: WorkerLoadOptions): Promise<Rescorer>;
  score(texts: string[], opts?: RescoreOptions): Promise<Float64Array>;
  rescore(nbest: NBestList, opts?: RescoreOptions): Promise<Rescored>;
  setAdapter(adapter: AdapterSource, onProgress?: (file: string, loaded: number, total: number) => void): Promise<AdapterInfo>;
  train(lists: NBestList[], opts?: TrainOptions, onProgress?: (p: TrainProgress) => void, cancel?: CancelToken): Promise<TrainResult>;
  personalize(adapt: NBestList[], eval: NBestList[], opts?: PersonalizeOptions): Promise<PersonalizeResult>;
  capabilities(): Promise<Capabilities>;
  exportAdapter(): Promise<{ config: Uint8Array; weights: Uint8Array }>;
  /** Frees the model and ends the worker. */
  free(): Promise<void>;
}
