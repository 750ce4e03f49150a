/**
 * Owner commands: fund the escrow, manage policies, payees and devices, freeze, withdraw with
 * notice, and onboard a fleet by signature (gasless for the owner: a relayer submits it).
 */
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import {
  type Address,
  type DeviceHeadroom,
  machinePayAbi,
  type Onboarding,
  onboardingTypes,
  type PolicyParams,
  REASONS,
  RelayerClient,
  signTypedMessage,
  toOnboardingJson,
} from "@machinepay/sdk";
import { type Command, Option } from "commander";
import { erc20Abi, getAddress, type Hex, parseAbi, parseSignature, zeroAddress } from "viem";
import {
  type ChainContext,
  connectChain,
  connectSigner,
  machinePayEvents,
  readMachinePay,
  resolveToken,
  type SignerContext,
  send,
} from "./chain";
import { domainOf, type EnrolledDevice, enrollFromFile, enrollFromList } from "./enroll";
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
  parseDuration,
  parseUint,
  parseUnits,
  withDefault,
} from "./options";
import { action, emit, keyValues, note, RuntimeError, UsageError } from "./output";
import { addPolicyFlags, hasPolicyFlags, type PolicyFlags, paramsOf, policyFromFlags } from "./policy-flags";

type OwnerOpts = ChainOptions & KeyOptions & JsonOption;

/** A command with --rpc, --deployment, the owner's key and --json. */
function ownerCommand(parent: Command, name: string, description: string): Command {
  const cmd = parent.command(name).description(description);
  addChain(cmd);
  addKey(cmd, "the owner's");
  addJson(cmd);
  return cmd;
}

const tx = (r: { transactionHash: Hex; blockNumber: bigint }) => ({
  txHash: r.transactionHash,
  blockNumber: Number(r.blockNumber),
});

type StoredPolicy = PolicyParams & { owner: Address; epoch: number; paused: boolean };

async function getPolicy(ctx: ChainContext, id: number): Promise<StoredPolicy> {
  const p = await readMachinePay<StoredPolicy>(ctx, "getPolicy", [id]);
  if (p.owner === zeroAddress)
    throw new UsageError(`no policy ${id} on this deployment (\`machinepay policy create\`)`);
  return p;
}

async function ownPolicy(ctx: SignerContext, id: number): Promise<StoredPolicy> {
  const p = await getPolicy(ctx, id);
  if (getAddress(p.owner) !== ctx.account.address) {
    throw new UsageError(`policy ${id} belongs to ${p.owner}, not ${ctx.account.address}: sign with its owner's key`);
  }
  return p;
}

const permitAbi = parseAbi([
  "function nonces(address owner) view returns (uint256)",
  "function eip712Domain() view returns (bytes1 fields, string name, string version, uint256 chainId, address verifyingContract, bytes32 salt, uint256[] extensions)",
]);

/** The token's EIP-2612 domain and the owner's permit nonce, or undefined if it has no permit (EIP-5267 domain). */
async function permitSupport(ctx: SignerContext, token: Address) {
  try {
    const [nonce, domain] = await Promise.all([
      ctx.client.readContract({ address: token, abi: permitAbi, functionName: "nonces", args: [ctx.account.address] }),
      ctx.client.readContract({ address: token, abi: permitAbi, functionName: "eip712Domain" }),
    ]);
    return { nonce, name: domain[1], version: domain[2] };
  } catch {
    return undefined;
  }
}

