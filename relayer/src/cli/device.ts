/**
 * Device commands: make a key, sign its Enrollment for an owner, pay through the relayer (nonces
 * reserved durably in a file before signing, retries that cannot double-pay), and tabs (cumulative
 * vouchers): pay, show, close.
 */
import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import {
  type Address,
  DevicePayer,
  type Hex,
  type MachinePayDomain,
  machinePayDomain,
  NonceManager,
  RelayerClient,
  RelayerError,
  type SignedPayment,
  type SignedPaymentJson,
  type SubmitResult,
  signEnrollment,
  signTypedMessage,
  Tab,
  tabCloseTypes,
  toCompactSignature,
  toSignedPaymentJson,
  toSignedVoucherJson,
} from "@machinepay/sdk";
import { FileNonceBackend } from "@machinepay/sdk/node";
import { type Command, Option } from "commander";
import { getAddress, isAddress, zeroAddress } from "viem";
import { loadDeployment } from "../config";
import { connectSigner, readMachinePay, resolveToken, send } from "./chain";
import { domainOf, type ProofFile } from "./enroll";
import { loadKey, writeNewKeyFile } from "./keys";
import {
  addChain,
  addJson,
  addKey,
  addRelayer,
  type ChainOptions,
  example,
  type JsonOption,
  type KeyOptions,
  parseAddress,
  parseBigUint,
  parseDuration,
  parseRef,
  parseUint,
  parseUnits,
  withDefault,
} from "./options";
import { action, emit, keyValues, note, RuntimeError, UsageError } from "./output";

type DeviceOpts = KeyOptions & JsonOption & { relayer: string; deployment?: string };

/** The deployment file to use: the one given, else ./deployment.json if present, else none (ask the relayer). */
function deploymentPath(given?: string): string | undefined {
  if (given) return given;
  return existsSync("deployment.json") ? "deployment.json" : undefined;
}

/** EIP-712 domain and known tokens: from the deployment file, or from the relayer's /v1/info. */
async function domainAndTokens(
  opts: { deployment?: string },
  client: RelayerClient,
): Promise<{ domain: MachinePayDomain; tokens: Record<string, string> }> {
  const path = deploymentPath(opts.deployment);
  if (path) {
    const d = loadDeployment(path);
    return { domain: domainOf(d), tokens: d.tokens };
  }
  const info = await client.info();
  return {
    domain: machinePayDomain({
      chainId: info.domain.chainId,
      verifyingContract: getAddress(info.domain.verifyingContract),
    }),
    tokens: info.tokens,
  };
}

/** --token (symbol, address, native), else the token of the device's policy as the relayer sees it. */
async function deviceToken(
  spec: string | undefined,
  tokens: Record<string, string>,
  device: Address,
  client: RelayerClient,
): Promise<Address> {
  if (spec !== undefined) {
    if (/^(native|eth)$/i.test(spec)) return zeroAddress;
    if (isAddress(spec, { strict: false })) return getAddress(spec);
    const hit = Object.entries(tokens).find(([s]) => s.toLowerCase() === spec.toLowerCase());
    if (!hit)
      throw new UsageError(
        `unknown token ${spec}: give an address, native, or one of ${Object.keys(tokens).join(", ") || "(none known)"}`,
      );
    return getAddress(hit[1]);
  }
  const h = await client.headroom(device);
  if (h.status === "UnknownDevice") {
    throw new RuntimeError(
      `${device} is not registered on this deployment: \`machinepay device register\` it first (or pass --token)`,
    );
  }
  if (h.status === "DeviceRevoked") throw new RuntimeError(`${device} is revoked for good: it can never pay again`);
  return getAddress(h.token);
}

const keyPath = (o: KeyOptions) => (o.keyFile ?? o.keystore) as string;

type Outbox = Record<string, SignedPaymentJson & { id: Hex }>;

function readOutbox(file: string): Outbox {
  if (!existsSync(file)) return {};
  try {
    return JSON.parse(readFileSync(file, "utf8")) as Outbox;
  } catch {
    throw new UsageError(`${file} is not valid JSON: restore it from a backup or move it away`);
  }
}

