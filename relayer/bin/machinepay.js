#!/usr/bin/env node
// Runs the TypeScript CLI without a build step (the relayer ships as source in this monorepo).
require("ts-node").register({
  transpileOnly: true,
  project: require("node:path").join(__dirname, "..", "tsconfig.json"),
});
require("../src/cli/index.ts").program().parseAsync(process.argv);
