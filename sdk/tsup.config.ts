import { defineConfig } from "tsup";

// What `pnpm pack` ships (see publishConfig in package.json): each entry as ESM (.mjs) and CJS (.cjs),
// each with its own declarations (.d.mts / .d.ts); viem stays an external dependency.
export default defineConfig({
  entry: { index: "src/index.ts", node: "src/node.ts" },
  format: ["esm", "cjs"],
  outExtension: ({ format }) => ({ js: format === "cjs" ? ".cjs" : ".mjs" }),
  dts: true,
  tsconfig: "tsconfig.build.json",
  target: "es2022",
  platform: "neutral",
  // Node built-ins (only "./node" has them) stay imports, written `node:` so bundlers see Node-only code.
  external: [/^node:/],
  removeNodeProtocol: false,
  clean: true,
});
