// Builds the console into dist/: one JS bundle, one CSS file, index.html.
// Run by `npm run build` (./dev does it when the sources changed).
import { build } from "esbuild";
import { copyFile, mkdir, rm } from "node:fs/promises";

const outdir = new URL("./dist/", import.meta.url).pathname;

await rm(outdir, { recursive: true, force: true });
await mkdir(outdir, { recursive: true });
await build({
  entryPoints: { app: "src/main.jsx" },
  bundle: true,
  minify: true,
  sourcemap: true,
  format: "esm",
  target: ["es2022"],
  jsx: "automatic",
  jsxImportSource: "preact",
  outdir,
  logLevel: "warning",
});
await copyFile("index.html", `${outdir}index.html`);
console.log(`console built into ${outdir}`);
