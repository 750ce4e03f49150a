/**
 * Gas benchmark: prints markdown tables measured in one run on the in-process Hardhat network.
 *   pnpm bench:gas            (all batch sizes)
 *   BENCH_SIZES=1,10 pnpm bench:gas
 * Rows: MachinePay.settle per payment for batches of distinct devices, beside one ERC-20 transfer
 * per payment and one EIP-3009 transferWithAuthorization per payment (how x402 settles).
 */

import type { BaseWallet, ContractTransactionReceipt } from "ethers";
import { ethers } from "hardhat";
import {
  type Address,
  type Hex,
  machinePayDomain,
  onboardingTypes,
  type Payment,
  packPayment,
  packVoucher,
  signEnrollment,
  signPayment,
  signTypedMessage,
  signVoucher,
  type Voucher,
} from "../sdk/src";

const SIZES = (process.env.BENCH_SIZES ?? "1,10,100,500,1000").split(",").map(Number);
const PAYEES = 5;
const MEMPOOL_LIMIT = 128 * 1024;
// EIP-7825 (Osaka, Hardhat's default hardfork): no transaction may use more than 2^24 gas.
const TX_GAS_CAP = 16_777_216;

async function main() {
  const [owner, relayer, ...rest] = await ethers.getSigners();
  const payees = rest.slice(0, PAYEES).map((s) => s.address as Address);
  const usdc = await ethers.deployContract("MockUSDC");
  const pay = await ethers.deployContract("MachinePay", [2 * 86_400]);
  const usdcAddress = (await usdc.getAddress()) as Address;
  await usdc.mint(owner.address, 10n ** 15n);
  await usdc.approve(await pay.getAddress(), ethers.MaxUint256);
  await pay.deposit(usdcAddress, 10n ** 14n);
  const { chainId } = await ethers.provider.getNetwork();
  const domain = machinePayDomain({ chainId, verifyingContract: (await pay.getAddress()) as Address });
  const params = {
    token: usdcAddress,
    maxPerPayment: 10_000_000n,
    maxPerPeriod: 100_000_000n,
    periodLength: 86_400,
    lifetimeMax: 1_000_000_000n,
    validFrom: 0,
    validUntil: 0,
    payeesRestricted: false,
  };
  // A fleet shares one policy: its three slots are warm after the batch's first item.
  await pay.createPolicy(params);
  const sharedPolicy = await pay.policyCount();

  const deadline = BigInt((await ethers.provider.getBlock("latest"))!.timestamp + 30 * 86_400);
  // Deterministic "random" keys and refs, so two runs of the same code give the same figures.
  let seq = 0;
  const seeded = () => ethers.keccak256(ethers.toUtf8Bytes(`machinepay-bench-${seq++}`));
  const randomRef = () => seeded() as Hex;

  // Each device key signs Enrollment(owner) once: its proof of possession.
  const enroll = (d: BaseWallet) => signEnrollment({ signer: d, domain, owner: owner.address as Address });

  // The relayer orders a batch by payee (a device's payments stay in nonce order), so settle sums
  // each payee's credits in memory and writes them once: `order` does the same here.
  const byPayee = (n: number) =>
    Array.from({ length: n }, (_, i) => i).sort((a, b) => (a % PAYEES) - (b % PAYEES) || a - b);

  async function fleet(n: number, ownPolicies: boolean): Promise<BaseWallet[]> {
    const devices = Array.from({ length: n }, () => new ethers.Wallet(seeded()) as unknown as BaseWallet);
    const proofs = await Promise.all(devices.map((d) => enroll(d)));
    if (ownPolicies) {
      for (let i = 0; i < n; i++) await pay.registerDevice(devices[i].address, params, proofs[i]);
    } else {
      for (let i = 0; i < n; i += 500) {
        await pay.assignDevices(
          sharedPolicy,
          devices.slice(i, i + 500).map((d) => d.address),
          proofs.slice(i, i + 500),
        );
      }
    }
    return devices;
  }

  async function settleBatch(devices: BaseWallet[], refKind: "random" | "order number" = "random", sorted = true) {
    const items = [];
    const order = sorted ? byPayee(devices.length) : devices.map((_, i) => i);
    for (const i of order) {
      const p: Payment = {
        payee: payees[i % PAYEES],
        token: usdcAddress,
        amount: 1_000n + BigInt(i),
        nonce: 0n,
        deadline,
        maxFee: 0n,
        ref: refKind === "random" ? randomRef() : (ethers.zeroPadValue(ethers.toBeHex(100_000 + i), 32) as Hex),
      };
      items.push(packPayment(p, await signPayment({ signer: devices[i], domain, payment: p })));
    }
    const data = pay.interface.encodeFunctionData("settle", [usdcAddress, items, ethers.ZeroAddress]);
    let receipt: ContractTransactionReceipt;
    try {
      const tx = await pay.connect(relayer).settle(usdcAddress, items, ethers.ZeroAddress, { gasLimit: TX_GAS_CAP });
      receipt = (await tx.wait())!;
    } catch (e) {
      if (/out of gas/i.test(String(e))) return { gas: undefined, calldataBytes: (data.length - 2) / 2 };
      throw e;
    }
    const skipped = receipt.logs.filter((l) => l.topics[0] === pay.interface.getEvent("PaymentSkipped").topicHash);
    if (skipped.length) throw new Error(`${skipped.length} payments skipped: the benchmark is broken`);
    return { gas: receipt.gasUsed, calldataBytes: (data.length - 2) / 2 };
  }

  // Baselines, one transaction per payment: a plain ERC-20 transfer and an EIP-3009
  // transferWithAuthorization, both to receivers that already hold the token (the usual case; a
  // first-ever receiver costs ~17,000 more, printed below the table).
  const payer = new ethers.Wallet(seeded(), ethers.provider);
  await owner.sendTransaction({ to: payer.address, value: 10n ** 18n });
  await usdc.mint(payer.address, 10n ** 12n);
  const freshTransferGas: bigint[] = [];
  const transferGas: bigint[] = [];
  for (let i = 0; i < 2 * PAYEES; i++) {
    const r = await (await usdc.connect(payer).transfer(payees[i % PAYEES], 1_000n)).wait();
    (i < PAYEES ? freshTransferGas : transferGas).push(r!.gasUsed);
  }
  const usdcDomain = { name: "USD Coin", version: "1", chainId, verifyingContract: usdcAddress };
  const authTypes = {
    TransferWithAuthorization: [
      { name: "from", type: "address" },
      { name: "to", type: "address" },
      { name: "value", type: "uint256" },
      { name: "validAfter", type: "uint256" },
      { name: "validBefore", type: "uint256" },
      { name: "nonce", type: "bytes32" },
    ],
  };
  const authGas: bigint[] = [];
  for (let i = 0; i < 5; i++) {
    const msg = {
      from: payer.address,
      to: payees[i % PAYEES],
      value: 1_000n,
      validAfter: 0n,
      validBefore: deadline,
      nonce: randomRef(),
    };
    const sig = ethers.Signature.from(await payer.signTypedData(usdcDomain, authTypes, msg));
    const r = await (
      await usdc
        .connect(relayer)
        .transferWithAuthorization(
          msg.from,
          msg.to,
          msg.value,
          msg.validAfter,
          msg.validBefore,
          msg.nonce,
          sig.v,
          sig.r,
          sig.s,
        )
    ).wait();
    authGas.push(r!.gasUsed);
  }
  const median = (xs: bigint[]) => [...xs].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))[Math.floor(xs.length / 2)];
  const transfer = median(transferGas);
  const auth = median(authGas);

  const rows: string[] = [];
  let perItemBytes = 0;
  let per500 = 0;
  const row = (n: number, label: string, gas: bigint | undefined, bytes: number) => {
    if (gas === undefined) {
      rows.push(
        `| ${n} | ${label} | over the ${TX_GAS_CAP} tx gas cap | - | ${transfer} | ${auth} | - | - | ${(bytes / n).toFixed(1)} |`,
      );
      return;
    }
    const per = Number(gas) / n;
    rows.push(
      `| ${n} | ${label} | ${gas} | ${per.toFixed(0)} | ${transfer} | ${auth} | ${(Number(transfer) / per).toFixed(2)}x | ${(Number(auth) / per).toFixed(2)}x | ${(bytes / n).toFixed(1)} |`,
    );
    return per;
  };
  for (const n of SIZES) {
    const { gas, calldataBytes } = await settleBatch(await fleet(n, false));
    const per = row(n, "shared policy, random ref", gas, calldataBytes);
    if (n >= 10) perItemBytes = calldataBytes / n;
    if (n === 500 && per) per500 = per;
  }
  for (const n of SIZES.filter((s) => s >= 100)) {
    const { gas, calldataBytes } = await settleBatch(await fleet(n, false), "order number");
    row(n, "shared policy, order-number ref", gas, calldataBytes);
  }
  for (const n of SIZES.filter((s) => s === 500)) {
    const { gas, calldataBytes } = await settleBatch(await fleet(n, false), "random", false);
    row(n, "shared policy, random ref, not sorted by payee", gas, calldataBytes);
  }
  for (const n of SIZES.filter((s) => s <= 100)) {
    const { gas, calldataBytes } = await settleBatch(await fleet(n, true));
    row(n, "a policy per device, random ref", gas, calldataBytes);
  }
  console.log(
    "| batch | devices and refs | tx gas | gas per payment | ERC-20 transfer (1 tx) | EIP-3009 transferWithAuthorization (1 tx) | ERC-20 / ours | EIP-3009 / ours | calldata bytes per payment |",
  );
  console.log("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const r of rows) console.log(r);
  const fixed = 4 + 32 * 4; // selector, token, array offset, feeRecipient, array length
  const maxBatch = Math.floor((MEMPOOL_LIMIT - fixed - 200) / perItemBytes); // ~200 B of tx envelope

  // Tabs: one voucher per tab, each tab on its own device (distinct devices, as above). The first
  // voucher of a tab creates its slot; later ones update it (the steady state of a streaming tab).
  async function settleVouchers(devices: BaseWallet[], cumulative: bigint) {
    const items = [];
    for (const i of byPayee(devices.length)) {
      const v: Voucher = {
        payee: payees[i % PAYEES],
        token: usdcAddress,
        tabId: 1n,
        cumulative: cumulative + BigInt(i),
        deadline,
        maxFee: 0n,
      };
      items.push(packVoucher(v, await signVoucher({ signer: devices[i], domain, voucher: v })));
    }
    try {
      const tx = await pay
        .connect(relayer)
        .settleVouchers(usdcAddress, items, ethers.ZeroAddress, { gasLimit: TX_GAS_CAP });
      const receipt = (await tx.wait())!;
      const skipped = receipt.logs.filter((l) => l.topics[0] === pay.interface.getEvent("VoucherSkipped").topicHash);
      if (skipped.length) throw new Error(`${skipped.length} vouchers skipped: the benchmark is broken`);
      return receipt.gasUsed;
    } catch (e) {
      if (/out of gas/i.test(String(e))) return undefined;
      throw e;
    }
  }
  const voucherRows: string[] = [];
  for (const n of SIZES) {
    const devices = await fleet(n, false);
    for (const [label, cumulative] of [
      ["first voucher of each tab", 10_000n],
      ["next voucher of each tab", 20_000n],
    ] as const) {
      const gas = await settleVouchers(devices, cumulative);
      if (gas === undefined) {
        voucherRows.push(`| ${n} | ${label} | over the ${TX_GAS_CAP} tx gas cap | - | - | - | - |`);
        // Open the tabs in smaller batches (not measured) so the next row measures what it says.
        for (let i = 0; i < n; i += 200) await settleVouchers(devices.slice(i, i + 200), cumulative);
        continue;
      }
      const per = Number(gas) / n;
      voucherRows.push(
        `| ${n} | ${label} | ${gas} | ${per.toFixed(0)} | ${per.toFixed(0)} | ${(per / 20).toFixed(0)} | ${(per / 100).toFixed(0)} |`,
      );
    }
  }
  console.log(
    "\n| batch | vouchers | tx gas | gas per voucher | per payment, 1 per voucher | 20 per voucher | 100 per voucher |",
  );
  console.log("| ---: | --- | ---: | ---: | ---: | ---: | ---: |");
  for (const r of voucherRows) console.log(r);

  // Fleet onboarding: the owner signs one Onboarding for N fresh device keys, a relayer submits it.
  const onboardRows: string[] = [];
  let onboardNonce = 1n;
  for (const n of [1, 10, 100, 500]) {
    for (const policyId of [0, Number(sharedPolicy)]) {
      const wallets = Array.from({ length: n }, () => new ethers.Wallet(seeded()) as unknown as BaseWallet);
      const list = wallets.map((w) => w.address as Address);
      const order = { owner: owner.address, policyId, policy: params, epoch: 0, nonce: onboardNonce++, deadline };
      const signature = await signTypedMessage({
        signer: owner,
        domain,
        types: onboardingTypes,
        primaryType: "Onboarding",
        message: { ...order, devices: list },
      });
      const proofs = await Promise.all(list.map((_, i) => enroll(wallets[i])));
      const receipt = (await (await pay.connect(relayer).onboardBySignature(order, list, proofs, signature)).wait())!;
      onboardRows.push(
        `| ${n} | ${policyId === 0 ? "new policy" : "existing policy"} | ${receipt.gasUsed} | ${(Number(receipt.gasUsed) / n).toFixed(0)} |`,
      );
    }
  }
  console.log("\n| devices per message | policy | tx gas | gas per onboarded device |");
  console.log("| ---: | --- | ---: | ---: |");
  for (const r of onboardRows) console.log(r);
  console.log(`\nERC-20 transfer to a first-ever receiver: ${median(freshTransferGas)} gas (median of ${PAYEES}).`);
  console.log(
    `Largest batch under 128 KiB of transaction: ${maxBatch} payments (${perItemBytes} calldata bytes each).`,
  );
  if (per500) {
    console.log(
      `Largest batch under the EIP-7825 tx gas cap at the batch-500 rate: ~${Math.floor((TX_GAS_CAP - 21_000) / per500)} payments.`,
    );
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