async function fund(opts: OwnerOpts & { amount: bigint; token?: string; permit: boolean }) {
  if (opts.amount === 0n) throw new UsageError("--amount must be above 0");
  const ctx = await connectSigner(opts);
  const token = resolveToken(ctx.deployment, opts.token);
  const owner = ctx.account.address;
  let method: "native" | "permit" | "approve";
  let receipt: Awaited<ReturnType<typeof send>>;
  if (token === zeroAddress) {
    method = "native";
    receipt = await send(ctx, { functionName: "deposit", args: [token, opts.amount], value: opts.amount });
  } else {
    const held = await ctx.client.readContract({
      address: token,
      abi: erc20Abi,
      functionName: "balanceOf",
      args: [owner],
    });
    if (held < opts.amount) {
      throw new RuntimeError(
        `${owner} holds ${held} units of ${token}, less than --amount ${opts.amount}: get tokens first`,
      );
    }
    const permit = opts.permit ? await permitSupport(ctx, token) : undefined;
    if (permit) {
      method = "permit";
      const head = await ctx.client.getBlock();
      const deadline = head.timestamp + 3_600n;
      const signature = await ctx.account.signTypedData({
        domain: {
          name: permit.name,
          version: permit.version,
          chainId: ctx.deployment.chainId,
          verifyingContract: token,
        },
        types: {
          Permit: [
            { name: "owner", type: "address" },
            { name: "spender", type: "address" },
            { name: "value", type: "uint256" },
            { name: "nonce", type: "uint256" },
            { name: "deadline", type: "uint256" },
          ],
        },
        primaryType: "Permit",
        message: { owner, spender: ctx.machinePay, value: opts.amount, nonce: permit.nonce, deadline },
      });
      const { r, s, v, yParity } = parseSignature(signature);
      receipt = await send(ctx, {
        functionName: "depositWithPermit",
        args: [owner, token, opts.amount, deadline, Number(v ?? BigInt(yParity + 27)), r, s],
      });
    } else {
      method = "approve";
      const allowance = await ctx.client.readContract({
        address: token,
        abi: erc20Abi,
        functionName: "allowance",
        args: [owner, ctx.machinePay],
      });
      if (allowance < opts.amount) {
        await send(ctx, {
          address: token,
          abi: erc20Abi,
          functionName: "approve",
          args: [ctx.machinePay, opts.amount],
        });
      }
      receipt = await send(ctx, { functionName: "deposit", args: [token, opts.amount] });
    }
  }
  const balance = await readMachinePay<bigint>(ctx, "balanceOf", [owner, token]);
  const data = { account: owner, token, amount: opts.amount, method, balance, ...tx(receipt) };
  emit(
    opts,
    data,
    () =>
      `deposited ${opts.amount} units of ${token} (${method}); escrow balance ${balance} (tx ${receipt.transactionHash})`,
  );
}

function policyRows(id: number, p: StoredPolicy, frozen: boolean, payees?: Address[]): [string, unknown][] {
  return [
    ["policy", id],
    ["owner", p.owner],
    ["token", p.token],
    ["maxPerPayment", p.maxPerPayment],
    ["maxPerPeriod", p.maxPerPeriod],
    ["periodLength", `${p.periodLength} s`],
    ["lifetimeMax", p.lifetimeMax],
    ["validFrom", p.validFrom],
    ["validUntil", p.validUntil || "0 (no end)"],
    ["payeesRestricted", p.payeesRestricted],
    ["paused", p.paused],
    ["frozen", frozen],
    ...(payees ? ([["payees", payees.length ? payees.join(", ") : "(none listed)"]] as [string, unknown][]) : []),
  ];
}

/** The policy's allow-list, replayed from its PayeesSet events (views cannot enumerate a mapping). */
async function allowList(ctx: ChainContext, id: number): Promise<Address[] | undefined> {
  try {
    const logs = await ctx.client.getContractEvents({
      address: ctx.machinePay,
      abi: machinePayAbi,
      eventName: "PayeesSet",
      args: { policyId: id },
      fromBlock: BigInt(ctx.deployment.deploymentBlock),
    });
    const set = new Map<string, Address>();
    for (const log of logs) {
      const { payees, allowed } = log.args as { payees: Address[]; allowed: boolean };
      for (const p of payees) allowed ? set.set(p.toLowerCase(), getAddress(p)) : set.delete(p.toLowerCase());
    }
    return [...set.values()];
  } catch (e) {
    note(`could not read the allow-list from PayeesSet logs: ${(e as Error).message.split("\n")[0]}`);
    return undefined;
  }
}

async function showPolicy(ctx: ChainContext, id: number, opts: JsonOption) {
  const p = await getPolicy(ctx, id);
  const epoch = await readMachinePay<number>(ctx, "ownerEpoch", [p.owner]);
  const frozen = p.epoch < epoch;
  const payees = p.payeesRestricted ? await allowList(ctx, id) : undefined;
  emit(opts, { policyId: id, ...p, frozen, ...(payees ? { payees } : {}) }, () =>
    keyValues(policyRows(id, p, frozen, payees)),
  );
}

