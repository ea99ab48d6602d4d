// Bundles the same app (app.js, through vite.html) with Vite into dist-vite/. Vite copies the
// package's lorb_bg.wasm (referenced by `new URL(..., import.meta.url)`) as an asset by itself;
// it must not pre-bundle lorb in development, where that reference would be lost.
export default {
  base: "./",
  build: { outDir: "dist-vite", emptyOutDir: true, target: "es2022", rollupOptions: { input: "vite.html" } },
  optimizeDeps: { exclude: ["lorb"] },
};
