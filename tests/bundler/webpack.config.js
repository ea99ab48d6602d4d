// Bundles app.js with the lorb package into dist/: webpack copies lorb_bg.wasm (referenced by
// `new URL(..., import.meta.url)` in the package) next to the bundle by itself.
// `webpack --env bundler` bundles the `--target bundler` build (target/pkg-bundler, which imports
// the .wasm as a module) into dist-bundler/ instead.
import { fileURLToPath } from "node:url";

const here = (p) => fileURLToPath(new URL(p, import.meta.url));

export default (env) => ({
  mode: "production",
  entry: "./app.js",
  output: { path: here(env.bundler ? "dist-bundler/" : "dist/"), filename: "app.js", clean: true },
  resolve: env.bundler ? { alias: { lorb: here("../../target/pkg-bundler/") } } : {},
  experiments: { asyncWebAssembly: true },
  performance: { hints: false },
});
