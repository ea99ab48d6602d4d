// Bundles app.js with the lorb package into dist/: webpack copies lorb_bg.wasm (referenced by
// `new URL(..., import.meta.url)` in the package) next to the bundle by itself.
// worker-app.js bundles lorb/worker: its worker script, and for threads the package's threaded
// build and wasm-bindgen-rayon's helper worker, which webpack 5 finds the same way.
// `webpack --env bundler` bundles the `--target bundler` build (target/pkg-bundler, which imports
// the .wasm as a module) into dist-bundler/ instead.
import { fileURLToPath } from "node:url";

const here = (p) => fileURLToPath(new URL(p, import.meta.url));

export default (env) => ({
  mode: "production",
  // worker-app.js (lorb/worker, threads) only from the web build, which has the worker entry.
  entry: env.bundler ? { app: "./app.js" } : { app: "./app.js", "worker-app": "./worker-app.js" },
  output: { path: here(env.bundler ? "dist-bundler/" : "dist/"), filename: "[name].js", clean: true },
  resolve: env.bundler ? { alias: { lorb: here("../../target/pkg-bundler/") } } : {},
  experiments: { asyncWebAssembly: true },
  performance: { hints: false },
});