async function registerDevices(
  opts: OwnerOpts & PolicyFlags & { deviceKey?: string[]; proof?: string[]; policy?: number },
) {
  const ctx = await connectSigner(opts);
  const owner = ctx.account.address;
  const files = [...(opts.deviceKey ?? []), ...(opts.proof ?? [])];
  if (files.length === 0)
    throw new UsageError(
      "give the device: --device-key FILE (its key file) or --proof FILE (from `machinepay device enroll`)",
    );
  const devices: EnrolledDevice[] = [];
  for (const f of files) devices.push(await enrollFromFile(f, owner, ctx.deployment));
  let policyId: number;
  let receipt: Awaited<ReturnType<typeof send>>;
  if (opts.policy !== undefined) {
    if (hasPolicyFlags(opts))
      throw new UsageError(
        "--policy assigns to an existing policy: drop the policy flags, or `machinepay policy update` it",
      );
    await ownPolicy(ctx, opts.policy);
    policyId = opts.policy;
    receipt = await send(ctx, {
      functionName: "assignDevices",
      args: [policyId, devices.map((d) => d.device), devices.map((d) => d.proof)],
    });
  } else {
    if (devices.length !== 1)
      throw new UsageError(
        "without --policy, register one device at a time (it gets a policy of its own), or pass --policy ID",
      );
    const params = policyFromFlags(ctx.deployment, opts);
    receipt = await send(ctx, { functionName: "registerDevice", args: [devices[0].device, params, devices[0].proof] });
    const ev = machinePayEvents(ctx, receipt).find((e) => e.eventName === "DeviceAssigned");
    policyId = Number(ev?.args.policyId);
  }
  const data = { owner, policyId, devices: devices.map((d) => d.device), ...tx(receipt) };
  emit(opts, data, () => `registered ${data.devices.join(", ")} on policy ${policyId} (tx ${receipt.transactionHash})`);
}

async function headroomFromChain(ctx: ChainContext, device: Address) {
  const [h, d] = await Promise.all([
    readMachinePay<Record<string, unknown> & { status: number; policyId: number }>(ctx, "headroom", [device]),
    readMachinePay<{ paused: boolean; policyId: number }>(ctx, "getDevice", [device]),
  ]);
  return {
    device,
    source: "chain",
    status: REASONS[h.status] ?? String(h.status),
    policyId: h.policyId,
    owner: h.owner,
    token: h.token,
    perPayment: h.perPayment,
    period: h.period,
    lifetime: h.lifetime,
    balance: h.balance,
    spendable: h.spendable,
    periodEndsAt: Number(h.periodEndsAt),
    nonceTop: h.nonceTop,
    paused: d.paused,
  };
}

async function showDevice(device: Address, opts: Partial<ChainOptions> & JsonOption & { relayer?: string }) {
  let data: Record<string, unknown>;
  if (opts.relayer) {
    const h: DeviceHeadroom = await new RelayerClient({ url: opts.relayer, attempts: 3 }).headroom(device);
    data = { ...h, source: "relayer" };
  } else {
    if (!opts.rpc)
      throw new UsageError("give --relayer URL (headroom net of pending payments) or --rpc URL (chain views)");
    data = await headroomFromChain(await connectChain(opts as ChainOptions), device);
  }
  emit(opts, data, () => keyValues(Object.entries(data)));
}

