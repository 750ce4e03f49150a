/**
 * Worker threads that run one of the relayer's own modules (signature recovery, the SQLite
 * writer). Running as TypeScript source (this monorepo), the worker compiles the .ts files it
 * requires as the CLI does (esbuild's transform, ~10x faster to start than ts-node; ts-node if
 * esbuild is missing); built, it requires the .js beside the caller.
 */
import { join } from "node:path";

const ESBUILD = (() => {
  try {
    return require.resolve("esbuild");
  } catch {
    return undefined;
  }
})();

/**
 * Source for `new Worker(source, { eval: true })` that loads `module` (a path without extension,
 * relative to `dir`, the caller's `__dirname`). `typescript`: whether the caller runs as .ts.
 */
export function workerSource(dir: string, module: string, typescript: boolean): string {
  if (!typescript) return `require(${JSON.stringify(join(dir, `${module}.js`))});`;
  return `const { readFileSync } = require("node:fs");
     let esbuild;
     try { esbuild = ${ESBUILD ? `require(${JSON.stringify(ESBUILD)})` : "undefined"}; } catch {}
     if (esbuild) {
       require.extensions[".ts"] = (module, filename) => {
         const { code } = esbuild.transformSync(readFileSync(filename, "utf8"), {
           loader: "ts", format: "cjs", target: "es2022", supported: { "dynamic-import": false }, sourcefile: filename,
         });
         module._compile(code, filename);
       };
     } else {
       require("ts-node").register({ transpileOnly: true, project: ${JSON.stringify(join(__dirname, "..", "tsconfig.json"))} });
     }
     require(${JSON.stringify(join(dir, `${module}.ts`))});`;
}