/** Kept payments are forgotten a week after their deadline (long after they could settle). */
const OUTBOX_KEEP_SECONDS = 7 * 86_400;

/** Write-then-rename, so a crash leaves the old file or the new one. */
function writeOutbox(file: string, outbox: Outbox): void {
  const cutoff = BigInt(Math.floor(Date.now() / 1000) - OUTBOX_KEEP_SECONDS);
  const kept = Object.fromEntries(Object.entries(outbox).filter(([, v]) => BigInt(v.payment.deadline) > cutoff));
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(kept, null, 2)}\n`, { mode: 0o600 });
  renameSync(tmp, file);
}

function fromJson(kept: SignedPaymentJson & { id: Hex }): SignedPayment {
  const p = kept.payment;
  return {
    id: kept.id,
    signature: kept.signature,
    payment: {
      payee: p.payee,
      token: p.token,
      amount: BigInt(p.amount),
      nonce: BigInt(p.nonce),
      deadline: BigInt(p.deadline),
      maxFee: BigInt(p.maxFee),
      ref: p.ref,
    },
  };
}

function describeResult(r: SubmitResult): string {
  const extra = [r.reason, r.message, r.newest && `newest ${r.newest}`, r.duplicate && "already known"].filter(Boolean);
  return `${r.id} ${r.status}${extra.length ? ` (${extra.join("; ")})` : ""}`;
}

async function pay(
  opts: DeviceOpts & {
    payee: Address;
    amount: bigint;
    token?: string;
    ref?: `0x${string}`;
    maxFee: bigint;
    validFor: number;
    nonces?: string;
    wait?: boolean;
    timeout: number;
  },
) {
  const account = await loadKey(opts, { whose: "the device's", allowDev: false });
  const client = new RelayerClient({ url: opts.relayer });
  const { domain, tokens } = await domainAndTokens(opts, client);
  const token = await deviceToken(opts.token, tokens, account.address, client);
  const nonceFile = opts.nonces ?? `${keyPath(opts)}.nonces.json`;
  let start = 0n;
  if (!existsSync(nonceFile)) {
    // A device whose nonce file is new (or lost) continues above what already settled.
    const h = await client.headroom(account.address);
    start = h.nonceTop > 0 ? BigInt(h.nonceTop) + 1n : 0n;
    note(`no nonce file ${nonceFile} yet: starting at nonce ${start}`);
  }
  const payer = new DevicePayer({
    signer: account,
    address: account.address,
    domain,
    token,
    nonces: new NonceManager({ backend: new FileNonceBackend(nonceFile), start }),
    client,
    validForSeconds: opts.validFor,
  });
  // With --ref, the signed payment is kept until it settles, so running the same pay again (after a
  // timeout, a crash) re-sends that payment instead of signing a second one.
  const outboxFile = `${keyPath(opts)}.payments.json`;
  const intent = opts.ref ? `${opts.payee}:${token}:${opts.amount}:${opts.ref}`.toLowerCase() : undefined;
  const outbox = intent ? readOutbox(outboxFile) : {};
  let signed: SignedPayment | undefined;
  const kept = intent ? outbox[intent] : undefined;
  if (kept) {
    const known = await client.status(kept.id).then(
      (s) => s.status,
      (e) => {
        if (e instanceof RelayerError && e.status === 404) return undefined;
        throw e;
      },
    );
    const live = BigInt(kept.payment.deadline) > BigInt(Math.floor(Date.now() / 1000));
    if (known !== "rejected" && (known !== undefined || live)) {
      signed = fromJson(kept);
      note(`re-sending payment ${kept.id} (same payee, amount, token and --ref; ${known ?? "not at the relayer yet"})`);
    }
  }
  if (!signed) {
    signed = await payer.sign({ payee: opts.payee, amount: opts.amount, ref: opts.ref, maxFee: opts.maxFee });
    if (intent)
      writeOutbox(outboxFile, {
        ...outbox,
        [intent]: { id: signed.id, ...toSignedPaymentJson(signed.payment, signed.signature) },
      });
  }
  const { id, payment } = signed;
  const result = await payer.submit(signed);
  if (result.status === "rejected") {
    throw new RuntimeError(`payment ${id} rejected: ${result.reason}${result.message ? ` (${result.message})` : ""}`);
  }
  let status: Record<string, unknown> = { ...result };
  if (opts.wait) status = { ...(await client.waitForSettlement(id, { timeoutMs: opts.timeout * 1000 })) };
  const data = { ...status, id, device: account.address, payment };
  emit(opts, data, () =>
    opts.wait
      ? `payment ${id} settled in block ${status.blockNumber} (tx ${status.txHash})`
      : `payment ${describeResult(result)}; nonce ${payment.nonce}`,
  );
}

function tabCommandOptions(cmd: Command): Command {
  return cmd
    .requiredOption("--payee <address>", "the tab's payee", parseAddress)
    .requiredOption("--tab-id <id>", "the tab's id (any number the device picks per payee)", parseBigUint)
    .option("--token <token>", "symbol, address or native (default the device's policy token)");
}

export function deviceCommands(cli: Command, device: Command): void {
  const created = addJson(
    device.command("new").description("make a device key: writes a key file (mode 0600), prints the address"),
  )
    .requiredOption("--out <file>", "where to write the key file")
    .option("--force", "replace an existing key file (its key is lost)")
    .action(
      action(async (opts: JsonOption & { out: string; force?: boolean }) => {
        const account = writeNewKeyFile(opts.out, opts.force);
        emit(opts, { address: account.address, keyFile: opts.out }, () => account.address);
      }),
    );
  example(created, "machinepay device new --out meter-1.key");

  const enroll = addJson(
    addKey(
      device
        .command("enroll")
        .description("sign the device key's Enrollment for an owner: the proof `device register` and `onboard` need"),
      "the device's",
      false,
    ),
  )
    .requiredOption("--owner <address>", "the owner that will register the device", parseAddress)
    .addOption(
      new Option("--deployment <file>", "deployment file").env("MACHINEPAY_DEPLOYMENT").default("deployment.json"),
    )
    .option("--out <file>", "write the proof to this file (else print it)")
    .action(
      action(async (opts: KeyOptions & JsonOption & { owner: Address; deployment: string; out?: string }) => {
        const d = loadDeployment(opts.deployment);
        const account = await loadKey(opts, { whose: "the device's", allowDev: false });
        const proof = await signEnrollment({ signer: account, domain: domainOf(d), owner: opts.owner });
        const file: ProofFile = {
          device: account.address,
          owner: opts.owner,
          chainId: d.chainId,
          machinePay: getAddress(d.machinePay),
          ...proof,
        };
        if (opts.out) writeFileSync(opts.out, `${JSON.stringify(file, null, 2)}\n`);
        if (opts.out && !opts.json)
          process.stdout.write(`wrote ${opts.out}: ${account.address} enrolled for ${opts.owner}\n`);
        else process.stdout.write(`${JSON.stringify(file, null, 2)}\n`);
      }),
    );
  example(enroll, "machinepay device enroll --key-file meter-1.key --owner 0xOWNER --out meter-1.proof.json");

  const payCmd = addJson(
    addRelayer(
      addKey(
        cli.command("pay").description("sign a payment with a device key and submit it to the relayer"),
        "the device's",
        false,
      ),
    ),
  )
    .requiredOption("--payee <address>", "who is paid", parseAddress)
    .requiredOption("--amount <units>", "token units (1 USDC = 1000000)", parseUnits)
    .option("--token <token>", "symbol, address or native (default the device's policy token, from the relayer)")
    .option(
      "--ref <ref>",
      "32 bytes for the payee (0x + 64 hex digits) or a text up to 31 bytes; the same pay with the same --ref re-sends its payment instead of paying twice",
      parseRef,
    )
    .addOption(withDefault("--max-fee <units>", "the most the owner pays the relayer for it", parseUnits, 0n, "0"))
    .addOption(withDefault("--valid-for <duration>", "how long it may settle", parseDuration, 600, "10m"))
    .option("--nonces <file>", "nonce file (default KEYFILE.nonces.json): never share it between two copies of a key")
    .addOption(
      new Option(
        "--deployment <file>",
        "deployment file (default ./deployment.json if present, else the relayer's /v1/info)",
      ).env("MACHINEPAY_DEPLOYMENT"),
    )
    .option("--wait", "wait until it is settled on chain")
    .addOption(withDefault("--timeout <seconds>", "how long --wait waits", parseUint, 120, "120"))
    .action(action(pay));
  example(
    payCmd,
    "machinepay pay --key-file meter-1.key --payee 0xCHARGER --amount 250000 --ref order-17 --relayer http://127.0.0.1:8787 --wait",
  );

  const tab = cli
    .command("tab")
    .description("tabs: a device pays one payee many times with cumulative vouchers; only the newest settles");
  example(tab, "machinepay tab pay --key-file meter-1.key --payee 0xCHARGER --tab-id 1 --amount 1000");
  const tabPay = addJson(
    tabCommandOptions(
      addRelayer(
        addKey(
          tab.command("pay").description("add an amount to a tab and submit the new voucher"),
          "the device's",
          false,
        ),
      ),
    ),
  )
    .requiredOption("--amount <units>", "token units to add to the tab", parseUnits)
    .addOption(
      withDefault("--max-fee <units>", "the most the owner pays the relayer for settling it", parseUnits, 0n, "0"),
    )
    .addOption(withDefault("--valid-for <duration>", "how long the voucher may settle", parseDuration, 3_600, "1h"))
    .option("--state <file>", "where the tab's running total is kept (default KEYFILE.tabs.json)")
    .addOption(
      new Option(
        "--deployment <file>",
        "deployment file (default ./deployment.json if present, else the relayer's /v1/info)",
      ).env("MACHINEPAY_DEPLOYMENT"),
    )
    .action(
      action(
        async (
          opts: DeviceOpts & {
            payee: Address;
            tabId: bigint;
            token?: string;
            amount: bigint;
            maxFee: bigint;
            validFor: number;
            state?: string;
          },
        ) => {
          const account = await loadKey(opts, { whose: "the device's", allowDev: false });
          const client = new RelayerClient({ url: opts.relayer });
          const { domain, tokens } = await domainAndTokens(opts, client);
          const token = await deviceToken(opts.token, tokens, account.address, client);
          const t = new Tab({
            signer: account,
            device: account.address,
            domain,
            payee: opts.payee,
            token,
            tabId: opts.tabId,
            backend: new FileNonceBackend(opts.state ?? `${keyPath(opts)}.tabs.json`),
            validForSeconds: opts.validFor,
            maxFee: opts.maxFee,
          });
          const signed = await t.pay(opts.amount);
          const result = await client.submitVoucher(toSignedVoucherJson(signed.voucher, signed.signature));
          if (result.status === "stale") {
            throw new RuntimeError(
              `the relayer holds a newer voucher of this tab (cumulative ${result.newest}) than this device's state (${signed.voucher.cumulative}): the state file was reset, or another copy of the key signs; restore the state file`,
            );
          }
          if (result.status === "rejected") {
            throw new RuntimeError(
              `voucher ${result.id} rejected: ${result.reason}${result.message ? ` (${result.message})` : ""}`,
            );
          }
          const data = { ...result, device: account.address, voucher: signed.voucher };
          emit(
            opts,
            data,
            () => `voucher ${describeResult(result)}; tab ${opts.tabId} cumulative ${signed.voucher.cumulative}`,
          );
        },
      ),
    );
  example(
    tabPay,
    "machinepay tab pay --key-file meter-1.key --payee 0xCHARGER --tab-id 1 --amount 1000 --relayer http://127.0.0.1:8787",
  );

  const tabShow = addJson(
    tabCommandOptions(
      addRelayer(tab.command("show").description("a tab at the relayer: settled on chain, newest voucher, pending")),
    ),
  )
    .option("--device <address>", "the tab's device", parseAddress)
    .option("--key-file <file>", "or the device's key file (also shows its local running total)")
    .option("--state <file>", "the device's tab state file (default KEYFILE.tabs.json)")
    .addOption(new Option("--deployment <file>", "deployment file (for token symbols)").env("MACHINEPAY_DEPLOYMENT"))
    .action(
      action(
        async (
          opts: JsonOption & {
            relayer: string;
            payee: Address;
            tabId: bigint;
            token?: string;
            device?: Address;
            keyFile?: string;
            state?: string;
            deployment?: string;
          },
        ) => {
          const client = new RelayerClient({ url: opts.relayer });
          let device = opts.device;
          if (!device && opts.keyFile)
            device = (await loadKey({ keyFile: opts.keyFile }, { whose: "the device's", allowDev: false })).address;
          if (!device) throw new UsageError("give --device ADDRESS or --key-file FILE");
          const path = deploymentPath(opts.deployment);
          const tokens = path ? loadDeployment(path).tokens : {};
          const token = await deviceToken(opts.token, tokens, device, client);
          const status = await client.tab(device, opts.payee, token, opts.tabId);
          let local: string | undefined;
          const state = opts.state ?? (opts.keyFile ? `${opts.keyFile}.tabs.json` : undefined);
          if (state && existsSync(state)) {
            const key = `tab:${device}:${opts.payee}:${token}:${opts.tabId}`.toLowerCase();
            local = (await new FileNonceBackend(state).load(key))?.toString();
          }
          const data = { ...status, ...(local !== undefined ? { signedByDevice: local } : {}) };
          emit(opts, data, () => keyValues(Object.entries(data)));
        },
      ),
    );
  example(
    tabShow,
    "machinepay tab show --key-file meter-1.key --payee 0xCHARGER --tab-id 1 --relayer http://127.0.0.1:8787",
  );

  const tabClose = addJson(
    tabCommandOptions(
      addKey(
        addChain(
          tab
            .command("close")
            .description(
              "close a tab on chain: its payee closes it at once; the device's owner, or the device by signature (--device-key, sent by any account that pays the gas), after the notice period",
            ),
        ),
        "the sender's",
      ),
    ),
  )
    .option("--device <address>", "the tab's device", parseAddress)
    .option("--device-key <file>", "the device's key file: the device signs a TabClose and this account submits it")
    .action(
      action(
        async (
          opts: ChainOptions &
            KeyOptions &
            JsonOption & { payee: Address; tabId: bigint; token?: string; device?: Address; deviceKey?: string },
        ) => {
          if (!!opts.device === !!opts.deviceKey)
            throw new UsageError("give exactly one of --device ADDRESS or --device-key FILE");
          const ctx = await connectSigner(opts, "the sender's");
          const token = resolveToken(ctx.deployment, opts.token);
          let device = opts.device as Address;
          if (opts.deviceKey) {
            const key = await loadKey({ keyFile: opts.deviceKey }, { whose: "the device's", allowDev: false });
            device = key.address;
            const deadline = (await ctx.client.getBlock()).timestamp + 600n;
            const signature = await signTypedMessage({
              signer: key,
              domain: domainOf(ctx.deployment),
              types: tabCloseTypes,
              primaryType: "TabClose",
              message: { payee: opts.payee, token, tabId: opts.tabId, deadline },
            });
            const { r, vs } = toCompactSignature(signature);
            await send(ctx, {
              functionName: "closeTabBySignature",
              args: [device, opts.payee, token, opts.tabId, deadline, r, vs],
            });
          } else {
            await send(ctx, { functionName: "closeTab", args: [device, opts.payee, token, opts.tabId] });
          }
          const t = await readMachinePay<{ settled: bigint; closesAt: number }>(ctx, "getTab", [
            device,
            opts.payee,
            token,
            opts.tabId,
          ]);
          const data = {
            device,
            payee: opts.payee,
            token,
            tabId: opts.tabId,
            settled: t.settled,
            closesAt: Number(t.closesAt),
          };
          emit(
            opts,
            data,
            () =>
              `tab ${opts.tabId} closes at ${new Date(Number(t.closesAt) * 1000).toISOString()} (settled ${t.settled})`,
          );
        },
      ),
    );
  example(
    tabClose,
    "machinepay tab close --key-file charger.key --device 0xDEVICE --payee 0xCHARGER --tab-id 1 --rpc http://127.0.0.1:8545",
  );
}