async function onboard(
  opts: OwnerOpts &
    PolicyFlags & {
      devices: string;
      policy?: number;
      relayer: string;
      submit: boolean;
      out?: string;
      validFor: number;
      wait?: boolean;
      timeout: number;
    },
) {
  if (!opts.submit && !opts.out)
    throw new UsageError("--no-submit needs --out FILE (where to write the signed onboarding)");
  if (!opts.submit && opts.wait) throw new UsageError("--wait waits for the relayer: drop --no-submit");
  const ctx = await connectSigner(opts);
  const owner = ctx.account.address;
  const devices = await enrollFromList(opts.devices, owner, ctx.deployment);
  if (devices.length > 400) {
    throw new UsageError(
      `${devices.length} devices do not fit one transaction's gas: onboard up to 400, then the rest with --policy ID`,
    );
  }
  let params: PolicyParams;
  if (opts.policy !== undefined)
    params = policyFromFlags(ctx.deployment, opts, paramsOf(await ownPolicy(ctx, opts.policy)));
  else params = policyFromFlags(ctx.deployment, opts);
  const epoch = await readMachinePay<number>(ctx, "ownerEpoch", [owner]);
  let nonce: bigint;
  do nonce = BigInt(`0x${randomBytes(8).toString("hex")}`);
  while (await readMachinePay<boolean>(ctx, "ownerNonceUsed", [owner, nonce]));
  const head = await ctx.client.getBlock();
  const onboarding: Onboarding = {
    owner,
    policyId: opts.policy ?? 0,
    policy: params,
    devices: devices.map((d) => d.device),
    epoch,
    nonce,
    deadline: head.timestamp + BigInt(opts.validFor),
  };
  const signature = await signTypedMessage({
    signer: ctx.account,
    domain: domainOf(ctx.deployment),
    types: onboardingTypes,
    primaryType: "Onboarding",
    message: onboarding as unknown as Record<string, unknown>,
  });
  const json = toOnboardingJson(
    onboarding,
    devices.map((d) => d.proof),
    signature,
  );
  if (opts.out) writeFileSync(opts.out, `${JSON.stringify(json, null, 2)}\n`);
  let receipt: { id: Hex; status: string } | undefined;
  let final: Record<string, unknown> | undefined;
  if (opts.submit) {
    const client = new RelayerClient({ url: opts.relayer });
    receipt = await client.submitOnboarding(json);
    if (opts.wait) {
      const until = Date.now() + opts.timeout * 1000;
      for (;;) {
        const s = await client.onboardingStatus(receipt.id);
        if (s.status === "confirmed" || s.status === "failed" || Date.now() > until) {
          final = s;
          break;
        }
        await new Promise((r) => setTimeout(r, 1000));
      }
      if (final.status === "failed")
        throw new RuntimeError(`onboarding ${receipt.id} failed: ${final.error ?? "see the relayer's log"}`);
      if (final.status !== "confirmed")
        throw new RuntimeError(`onboarding ${receipt.id} still ${final.status} after ${opts.timeout} s`);
    }
  }
  // Once confirmed, the policy the devices landed on (a new one when policyId was 0).
  const policyId =
    final?.status === "confirmed"
      ? (await readMachinePay<{ policyId: number }>(ctx, "getDevice", [onboarding.devices[0]])).policyId
      : onboarding.policyId;
  const data = {
    owner,
    devices: onboarding.devices,
    policyId,
    nonce: onboarding.nonce,
    deadline: onboarding.deadline,
    ...(opts.out ? { file: opts.out } : {}),
    ...(receipt ? { id: receipt.id, status: final?.status ?? receipt.status } : {}),
  };
  emit(opts, data, () =>
    [
      `signed an onboarding of ${devices.length} device(s) to ${onboarding.policyId ? `policy ${onboarding.policyId}` : "a new policy"}`,
      opts.out ? `wrote ${opts.out} (anyone may submit it: MachinePay.onboardBySignature)` : "",
      receipt ? `relayer: ${receipt.id} ${data.status}${final ? `: the devices are on policy ${policyId}` : ""}` : "",
    ].filter(Boolean),
  );
}

