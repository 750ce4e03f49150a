import { expect } from "chai";
import { build } from "esbuild";

describe("sdk: browser bundle", () => {
  it("bundles the main entry for the browser with no Node built-in imports", async function () {
    this.timeout(60_000);
    const result = await build({
      entryPoints: [`${__dirname}/../src/index.ts`],
      bundle: true,
      platform: "browser",
      format: "esm",
      write: false,
      metafile: true,
      logLevel: "silent",
    });
    expect(result.errors).to.deep.equal([]);
    const inputs = Object.keys(result.metafile.inputs);
    expect(inputs.some((i) => i.endsWith("src/sign.ts"))).to.equal(true);
    expect(inputs.filter((i) => i.startsWith("node:") || i.endsWith("src/node.ts"))).to.deep.equal([]);
    expect(result.outputFiles[0].text).to.not.match(/from\s*["']node:/);
  });
});
