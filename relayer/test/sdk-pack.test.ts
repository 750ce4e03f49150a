/**
 * The SDK as a user gets it: `pnpm pack`ed, installed with npm into a scratch project outside the
 * repository, its README's device example (sdk/README.md, "Pay from a device") run verbatim with
 * plain `node` against a relayer process on a real hardhat node: accepted, then settled on chain.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { pathToFileURL } from "node:url";
import { type Address, type Hex, settlementsOf } from "@machinepay/sdk";
import { expect } from "chai";
import { freePort, stopProcess } from "../../scripts/lib/hardhat-node";
import { PAYEES, startTestChain, type TestChain } from "./support/chain";

const ROOT = join(__dirname, "..", "..");
const SDK = join(ROOT, "sdk");
const BIN = join(ROOT, "relayer", "bin", "machinepay.js");

/** The `lang` fenced blocks of a Markdown file's `## section`, in order. */
function readmeBlocks(file: string, section: string, lang: string): string[] {
  const text = readFileSync(file, "utf8");
  const start = text.indexOf(`\n## ${section}\n`);
  if (start < 0) throw new Error(`${file} has no section "## ${section}"`);
  const end = text.indexOf("\n## ", start + 1);
  const body = text.slice(start, end < 0 ? undefined : end);
  return [...body.matchAll(new RegExp(`^\`\`\`${lang}\\n([\\s\\S]*?)^\`\`\`$`, "gm"))].map((m) => m[1]);
}

type Run = { code: number | null; stdout: string; stderr: string };

