// Bundles the same apps (app.js through vite.html, worker-app.js through vite-worker.html) with
// Vite into dist-vite/. Vite copies the
// package's lorb_bg.wasm (referenced by `new URL(..., import.meta.url)`) as an asset by itself;
// it must not pre-bundle lorb in development, where that reference would be lost.
export default {
  base: "./",
  build: { outDir: "dist-vite", emptyOutDir: true, target: "es2022", rollupOptions: { input: ["vite.html", "vite-worker.html"] } },
  optimizeDeps: { exclude: ["lorb"] },
  // lorb/worker's worker loads one of two wasm builds by dynamic import: module workers
  // ("es"; Vite's default "iife" cannot split code).
  worker: { format: "es" },
};
