/**
 * The `machinepay` CLI end to end: every command runs as a child process (`node
 * relayer/bin/machinepay.js …`) against a real `hardhat node`, and each test checks what changed on
 * chain through the contract's views (or, for relayer commands, the relayer's answers and the
 * chain's events). Deploy goes through Ignition with the create2 strategy; a relayer child process
 * settles what `pay` and `tab pay` submit.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createCipheriv, randomBytes, randomUUID, scryptSync } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Address, type Hex, machinePayAbi, settlementsOf } from "@machinepay/sdk";
import { expect } from "chai";
import type { Command } from "commander";
import {
  createPublicClient,
  encodeAbiParameters,
  encodeDeployData,
  getContractAddress,
  http,
  keccak256,
  type PublicClient,
} from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { freePort, type HardhatNode, startHardhatNode, stopProcess } from "../../scripts/lib/hardhat-node";
import { program } from "../src/cli";
import { type Deployment, loadDeployment } from "../src/config";
import { newSchema, requirePostgres } from "./support/postgres";

const ROOT = join(__dirname, "..", "..");
const BIN = join(ROOT, "relayer", "bin", "machinepay.js");
const OWNER = privateKeyToAccount("0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80").address;
/** Hardhat's account #2 (public test key): the payee. */
const PAYEE_KEY: Hex = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a";
const PAYEE: Address = privateKeyToAccount(PAYEE_KEY).address;
const ADMIN_TOKEN = "cli-test-admin-token-0123456789";
const CREATEX: Address = "0xba5Ed099633D3B313e4D5F7bdc1305d3c28ba5Ed";
const SALT: Hex = "0x0000000000000000000000000000000000000000004d616368696e6550617931";

type Run = { code: number | null; stdout: string; stderr: string };