/** Run a command to its end (killed by its PID after `timeoutMs`); never rejects on a non-zero exit. */
function run(
  command: string,
  args: string[],
  { cwd, env = process.env, timeoutMs = 120_000 }: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs?: number },
): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (c) => (stdout += c));
    child.stderr!.on("data", (c) => (stderr += c));
    const timer = setTimeout(() => {
      stderr += `\n(killed after ${timeoutMs} ms)`;
      void stopProcess(child);
    }, timeoutMs);
    child.once("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

async function mustRun(command: string, args: string[], options: Parameters<typeof run>[2]): Promise<string> {
  const r = await run(command, args, options);
  if (r.code !== 0) throw new Error(`${command} ${args.join(" ")} exited ${r.code}:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** Every file path an `exports` map (or a string field) points at. */
function targets(value: unknown): string[] {
  if (typeof value === "string") return [value];
  if (value && typeof value === "object") return Object.values(value).flatMap(targets);
  return [];
}

describe("sdk: packed tarball installed outside the repository", function () {
  this.timeout(240_000);
  let chain: TestChain | undefined;
  let relayer: ChildProcess | undefined;
  let scratch: string;
  let installed: string;

  before(async () => {
    scratch = realpathSync(mkdtempSync(join(tmpdir(), "machinepay-sdk-pack-")));
    expect(relative(realpathSync(ROOT), scratch).startsWith(".."), "scratch project is outside the repo").to.equal(
      true,
    );
    installed = join(scratch, "node_modules", "@machinepay", "sdk");
    const packAndInstall = async () => {
      await mustRun("npx", ["-y", "pnpm@10", "pack", "--pack-destination", scratch], { cwd: SDK });
      const tarball = readdirSync(scratch).find((f) => f.endsWith(".tgz"));
      if (!tarball) throw new Error(`pnpm pack left no tarball in ${scratch}`);
      writeFileSync(join(scratch, "package.json"), JSON.stringify({ name: "sdk-pack-scratch", private: true }));
      // viem as the README installs it, in the SDK's own range so npm keeps one copy.
      const viem = JSON.parse(readFileSync(join(SDK, "package.json"), "utf8")).dependencies.viem;
      await mustRun(
        "npm",
        ["install", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error", `./${tarball}`, `viem@${viem}`],
        { cwd: scratch },
      );
    };
    // The chain and the install are independent; both are settled before a failure is reported,
    // so `after` can stop a chain that started.
    const [started, packed] = await Promise.allSettled([startTestChain(), packAndInstall()]);
    if (started.status === "fulfilled") chain = started.value;
    if (started.status === "rejected") throw started.reason;
    if (packed.status === "rejected") throw packed.reason;
  });

  after(async () => {
    if (relayer) await stopProcess(relayer);
    await chain?.stop();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  it("ships a manifest whose every entry points at a built file in dist/", () => {
    const manifest = JSON.parse(readFileSync(join(installed, "package.json"), "utf8"));
    const files = [manifest.main, manifest.module, manifest.types, ...targets(manifest.exports)];
    expect(Object.keys(manifest.exports)).to.deep.equal([".", "./node", "./package.json"]);
    for (const f of files.filter((f) => f !== "./package.json")) {
      expect(f, "points into dist/").to.match(/^\.\/dist\/.+\.(cjs|mjs|d\.ts|d\.mts)$/);
      expect(existsSync(join(installed, f)), `${f} is in the tarball`).to.equal(true);
    }
    expect(existsSync(join(installed, "src")), "no TypeScript sources shipped").to.equal(false);
    for (const f of ["index.mjs", "index.cjs"]) {
      const code = readFileSync(join(installed, "dist", f), "utf8");
      expect(code, `dist/${f} stays browser-safe`).to.not.match(/(from\s*|require\()["']node:/);
    }
  });

  it("loads with require() (CJS) and import (ESM), each from its own build", async () => {
    writeFileSync(
      join(scratch, "load.cjs"),
      `const sdk = require("@machinepay/sdk");
const { FileNonceBackend } = require("@machinepay/sdk/node");
console.log(JSON.stringify({ file: require.resolve("@machinepay/sdk"), signPayment: typeof sdk.signPayment,
  abi: Array.isArray(sdk.machinePayAbi), client: typeof sdk.RelayerClient, nonces: typeof FileNonceBackend }));
`,
    );
    writeFileSync(
      join(scratch, "load.mjs"),
      `import { machinePayAbi, RelayerClient, signPayment } from "@machinepay/sdk";
import { FileNonceBackend } from "@machinepay/sdk/node";
console.log(JSON.stringify({ file: import.meta.resolve("@machinepay/sdk"), signPayment: typeof signPayment,
  abi: Array.isArray(machinePayAbi), client: typeof RelayerClient, nonces: typeof FileNonceBackend }));
`,
    );
    const expected = { signPayment: "function", abi: true, client: "function", nonces: "function" };
    const cjs = JSON.parse(await mustRun(process.execPath, ["load.cjs"], { cwd: scratch }));
    expect(cjs).to.deep.equal({ file: join(installed, "dist", "index.cjs"), ...expected });
    const esm = JSON.parse(await mustRun(process.execPath, ["load.mjs"], { cwd: scratch }));
    expect(esm).to.deep.equal({ file: pathToFileURL(join(installed, "dist", "index.mjs")).href, ...expected });
  });

  it("type-checks for ESM, CJS and classic `moduleResolution: node` consumers from the shipped declarations", async () => {
    const use = `import { type Payment, machinePayAbi, RelayerClient, ZERO_REF } from "@machinepay/sdk";
import { FileNonceBackend } from "@machinepay/sdk/node";
const payment: Payment = { payee: "0x0000000000000000000000000000000000000001", token: "0x0000000000000000000000000000000000000002",
  amount: 1n, nonce: 0n, deadline: 1n, maxFee: 0n, ref: ZERO_REF };
const nonce: Promise<bigint | undefined> = new FileNonceBackend("n.json").load("k");
const health: ReturnType<RelayerClient["health"]> = new RelayerClient({ url: "http://127.0.0.1:1" }).health();
const first: string = machinePayAbi[0].type;
export { payment, nonce, health, first };
`;
    for (const f of ["use.mts", "use.cts", "use-classic.ts"]) writeFileSync(join(scratch, f), use);
    const tsc = require.resolve("typescript/bin/tsc", { paths: [SDK] });
    const common = {
      target: "es2022",
      lib: ["es2022", "dom"],
      types: [],
      strict: true,
      noEmit: true,
      skipLibCheck: true,
    };
    /** The declaration files of the SDK that one program loaded. */
    const typecheck = async (name: string, options: Record<string, string>, files: string[]) => {
      writeFileSync(join(scratch, name), JSON.stringify({ compilerOptions: { ...common, ...options }, files }));
      const r = await run(process.execPath, [tsc, "-p", name, "--listFiles"], { cwd: scratch });
      expect(r.code, `tsc -p ${name} failed:\n${r.stdout}\n${r.stderr}`).to.equal(0);
      const dist = join(installed, "dist");
      return r.stdout
        .split("\n")
        .filter((l) => l.startsWith(dist))
        .map((l) => relative(dist, l.trim()))
        .filter((f) => !f.startsWith("nonces-"))
        .sort();
    };
    const [node16, classic] = await Promise.all([
      typecheck("tsconfig.nodenext.json", { module: "nodenext", moduleResolution: "nodenext" }, ["use.mts", "use.cts"]),
      typecheck("tsconfig.classic.json", { module: "commonjs", moduleResolution: "node" }, ["use-classic.ts"]),
    ]);
    // import gets the .d.mts, require the .d.ts; classic resolution finds "./node" through typesVersions.
    expect(node16).to.deep.equal(["index.d.mts", "index.d.ts", "node.d.mts", "node.d.ts"]);
    expect(classic).to.deep.equal(["index.d.ts", "node.d.ts"]);
  });

  it("runs the README's device example with plain node: accepted, then settled on chain", async () => {
    if (!chain) throw new Error("no chain");
    const [example] = readmeBlocks(join(SDK, "README.md"), "Pay from a device", "js");
    const [configText] = readmeBlocks(join(SDK, "README.md"), "Pay from a device", "json");
    expect(example, "sdk/README.md has the device example").to.be.a("string");
    expect(readmeBlocks(join(ROOT, "README.md"), "Pay from a device", "js"), "root README, same example").to.include(
      example,
    );
    expect(readmeBlocks(join(ROOT, "README.md"), "Pay from a device", "json"), "root README, same settings").to.include(
      configText,
    );

    const port = await freePort();
    const relayerConfig = join(chain.dir, "relayer.json");
    writeFileSync(
      relayerConfig,
      JSON.stringify({
        rpcUrl: chain.node.url,
        deployment: chain.deploymentFile,
        store: join(chain.dir, "sdk-pack.db"),
        port,
        sender: { dev: true },
        confirmations: 1,
        batch: { maxAgeMs: 150, pollMs: 30 },
        logLevel: "warn",
      }),
    );
    relayer = spawn(process.execPath, [BIN, "relayer", "start", "--config", relayerConfig], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let relayerOut = "";
    relayer.stdout!.on("data", (c) => (relayerOut += c));
    relayer.stderr!.on("data", (c) => (relayerOut += c));

    // The README's settings, as written but for the relayer's port: the rest are a fresh local
    // deployment's addresses, which the README promises.
    const config = JSON.parse(configText);
    const lower = (o: { chainId: number; contract: string; token: string }) => ({
      ...o,
      contract: o.contract.toLowerCase(),
      token: o.token.toLowerCase(),
    });
    expect(lower(config), "sdk/README.md's device.json matches a fresh local deployment").to.deep.include(
      lower({ chainId: chain.deployment.chainId, contract: chain.deployment.machinePay, token: chain.usdc }),
    );
    config.relayerUrl = `http://127.0.0.1:${port}`;
    writeFileSync(join(scratch, "device.json"), JSON.stringify(config, null, 2));
    const {
      devices: [device],
      keys: [key],
    } = await chain.fleet(1);
    writeFileSync(join(scratch, config.keyFile), `${key}\n`, { mode: 0o600 });
    writeFileSync(join(scratch, "pay.mjs"), example);

    const until = Date.now() + 60_000;
    for (;;) {
      if (relayer.exitCode !== null) throw new Error(`relayer exited ${relayer.exitCode}:\n${relayerOut}`);
      const ready = await fetch(`${config.relayerUrl}/healthz`).then(
        (r) => r.ok,
        () => false,
      );
      if (ready) break;
      if (Date.now() > until) throw new Error(`relayer did not start:\n${relayerOut}`);
      await new Promise((r) => setTimeout(r, 200));
    }

    const payee: Address = PAYEES[0];
    const env = { ...process.env };
    delete env.DEVICE_CONFIG;
    const paid = await run(process.execPath, ["pay.mjs", payee, "250000"], { cwd: scratch, env, timeoutMs: 90_000 });
    expect(paid.code, `pay.mjs failed:\n${paid.stdout}\n${paid.stderr}\nrelayer:\n${relayerOut}`).to.equal(0);
    const lines = paid.stdout.trim().split("\n");
    const id = lines[0].match(/0x[0-9a-f]{64}/)?.[0] as Hex;
    expect(lines[0]).to.match(/\b(accepted|batched|submitted|settled)\b/);
    expect(lines.at(-1)).to.match(/settled/);

    const status = (await (await fetch(`${config.relayerUrl}/v1/payments/${id}`)).json()) as Record<string, unknown>;
    expect(status).to.include({ status: "settled", amount: "250000", nonce: "0" });
    expect(String(status.device).toLowerCase()).to.equal(device.address.toLowerCase());

    const logs = await chain.client.getLogs({ address: chain.deployment.machinePay, fromBlock: 0n });
    const settled = settlementsOf(logs as never, chain.deployment.machinePay).filter(
      (s) => s.eventName === "PaymentSettled" && s.device.toLowerCase() === device.address.toLowerCase(),
    );
    expect(settled).to.have.length(1);
    const [s] = settled as { token: Address; payee: Address; amount: bigint; nonce: bigint }[];
    expect({
      token: s.token.toLowerCase(),
      payee: s.payee.toLowerCase(),
      amount: s.amount,
      nonce: s.nonce,
    }).to.deep.equal({ token: chain.usdc.toLowerCase(), payee: payee.toLowerCase(), amount: 250_000n, nonce: 0n });

    // The nonce was reserved in the example's nonce file before signing.
    const nonces = JSON.parse(readFileSync(join(scratch, config.nonceFile), "utf8"));
    expect(nonces).to.deep.equal({ [device.address.toLowerCase()]: "1" });
  });
});
