/**
 * Demo, end to end on Hardhat's in-process chain (until the relayer's demo lands):
 * deploy MachinePay + MockUSDC, an owner funds the escrow, registers a fleet of devices under one
 * capped policy, each device signs payments to a few payees, one batch settles them all, and a
 * summary table compares gas per payment with one ERC-20 transfer per payment.
 * Keys: Hardhat's well-known test accounts (public, never use them for value) and fresh random device keys.
 *   npm run demo            DEVICES=200 PAYMENTS_PER_DEVICE=2 npm run demo
 */
import type { BaseWallet } from "ethers";
import { ethers } from "hardhat";
import {
  type Address,
  decodeMachinePayLog,
  type Hex,
  machinePayDomain,
  type Payment,
  packPayment,
  signEnrollment,
  signPayment,
} from "../sdk/src";

const DEVICES = Number(process.env.DEVICES ?? 50);
const PER_DEVICE = Number(process.env.PAYMENTS_PER_DEVICE ?? 4);
const USDC = (n: number) => BigInt(Math.round(n * 1e6));

function bar(done: number, total: number) {
  const width = 30;
  const filled = Math.round((done / total) * width);
  process.stdout.write(`\r  signing  [${"#".repeat(filled)}${".".repeat(width - filled)}] ${done}/${total}`);
  if (done === total) process.stdout.write("\n");
}

async function main() {
  const [owner, relayer, ...payeeSigners] = await ethers.getSigners();
  const payees = payeeSigners.slice(0, 3).map((s) => s.address as Address);
  console.log("MachinePay demo on the in-process Hardhat chain (Hardhat's public test keys)\n");

  const usdc = await ethers.deployContract("MockUSDC");
  const pay = await ethers.deployContract("MachinePay", [2 * 86_400]);
  const token = (await usdc.getAddress()) as Address;
  console.log(`  MachinePay ${await pay.getAddress()}\n  MockUSDC   ${token}`);

  await usdc.mint(owner.address, USDC(10_000));
  await usdc.approve(await pay.getAddress(), ethers.MaxUint256);
  await pay.deposit(token, USDC(5_000));
  console.log(`  owner ${owner.address} escrowed 5,000 USDC`);

  await pay.createPolicy({
    token,
    maxPerPayment: USDC(2),
    maxPerPeriod: USDC(20),
    periodLength: 3_600,
    lifetimeMax: USDC(500),
    validFrom: 0,
    validUntil: 0,
    payeesRestricted: false,
  });
  const policyId = await pay.policyCount();
  const devices = Array.from({ length: DEVICES }, () => ethers.Wallet.createRandom() as unknown as BaseWallet);
  const { chainId } = await ethers.provider.getNetwork();
  const domain = machinePayDomain({ chainId, verifyingContract: (await pay.getAddress()) as Address });
  // Each device key proves possession by signing Enrollment(owner) once.
  const proofs = await Promise.all(
    devices.map((d) => signEnrollment({ signer: d, domain, owner: owner.address as Address })),
  );
  await pay.assignDevices(
    policyId,
    devices.map((d) => d.address),
    proofs,
  );
  console.log(`  ${DEVICES} devices registered under policy ${policyId}: 2 USDC per payment, 20 USDC per hour\n`);

  const deadline = BigInt((await ethers.provider.getBlock("latest"))!.timestamp + 3_600);
  const total = DEVICES * PER_DEVICE;
  const items = [];
  for (let i = 0; i < total; i++) {
    const device = devices[i % DEVICES];
    const p: Payment = {
      payee: payees[i % payees.length],
      token,
      amount: USDC(0.01 + (i % 7) * 0.01),
      nonce: BigInt(Math.floor(i / DEVICES)),
      deadline,
      maxFee: 0n,
      ref: ethers.zeroPadValue(ethers.toBeHex(i + 1), 32) as Hex,
    };
    items.push(packPayment(p, await signPayment({ signer: device, domain, payment: p })));
    if (i % 10 === 9 || i === total - 1) bar(i + 1, total);
  }

  const receipt = (await (await pay.connect(relayer).settle(token, items, ethers.ZeroAddress)).wait())!;
  // Outcomes from the chain's events, as an indexer proves them.
  const events = receipt.logs.map((l) => decodeMachinePayLog({ data: l.data as Hex, topics: l.topics as Hex[] }));
  const settled = events.filter((e) => e?.eventName === "PaymentSettled").length;
  const reasons = events.flatMap((e) => (e && "reason" in e ? [e.reason] : []));
  const transfer = (await (await usdc.transfer(payees[0], USDC(1))).wait())!.gasUsed;

  const rows = [
    ["payments signed", String(total)],
    ["settled", String(settled)],
    ["skipped", reasons.length ? reasons.join(", ") : "0"],
    ["batches", "1"],
    ["batch gas", receipt.gasUsed.toString()],
    ["gas per payment", (Number(receipt.gasUsed) / total).toFixed(0)],
    ["one ERC-20 transfer", transfer.toString()],
    ["saving", `${(Number(transfer) / (Number(receipt.gasUsed) / total)).toFixed(1)}x`],
  ];
  console.log("\n| | |\n| --- | ---: |");
  for (const [k, v] of rows) console.log(`| ${k} | ${v} |`);
  for (const p of payees) {
    console.log(`  payee ${p} earned ${ethers.formatUnits(await pay.balanceOf(p, token), 6)} USDC`);
  }
  if (settled !== total) process.exitCode = 1;
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