// The same suite on both stores: the relayer that `pay` and `onboard` go through keeps a SQLite
// file, then a PostgreSQL schema (`--store postgres://…` in its config).
for (const backend of ["SQLite", "PostgreSQL"] as const)
  describe(`machinepay CLI (child processes against a hardhat node; relayer on ${backend})`, function () {
    this.timeout(120_000);
    let node: HardhatNode;
    let dir: string;
    let depFile: string;
    let dep: Deployment;
    let client: PublicClient;
    let relayer: ChildProcess | undefined;
    let relayerUrl: string;
    const deploymentId = `cli-test-${backend.toLowerCase()}-${process.pid}-${Date.now()}`;
    const journal = join(ROOT, "ignition", "deployments", deploymentId);
    const state: { policyId?: number; d1?: Address; d2?: Address; paid?: Hex[] } = {};

    /** The relayer's store: a file, or a fresh schema on the test PostgreSQL server. */
    let store: string;

    before(async function () {
      store = backend === "SQLite" ? "" : (await newSchema(await requirePostgres(this))).url;
      node = await startHardhatNode();
      dir = mkdtempSync(join(tmpdir(), "machinepay-cli-"));
      depFile = join(dir, "deployment.json");
      client = createPublicClient({ transport: http(node.url) }) as PublicClient;
    });

    after(async () => {
      if (relayer) await stopProcess(relayer);
      await node?.stop();
      rmSync(dir, { recursive: true, force: true });
      rmSync(journal, { recursive: true, force: true });
    });

    /** Run the CLI; MACHINEPAY_* variables come only from `env`, plus the node's RPC URL and the deployment file. */
    function cli(args: string[], env: Record<string, string> = {}): Promise<Run> {
      const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("MACHINEPAY_")));
      return new Promise((resolve, reject) => {
        const child = spawn(process.execPath, [BIN, ...args], {
          cwd: dir,
          env: { ...base, MACHINEPAY_RPC_URL: node.url, MACHINEPAY_DEPLOYMENT: depFile, ...env },
          stdio: ["ignore", "pipe", "pipe"],
        });
        let stdout = "";
        let stderr = "";
        child.stdout!.on("data", (c) => (stdout += c));
        child.stderr!.on("data", (c) => (stderr += c));
        child.once("error", reject);
        child.once("close", (code) => resolve({ code, stdout, stderr }));
      });
    }

    /** Run a command with --json that must succeed; its parsed output. */
    async function json<T = Record<string, unknown>>(args: string[], env?: Record<string, string>): Promise<T> {
      const r = await cli([...args, "--json"], env);
      if (r.code !== 0) throw new Error(`machinepay ${args.join(" ")} exited ${r.code}:\n${r.stdout}\n${r.stderr}`);
      return JSON.parse(r.stdout) as T;
    }

    const view = <T>(functionName: string, args: unknown[] = []) =>
      client.readContract({
        address: dep.machinePay,
        abi: machinePayAbi,
        functionName: functionName as never,
        args: args as never,
      }) as Promise<T>;

    const poll = async <T>(what: string, get: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 30_000) => {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const v = await get();
        if (ok(v)) return v;
        if (Date.now() > until) throw new Error(`${what}: still ${JSON.stringify(v)}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    };

    it("deploy --dev runs Ignition (create2) and writes a deployment file that loads; a re-run resumes", async () => {
      const r = await cli([
        "deploy",
        "--dev",
        "--out",
        depFile,
        "--notice-period",
        "60",
        "--deployment-id",
        deploymentId,
      ]);
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stderr).to.include("Hardhat's test key #0");
      dep = loadDeployment(depFile);
      expect(dep.chainId).to.equal(31337);
      expect(dep.noticePeriod).to.equal(60);
      expect(dep.deploymentBlock).to.be.greaterThan(0);
      expect(await client.getCode({ address: dep.machinePay })).to.match(/^0x[0-9a-f]{100,}/);
      expect(await client.getCode({ address: dep.tokens.USDC })).to.match(/^0x[0-9a-f]{100,}/);
      expect(await view<bigint>("NOTICE_PERIOD")).to.equal(60n);
      // The create2 address: CreateX's guarded salt (keccak of the salt, no sender or chain bytes) and the init code.
      const artifact = JSON.parse(
        readFileSync(join(ROOT, "artifacts/contracts/MachinePay.sol/MachinePay.json"), "utf8"),
      );
      const initCode = encodeDeployData({ abi: artifact.abi, bytecode: artifact.bytecode, args: [60n] });
      const expected = getContractAddress({
        opcode: "CREATE2",
        from: CREATEX,
        salt: keccak256(encodeAbiParameters([{ type: "bytes32" }], [SALT])),
        bytecodeHash: keccak256(initCode),
      });
      expect(dep.machinePay.toLowerCase()).to.equal(expected.toLowerCase());

      const again = await json<{ machinePay: string }>([
        "deploy",
        "--dev",
        "--out",
        depFile,
        "--notice-period",
        "60",
        "--deployment-id",
        deploymentId,
      ]);
      expect(again.machinePay.toLowerCase()).to.equal(dep.machinePay.toLowerCase());
    });

    it("fund deposits with an EIP-2612 permit in one transaction, or approve + deposit with --no-permit", async () => {
      const a = await json<{ method: string; balance: string }>(["fund", "--dev", "--amount", "1_000_000_000"]);
      expect(a.method).to.equal("permit");
      const b = await json<{ method: string; balance: string }>(["fund", "--dev", "--amount", "5", "--no-permit"]);
      expect(b.method).to.equal("approve");
      expect(await view<bigint>("balanceOf", [OWNER, dep.tokens.USDC])).to.equal(1_000_000_005n);
    });

    it("policy create, payees allow and policy show change and report the chain's state", async () => {
      const created = await json<{ policyId: number }>([
        "policy",
        "create",
        "--dev",
        "--max-per-payment",
        "10000000",
        "--max-per-period",
        "100000000",
        "--period",
        "1d",
        "--lifetime-max",
        "1000000000",
        "--payees-restricted",
      ]);
      state.policyId = created.policyId;
      const onChain = await view<{
        owner: Address;
        maxPerPayment: bigint;
        periodLength: number;
        payeesRestricted: boolean;
      }>("getPolicy", [created.policyId]);
      expect(onChain.owner).to.equal(OWNER);
      expect(onChain.maxPerPayment).to.equal(10_000_000n);
      expect(onChain.periodLength).to.equal(86_400);
      expect(onChain.payeesRestricted).to.equal(true);

      await json(["payees", "allow", String(created.policyId), PAYEE, "--dev"]);
      expect(await view<boolean>("isPayeeAllowed", [created.policyId, PAYEE])).to.equal(true);

      const shown = await json<{ maxPerPeriod: string; payees: string[]; frozen: boolean }>([
        "policy",
        "show",
        String(created.policyId),
      ]);
      expect(shown.maxPerPeriod).to.equal("100000000");
      expect(shown.payees).to.deep.equal([PAYEE]);
      expect(shown.frozen).to.equal(false);
    });

    it("device new writes a 0600 key file and prints only the address; register, show, pause and resume act on chain", async () => {
      const made = await cli(["device", "new", "--out", "d1.key"]);
      expect(made.code).to.equal(0);
      const key = readFileSync(join(dir, "d1.key"), "utf8").trim();
      expect(statSync(join(dir, "d1.key")).mode & 0o777).to.equal(0o600);
      expect(made.stdout + made.stderr).to.not.include(key.slice(2));
      const d1 = privateKeyToAccount(key as Hex).address;
      expect(made.stdout.trim()).to.equal(d1);
      state.d1 = d1;

      await json(["device", "register", "--dev", "--policy", String(state.policyId), "--device-key", "d1.key"]);
      expect((await view<{ policyId: number }>("getDevice", [d1])).policyId).to.equal(state.policyId);

      // A device that signs its own proof for the owner, registered onto a policy of its own.
      const d2 = (await json<{ address: Address }>(["device", "new", "--out", "d2.key"])).address;
      const enrolled = await cli([
        "device",
        "enroll",
        "--key-file",
        "d2.key",
        "--owner",
        OWNER,
        "--out",
        "d2.proof.json",
      ]);
      expect(enrolled.code, enrolled.stderr).to.equal(0);
      const own = await json<{ policyId: number }>([
        "device",
        "register",
        "--dev",
        "--proof",
        "d2.proof.json",
        "--max-per-payment",
        "1000",
        "--max-per-period",
        "1000",
        "--lifetime-max",
        "1000",
      ]);
      expect(own.policyId).to.be.greaterThan(state.policyId!);
      expect((await view<{ policyId: number }>("getDevice", [d2])).policyId).to.equal(own.policyId);
      state.d2 = d2;

      const shown = await json<{ status: string; policyId: number; spendable: string; source: string }>([
        "device",
        "show",
        d1,
      ]);
      expect(shown).to.include({ status: "None", policyId: state.policyId, spendable: "10000000", source: "chain" });

      await json(["device", "pause", d1, "--dev"]);
      expect((await view<{ paused: boolean }>("getDevice", [d1])).paused).to.equal(true);
      expect((await json<{ status: string }>(["device", "show", d1])).status).to.equal("DevicePaused");
      await json(["device", "resume", d1, "--dev"]);
      expect((await view<{ paused: boolean }>("getDevice", [d1])).paused).to.equal(false);
    });

    it("pay and tab pay go through the relayer and settle; payments, batches, settle and status report it", async () => {
      const port = await freePort();
      relayerUrl = `http://127.0.0.1:${port}`;
      const config = join(dir, "relayer.json");
      writeFileSync(
        config,
        JSON.stringify({
          rpcUrl: node.url,
          deployment: depFile,
          store: store || join(dir, "relayer.db"),
          port,
          sender: { dev: true },
          confirmations: 1,
          adminToken: ADMIN_TOKEN,
          batch: { maxAgeMs: 300, pollMs: 50 },
          // Vouchers wait for `machinepay settle`.
          tabs: { threshold: "100000000000", maxAgeMs: 600_000 },
          logLevel: "warn",
        }),
      );
      relayer = spawn(process.execPath, [BIN, "relayer", "start", "--config", config], {
        stdio: ["ignore", "pipe", "pipe"],
      });
      let log = "";
      relayer.stdout!.on("data", (c) => (log += c));
      relayer.stderr!.on("data", (c) => (log += c));
      await poll(
        "relayer readiness",
        () =>
          fetch(`${relayerUrl}/readyz`).then(
            (r) => r.ok,
            () => false,
          ),
        (ok) => ok || relayer!.exitCode !== null,
      );
      expect(relayer.exitCode, log).to.equal(null);
      const R = ["--relayer", relayerUrl];

      const first = await json<{ id: Hex; status: string; payment: { nonce: string } }>([
        "pay",
        "--key-file",
        "d1.key",
        "--payee",
        PAYEE,
        "--amount",
        "1000000",
        "--ref",
        "order-1",
        ...R,
      ]);
      expect(first.status).to.equal("accepted");
      expect(first.payment.nonce).to.equal("0");
      const second = await json<{ id: Hex; status: string; blockNumber: number; payment: { nonce: string } }>([
        "pay",
        "--key-file",
        "d1.key",
        "--payee",
        PAYEE,
        "--amount",
        "2000000",
        "--wait",
        ...R,
      ]);
      expect(second.payment.nonce, "the nonce file hands out the next nonce").to.equal("1");
      expect(second.status).to.equal("settled");
      expect(second.blockNumber).to.be.a("number");
      await poll(
        "first payment",
        () => json<{ status: string }>(["payments", "show", first.id, ...R]),
        (s) => s.status === "settled",
      );
      // The same pay (same --ref) run again re-sends the kept payment: one payment, not two.
      const rerun = await cli([
        "pay",
        "--key-file",
        "d1.key",
        "--payee",
        PAYEE,
        "--amount",
        "1000000",
        "--ref",
        "order-1",
        ...R,
        "--json",
      ]);
      expect(rerun.code, rerun.stderr).to.equal(0);
      expect(rerun.stderr).to.include("re-sending");
      expect(JSON.parse(rerun.stdout)).to.include({ id: first.id, status: "settled", duplicate: true });

      const logs = await client.getLogs({ address: dep.machinePay, fromBlock: 0n });
      const mine = settlementsOf(logs as never, dep.machinePay).filter(
        (s) => s.eventName === "PaymentSettled" && s.device.toLowerCase() === state.d1!.toLowerCase(),
      );
      expect(mine.map((s) => (s as { amount: bigint }).amount).sort()).to.deep.equal([1_000_000n, 2_000_000n]);

      const listed = await json<{ payments: { id: Hex }[] }>(["payments", "list", ...R]);
      expect(listed.payments.map((p) => p.id)).to.include.members([first.id, second.id]);
      const batches = await json<{ batches: { id: number; status: string }[] }>(["batches", "list", ...R]);
      expect(batches.batches.length).to.be.greaterThan(0);
      const detail = await json<{ itemIds: Hex[] }>(["batches", "show", String(batches.batches.at(-1)!.id), ...R]);
      expect(detail.itemIds).to.include(first.id);

      const headroom = await json<{ source: string; status: string }>(["device", "show", state.d1!, ...R]);
      expect(headroom).to.include({ source: "relayer", status: "None" });

      const tabArgs = ["--key-file", "d1.key", "--payee", PAYEE, "--tab-id", "7", ...R];
      expect((await json<{ status: string }>(["tab", "pay", ...tabArgs, "--amount", "1000"])).status).to.equal(
        "accepted",
      );
      const v2 = await json<{ status: string; voucher: { cumulative: string } }>([
        "tab",
        "pay",
        ...tabArgs,
        "--amount",
        "500",
      ]);
      expect(v2.voucher.cumulative).to.equal("1500");
      expect((await json<{ pending: string }>(["tab", "show", ...tabArgs])).pending).to.equal("1500");

      const refused = await cli(["settle", ...R]);
      expect(refused.code).to.equal(2);
      expect(refused.stderr).to.include("MACHINEPAY_ADMIN_TOKEN");
      const settled = await json<{ batches: number[] }>(["settle", ...R], { MACHINEPAY_ADMIN_TOKEN: ADMIN_TOKEN });
      expect(settled.batches.length).to.be.greaterThan(0);
      await poll(
        "tab 7",
        () => view<{ settled: bigint }>("getTab", [state.d1, PAYEE, dep.tokens.USDC, 7n]),
        (t) => t.settled === 1500n,
      );

      // The payee closes a tab at once; the device closes one by signature, after the notice period.
      writeFileSync(join(dir, "payee.key"), `${PAYEE_KEY}\n`, { mode: 0o600 });
      const closed = await json<{ closesAt: number }>([
        "tab",
        "close",
        "--key-file",
        "payee.key",
        "--device",
        state.d1!,
        "--payee",
        PAYEE,
        "--tab-id",
        "7",
      ]);
      const head = await client.getBlock();
      expect(closed.closesAt).to.equal(Number(head.timestamp));
      const bySignature = await json<{ closesAt: number }>([
        "tab",
        "close",
        "--dev",
        "--device-key",
        "d1.key",
        "--payee",
        PAYEE,
        "--tab-id",
        "8",
      ]);
      expect(bySignature.closesAt).to.equal(Number((await client.getBlock()).timestamp) + 60);
      expect(
        Number((await view<{ closesAt: number }>("getTab", [state.d1, PAYEE, dep.tokens.USDC, 8n])).closesAt),
      ).to.equal(bySignature.closesAt);

      const status = await json<{ ok: boolean; queueDepth: number; lastBatch: unknown; chainHead: number }>([
        "status",
        "--rpc",
        node.url,
        ...R,
      ]);
      expect(status.ok).to.equal(true);
      expect(status.queueDepth).to.be.a("number");
      expect(status.lastBatch).to.not.equal(null);
      expect(status.chainHead).to.be.greaterThan(0);
    });

    it("onboard signs one Onboarding for key files and proofs, and the relayer puts it on chain (no owner gas)", async () => {
      const d3 = (await json<{ address: Address }>(["device", "new", "--out", "d3.key"])).address;
      const d4 = (await json<{ address: Address }>(["device", "new", "--out", "d4.key"])).address;
      expect(
        (await cli(["device", "enroll", "--key-file", "d4.key", "--owner", OWNER, "--out", "d4.proof.json"])).code,
      ).to.equal(0);
      writeFileSync(join(dir, "fleet.txt"), "# key files are signed here, proofs are checked\nd3.key\nd4.proof.json\n");
      const ownerBalance = await client.getBalance({ address: OWNER });
      const r = await json<{ id: Hex; status: string; devices: Address[]; policyId: number }>([
        "onboard",
        "--dev",
        "--devices",
        "fleet.txt",
        "--max-per-payment",
        "1000000",
        "--max-per-period",
        "5000000",
        "--lifetime-max",
        "100000000",
        "--relayer",
        relayerUrl,
        "--out",
        "onboarding.json",
        "--wait",
      ]);
      expect(r.status).to.equal("confirmed");
      expect(r.devices).to.deep.equal([d3, d4]);
      const [a, b] = await Promise.all([d3, d4].map((d) => view<{ policyId: number }>("getDevice", [d])));
      expect(a.policyId).to.be.greaterThan(0);
      expect(b.policyId).to.equal(a.policyId);
      expect(r.policyId).to.equal(a.policyId);
      expect((await view<{ owner: Address }>("getPolicy", [a.policyId])).owner).to.equal(OWNER);
      expect(await client.getBalance({ address: OWNER }), "the owner paid no gas").to.equal(ownerBalance);
      const written = JSON.parse(readFileSync(join(dir, "onboarding.json"), "utf8"));
      expect(written.proofs).to.have.length(2);
    });

    it("freeze (owner key from a keystore) stops every policy; withdraw announce and cancel; revoke needs --yes", async () => {
      const passphrase = "correct horse battery staple";
      writeFileSync(
        join(dir, "owner.json"),
        keystore("0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80", passphrase),
      );
      const [frozen, wrong, unconfirmed] = await Promise.all([
        json<{ epoch: number }>(["freeze", "--keystore", "owner.json"], { MACHINEPAY_KEYSTORE_PASSPHRASE: passphrase }),
        cli(["freeze", "--keystore", "owner.json"], { MACHINEPAY_KEYSTORE_PASSPHRASE: "wrong" }),
        cli(["device", "revoke", state.d2!, "--dev"]),
      ]);
      expect(wrong.code).to.equal(2);
      expect(wrong.stderr).to.include("passphrase");
      expect(unconfirmed.code).to.equal(2);
      expect(unconfirmed.stderr).to.include("--yes");
      expect(frozen.epoch).to.equal(1);
      expect(await view<number>("ownerEpoch", [OWNER])).to.equal(1);
      expect((await json<{ status: string }>(["device", "show", state.d1!])).status).to.equal("PolicyFrozen");

      const announced = await json<{ readyAt: number }>(["withdraw", "announce", "--amount", "5", "--dev"]);
      const pending = await view<{ amount: bigint; readyAt: bigint }>("pendingWithdrawal", [OWNER, dep.tokens.USDC]);
      expect(pending.amount).to.equal(5n);
      expect(Number(pending.readyAt)).to.equal(announced.readyAt);
      const early = await cli(["withdraw", "execute", "--dev"]);
      expect(early.code).to.equal(1);
      expect(early.stderr).to.include("WithdrawalNotReady");
      await json(["withdraw", "cancel", "--dev"]);
      expect((await view<{ amount: bigint }>("pendingWithdrawal", [OWNER, dep.tokens.USDC])).amount).to.equal(0n);

      await json(["device", "revoke", state.d2!, "--dev", "--yes"]);
      expect((await json<{ status: string }>(["device", "show", state.d2!])).status).to.equal("DeviceRevoked");
    });

    it("a bad flag, a bad value or a missing key file exits 2 naming it; a contract refusal exits 1 naming the error", async () => {
      // [arguments, exit code, what stderr must name]; independent, so they run side by side.
      const cases: [string[], number, string][] = [
        [["policy", "create", "--dev", "--bogus"], 2, "--bogus"],
        [["fund", "--dev", "--amount", "1.5"], 2, "1.5"],
        [["fund", "--key-file", "missing.key", "--amount", "1"], 2, "missing.key"],
        [["freeze"], 2, "--key-file"],
        [["pay", "--dev", "--payee", PAYEE, "--amount", "1"], 2, "--dev"],
        [["policy", "show", "1", "--deployment", "nowhere.json"], 2, "nowhere.json"],
        [["device", "pause", "0x0000000000000000000000000000000000000001", "--dev"], 1, "DeviceNotRegistered"],
        [["policy", "show", "1", "--rpc", "http://127.0.0.1:9"], 1, "http://127.0.0.1:9"],
      ];
      const runs = await Promise.all(cases.map(([args]) => cli(args)));
      for (const [i, [args, code, named]] of cases.entries()) {
        expect(runs[i].code, `machinepay ${args.join(" ")}: ${runs[i].stderr}`).to.equal(code);
        expect(runs[i].stderr, `machinepay ${args.join(" ")}`).to.include(named);
      }
    });

    it("--help of every command shows an Example", async () => {
      const missing: string[] = [];
      const walk = (c: Command, path: string[]) => {
        let out = "";
        c.configureOutput({ writeOut: (s) => (out += s), writeErr: (s) => (out += s) });
        c.outputHelp();
        if (!out.includes("Example")) missing.push([...path, c.name()].join(" "));
        for (const sub of c.commands) walk(sub, [...path, c.name()]);
      };
      walk(program(), []);
      expect(missing, "commands without an example").to.deep.equal([]);
      const child = await cli(["tab", "pay", "--help"]);
      expect(child.code).to.equal(0);
      expect(child.stdout).to.include("Example");
    });
  });

/** A Web3 Secret Storage v3 keystore (scrypt, aes-128-ctr), as geth and ethers write it; small N for speed. */
function keystore(key: Hex, passphrase: string): string {
  const salt = randomBytes(32);
  const iv = randomBytes(16);
  const kdfparams = { dklen: 32, n: 1024, r: 8, p: 1, salt: salt.toString("hex") };
  const derived = scryptSync(Buffer.from(passphrase.normalize("NFKC")), salt, 32, { N: 1024, r: 8, p: 1 });
  const cipher = createCipheriv("aes-128-ctr", derived.subarray(0, 16), iv);
  const ciphertext = Buffer.concat([cipher.update(Buffer.from(key.slice(2), "hex")), cipher.final()]);
  const mac = keccak256(Buffer.concat([derived.subarray(16, 32), ciphertext])).slice(2);
  return JSON.stringify({
    version: 3,
    id: randomUUID(),
    address: privateKeyToAccount(key).address.slice(2).toLowerCase(),
    crypto: {
      cipher: "aes-128-ctr",
      ciphertext: ciphertext.toString("hex"),
      cipherparams: { iv: iv.toString("hex") },
      kdf: "scrypt",
      kdfparams,
      mac,
    },
  });
}