/** Owner commands; the `device` group is shared with the device-side commands. */
export function ownerCommands(cli: Command, device: Command): void {
  const fundCmd = ownerCommand(
    cli,
    "fund",
    "deposit tokens into the owner's escrow (EIP-2612 permit where the token has it)",
  )
    .requiredOption("--amount <units>", "token units to deposit (1 USDC = 1000000)", parseUnits)
    .option("--token <token>", "a symbol of the deployment file, an address, or native (default USDC)")
    .option("--no-permit", "approve, then deposit (two transactions) even if the token supports permit")
    .action(action(fund));
  example(fundCmd, "machinepay fund --rpc http://127.0.0.1:8545 --dev --amount 1000000000   # 1,000 USDC");

  const policy = cli.command("policy").description("spending policies: create, update, show");
  example(policy, "machinepay policy show 1 --rpc http://127.0.0.1:8545");
  const create = addPolicyFlags(ownerCommand(policy, "create", "create a policy owned by this account")).action(
    action(async (opts: OwnerOpts & PolicyFlags) => {
      const ctx = await connectSigner(opts);
      const params = policyFromFlags(ctx.deployment, opts);
      const receipt = await send(ctx, { functionName: "createPolicy", args: [params] });
      const ev = machinePayEvents(ctx, receipt).find((e) => e.eventName === "PolicySet");
      const policyId = Number(ev?.args.policyId);
      emit(
        opts,
        { policyId, ...params, ...tx(receipt) },
        () => `created policy ${policyId} (tx ${receipt.transactionHash})`,
      );
    }),
  );
  example(
    create,
    "machinepay policy create --dev --rpc http://127.0.0.1:8545 --max-per-payment 10000000 --max-per-period 100000000 --period 1d --lifetime-max 1000000000",
  );
  const update = addPolicyFlags(
    ownerCommand(
      policy,
      "update",
      "change a policy for all its devices at once (flags not given keep their value; thaws a frozen policy)",
    ),
  )
    .argument("<policyId>", "the policy", parseUint)
    .action(
      action(async (id: number, opts: OwnerOpts & PolicyFlags) => {
        const ctx = await connectSigner(opts);
        const params = policyFromFlags(ctx.deployment, opts, paramsOf(await ownPolicy(ctx, id)));
        const receipt = await send(ctx, { functionName: "updatePolicy", args: [id, params] });
        emit(
          opts,
          { policyId: id, ...params, ...tx(receipt) },
          () => `updated policy ${id} (tx ${receipt.transactionHash})`,
        );
      }),
    );
  example(update, "machinepay policy update 1 --dev --max-per-period 200000000");
  const show = addJson(addChain(policy.command("show").description("show a policy, its state and its allow-list")))
    .argument("<policyId>", "the policy", parseUint)
    .action(
      action(async (id: number, opts: ChainOptions & JsonOption) => showPolicy(await connectChain(opts), id, opts)),
    );
  example(show, "machinepay policy show 1 --rpc http://127.0.0.1:8545 --json");

  const payees = cli
    .command("payees")
    .description("a policy's payee allow-list (used when the policy is --payees-restricted)");
  example(payees, "machinepay payees allow 1 0xCHARGER --dev --rpc http://127.0.0.1:8545");
  for (const [name, allowed] of [
    ["allow", true],
    ["remove", false],
  ] as const) {
    const cmd = ownerCommand(
      payees,
      name,
      allowed ? "add payees to a policy's allow-list" : "remove payees from a policy's allow-list",
    )
      .argument("<policyId>", "the policy", parseUint)
      .argument("<payees...>", "payee addresses", (v: string, prev: Address[] = []) => [...prev, parseAddress(v)])
      .action(
        action(async (id: number, list: Address[], opts: OwnerOpts) => {
          const ctx = await connectSigner(opts);
          await ownPolicy(ctx, id);
          const receipt = await send(ctx, { functionName: "setPayees", args: [id, list, allowed] });
          emit(
            opts,
            { policyId: id, payees: list, allowed, ...tx(receipt) },
            () =>
              `${allowed ? "allowed" : "removed"} ${list.length} payee(s) on policy ${id} (tx ${receipt.transactionHash})`,
          );
        }),
      );
    example(
      cmd,
      `machinepay payees ${name} 1 0x70997970C51812dc3A010C7d01b50e0d17dc79C8 --dev --rpc http://127.0.0.1:8545`,
    );
  }

  const register = addPolicyFlags(
    ownerCommand(
      device,
      "register",
      "bind device keys to this owner: onto --policy ID, or one device onto a new policy of its own",
    ),
  )
    .option(
      "--device-key <file>",
      "a device key file (its Enrollment is signed here); repeatable",
      (v: string, p: string[] = []) => [...p, v],
    )
    .option(
      "--proof <file>",
      "a proof file from `machinepay device enroll`; repeatable",
      (v: string, p: string[] = []) => [...p, v],
    )
    .option("--policy <id>", "assign to this existing policy of the owner's", parseUint)
    .action(action(registerDevices));
  example(
    register,
    "machinepay device register --dev --rpc http://127.0.0.1:8545 --policy 1 --device-key meter-1.key",
    "machinepay device register --dev --rpc http://127.0.0.1:8545 --proof meter-2.proof.json --max-per-payment 1000000 --max-per-period 5000000 --lifetime-max 100000000",
  );
  for (const [name, paused] of [
    ["pause", true],
    ["resume", false],
  ] as const) {
    const cmd = ownerCommand(
      device,
      name,
      paused ? "pause a device (its payments stop settling)" : "resume a paused device",
    )
      .argument("<address>", "the device", parseAddress)
      .action(
        action(async (address: Address, opts: OwnerOpts) => {
          const ctx = await connectSigner(opts);
          const receipt = await send(ctx, { functionName: "setDevicePaused", args: [address, paused] });
          emit(
            opts,
            { device: address, paused, ...tx(receipt) },
            () => `${paused ? "paused" : "resumed"} ${address} (tx ${receipt.transactionHash})`,
          );
        }),
      );
    example(cmd, `machinepay device ${name} 0xDEVICE --dev --rpc http://127.0.0.1:8545`);
  }
  const revoke = ownerCommand(
    device,
    "revoke",
    "revoke a device key for good (it can never pay or be registered again)",
  )
    .argument("<address>", "the device", parseAddress)
    .option("--yes", "confirm: revocation cannot be undone")
    .action(
      action(async (address: Address, opts: OwnerOpts & { yes?: boolean }) => {
        if (!opts.yes)
          throw new UsageError(`revoking ${address} cannot be undone: pass --yes (or \`device pause\` it instead)`);
        const ctx = await connectSigner(opts);
        const receipt = await send(ctx, { functionName: "revokeDevice", args: [address] });
        emit(
          opts,
          { device: address, revoked: true, ...tx(receipt) },
          () => `revoked ${address} for good (tx ${receipt.transactionHash})`,
        );
      }),
    );
  example(revoke, "machinepay device revoke 0xDEVICE --yes --dev --rpc http://127.0.0.1:8545");
  const deviceShow = addJson(
    addRelayer(
      device
        .command("show")
        .description(
          "a device's headroom: from the relayer (pending payments counted) with --relayer, else the chain's views",
        ),
      false,
    ),
  )
    .argument("<address>", "the device", parseAddress)
    .addOption(new Option("--rpc <url>", "JSON-RPC URL of the chain (when no --relayer)").env("MACHINEPAY_RPC_URL"))
    .addOption(
      new Option("--deployment <file>", "deployment file (when no --relayer)")
        .env("MACHINEPAY_DEPLOYMENT")
        .default("deployment.json"),
    )
    .action(action(showDevice));
  example(
    deviceShow,
    "machinepay device show 0xDEVICE --relayer http://127.0.0.1:8787",
    "machinepay device show 0xDEVICE --rpc http://127.0.0.1:8545 --json",
  );

  const freeze = ownerCommand(
    cli,
    "freeze",
    "stop every device on every policy of this owner in one transaction (updating a policy thaws it)",
  ).action(
    action(async (opts: OwnerOpts) => {
      const ctx = await connectSigner(opts);
      const receipt = await send(ctx, { functionName: "freezeAll", args: [] });
      const epoch = await readMachinePay<number>(ctx, "ownerEpoch", [ctx.account.address]);
      emit(
        opts,
        { owner: ctx.account.address, epoch, ...tx(receipt) },
        () =>
          `froze every policy of ${ctx.account.address} (epoch ${epoch}); \`machinepay policy update ID\` thaws one (tx ${receipt.transactionHash})`,
      );
    }),
  );
  example(freeze, "machinepay freeze --keystore owner.json --rpc https://rpc.example");

  const withdraw = cli
    .command("withdraw")
    .description("withdraw escrow funds: announce, wait the notice period, execute");
  example(withdraw, "machinepay withdraw announce --amount 500000000 --dev --rpc http://127.0.0.1:8545");
  const announce = ownerCommand(
    withdraw,
    "announce",
    "announce a withdrawal; devices keep spending during the notice period",
  )
    .requiredOption("--amount <units>", "token units", parseUnits)
    .option("--token <token>", "symbol, address or native (default USDC)")
    .action(
      action(async (opts: OwnerOpts & { amount: bigint; token?: string }) => {
        const ctx = await connectSigner(opts);
        const token = resolveToken(ctx.deployment, opts.token);
        const receipt = await send(ctx, { functionName: "announceWithdrawal", args: [token, opts.amount] });
        const p = await readMachinePay<{ amount: bigint; readyAt: bigint }>(ctx, "pendingWithdrawal", [
          ctx.account.address,
          token,
        ]);
        const readyAt = Number(p.readyAt);
        emit(
          opts,
          { token, amount: p.amount, readyAt, ...tx(receipt) },
          () =>
            `announced ${p.amount} units of ${token}; \`machinepay withdraw execute\` from ${new Date(readyAt * 1000).toISOString()} (tx ${receipt.transactionHash})`,
        );
      }),
    );
  example(announce, "machinepay withdraw announce --amount 500000000 --dev --rpc http://127.0.0.1:8545");
  const execute = ownerCommand(withdraw, "execute", "execute an announced withdrawal after its notice period")
    .option("--token <token>", "symbol, address or native (default USDC)")
    .option("--to <address>", "receiver (default the owner)", parseAddress)
    .action(
      action(async (opts: OwnerOpts & { token?: string; to?: Address }) => {
        const ctx = await connectSigner(opts);
        const token = resolveToken(ctx.deployment, opts.token);
        const to = opts.to ?? ctx.account.address;
        const before = await readMachinePay<bigint>(ctx, "balanceOf", [ctx.account.address, token]);
        const receipt = await send(ctx, { functionName: "executeWithdrawal", args: [token, to] });
        const after = await readMachinePay<bigint>(ctx, "balanceOf", [ctx.account.address, token]);
        emit(
          opts,
          { token, to, withdrawn: before - after, balance: after, ...tx(receipt) },
          () =>
            `withdrew ${before - after} units of ${token} to ${to}; escrow balance ${after} (tx ${receipt.transactionHash})`,
        );
      }),
    );
  example(execute, "machinepay withdraw execute --to 0xTREASURY --dev --rpc http://127.0.0.1:8545");
  const cancel = ownerCommand(withdraw, "cancel", "cancel an announced withdrawal")
    .option("--token <token>", "symbol, address or native (default USDC)")
    .action(
      action(async (opts: OwnerOpts & { token?: string }) => {
        const ctx = await connectSigner(opts);
        const token = resolveToken(ctx.deployment, opts.token);
        const receipt = await send(ctx, { functionName: "cancelWithdrawal", args: [token] });
        emit(
          opts,
          { token, cancelled: true, ...tx(receipt) },
          () => `cancelled the withdrawal of ${token} (tx ${receipt.transactionHash})`,
        );
      }),
    );
  example(cancel, "machinepay withdraw cancel --dev --rpc http://127.0.0.1:8545");
  const wshow = addJson(
    addChain(withdraw.command("show").description("an account's escrow balance and announced withdrawal")),
  )
    .option("--token <token>", "symbol, address or native (default USDC)")
    .argument("<account>", "the owner", parseAddress)
    .action(
      action(async (account: Address, opts: ChainOptions & JsonOption & { token?: string }) => {
        const ctx = await connectChain(opts);
        const token = resolveToken(ctx.deployment, opts.token);
        const [balance, p] = await Promise.all([
          readMachinePay<bigint>(ctx, "balanceOf", [account, token]),
          readMachinePay<{ amount: bigint; readyAt: bigint }>(ctx, "pendingWithdrawal", [account, token]),
        ]);
        const data = { account, token, balance, announced: p.amount, readyAt: Number(p.readyAt) };
        emit(opts, data, () => keyValues(Object.entries(data)));
      }),
    );
  example(wshow, "machinepay withdraw show 0xOWNER --rpc http://127.0.0.1:8545");

  const onboardCmd = addPolicyFlags(
    addRelayer(
      ownerCommand(
        cli,
        "onboard",
        "sign one Onboarding for a list of devices and submit it through the relayer (no owner gas)",
      ),
    ),
  )
    .requiredOption(
      "--devices <file>",
      "device list: one device key file or proof file per line (or a JSON array of proofs)",
    )
    .option("--policy <id>", "assign to this existing policy (its parameters, changed by any policy flags)", parseUint)
    .option("--out <file>", "also write the signed onboarding (anyone may submit it on chain)")
    .option("--no-submit", "only sign and write it (--out); do not send it to the relayer")
    .addOption(withDefault("--valid-for <duration>", "how long the signature is valid", parseDuration, 3_600, "1h"))
    .option("--wait", "wait until the relayer's transaction is confirmed")
    .addOption(withDefault("--timeout <seconds>", "how long --wait waits", parseUint, 120, "120"))
    .action(action(onboard));
  example(
    onboardCmd,
    "machinepay onboard --dev --rpc http://127.0.0.1:8545 --relayer http://127.0.0.1:8787 --devices fleet.txt --max-per-payment 1000000 --max-per-period 5000000 --lifetime-max 100000000",
  );
}
