import { loadFixture, time } from "@nomicfoundation/hardhat-network-helpers";
import { expect } from "chai";
import { ethers } from "hardhat";
import { type Address, machinePayDomain, REASONS } from "../sdk/src";
import { ethersPaymentTypes } from "./admin-helpers";
import { assignDevices, DAY, domainOf, newDevices, USDC, ZERO } from "./helpers";
import {
  applyMoves,
  expectLedgerMatchesHoldings,
  expectPaymentSettled,
  ledger,
  type Move,
  R,
  register,
  SECP256K1_N,
  SECP256K1_N_HALF,
  type SettleFixture,
  settleExpect,
  settleFixture,
  signed,
  signedFor,
  splitVs,
  toPayment,
  word,
} from "./settle-helpers";

const HUGE_PERIOD = 2 ** 32 - 1; // one window for the life of the test chain: no period rollover mid-test

/** settleFixture plus one plain device of the owner on a default USDC policy (id 1). */
async function deviceFixture() {
  const f = await settleFixture();
  const [device] = newDevices(1);
  await register(f.pay, f.owner, device, f.usdcAddress, { periodLength: HUGE_PERIOD });
  return { ...f, device };
}

/**
 * One device per skip reason, each set up so that its next payment hits exactly that reason.
 * owner3 froze its policy; owner4 has 1 USDC in escrow.
 */
async function everyReasonFixture() {
  const f = await settleFixture();
  const { pay, owner, usdcAddress, usdc2Address, relayer, payee } = f;
  const signers = await ethers.getSigners();
  const [owner3, owner4] = [signers[6], signers[7]];
  const d = Object.fromEntries(
    [
      "good",
      "unknown",
      "revoked",
      "paused",
      "policyPaused",
      "frozen",
      "notYet",
      "expired",
      "wrongToken",
      "restricted",
      "nonces",
      "periodCap",
      "lifetimeCap",
      "poor",
    ].map((name) => [name, newDevices(1)[0]]),
  );
  const base = { periodLength: HUGE_PERIOD };
  await register(pay, owner, d.good, usdcAddress, base);
  await register(pay, owner, d.revoked, usdcAddress, base);
  await pay.connect(owner).revokeDevice(d.revoked.address);
  await register(pay, owner, d.paused, usdcAddress, base);
  await pay.connect(owner).setDevicePaused(d.paused.address, true);
  const policyPaused = await register(pay, owner, d.policyPaused, usdcAddress, base);
  await pay.connect(owner).setPolicyPaused(policyPaused, true);
  await register(pay, owner3, d.frozen, usdcAddress, base);
  await pay.connect(owner3).freezeAll();
  await register(pay, owner, d.notYet, usdcAddress, { ...base, validFrom: (await time.latest()) + 10 * DAY });
  await register(pay, owner, d.expired, usdcAddress, { ...base, validUntil: 1 });
  await register(pay, owner, d.wrongToken, usdc2Address, base);
  await register(pay, owner, d.restricted, usdcAddress, { ...base, payeesRestricted: true });
  await register(pay, owner, d.nonces, usdcAddress, base);
  await register(pay, owner, d.periodCap, usdcAddress, { ...base, maxPerPeriod: USDC(12) });
  await register(pay, owner, d.lifetimeCap, usdcAddress, { ...base, lifetimeMax: USDC(5) });
  await register(pay, owner4, d.poor, usdcAddress, base);
  await f.usdc.mint(owner4.address, USDC(1));
  await f.usdc.connect(owner4).approve(await pay.getAddress(), USDC(1));
  await pay.connect(owner4).deposit(usdcAddress, USDC(1));
  // Pre-spend: nonces 0 and 30 of `nonces`, 10 of the period cap, 4 of the lifetime cap.
  const to = { payee: payee.address, token: usdcAddress };
  await settleExpect(
    pay,
    relayer,
    usdcAddress,
    [
      await signed(pay, d.nonces, { ...to, nonce: 0n }),
      await signed(pay, d.nonces, { ...to, nonce: 30n }),
      await signed(pay, d.periodCap, { ...to, amount: USDC(10) }),
      await signed(pay, d.lifetimeCap, { ...to, amount: USDC(4) }),
    ],
    ["None", "None", "None", "None"],
  );
  return { ...f, d, owner3, owner4 };
}

describe("settle", () => {
  describe("every skip reason", () => {
    it("reports each reason 1..19 for the item that causes it, settles the good items, and never reverts", async () => {
      const f = await loadFixture(everyReasonFixture);
      const { pay, relayer, payee, usdcAddress, d, owner } = f;
      const to = { payee: payee.address, token: usdcAddress };
      const good = await signed(pay, d.good, { ...to, nonce: 0n });
      const garbage = { ...good, r: word(0n) };
      const cases: [string, Awaited<ReturnType<typeof signed>>, string][] = [
        ["None", good, d.good.address],
        ["InvalidSignature", garbage, ZERO],
        ["UnknownDevice", await signed(pay, d.unknown, to), d.unknown.address],
        ["DeviceRevoked", await signed(pay, d.revoked, to), d.revoked.address],
        ["DevicePaused", await signed(pay, d.paused, to), d.paused.address],
        ["PolicyPaused", await signed(pay, d.policyPaused, to), d.policyPaused.address],
        ["PolicyFrozen", await signed(pay, d.frozen, to), d.frozen.address],
        ["NotYetValid", await signed(pay, d.notYet, to), d.notYet.address],
        ["PolicyExpired", await signed(pay, d.expired, to), d.expired.address],
        ["WrongToken", await signed(pay, d.wrongToken, to), d.wrongToken.address],
        ["None", await signed(pay, d.good, { ...to, nonce: 1n }), d.good.address],
        ["DeadlinePassed", await signed(pay, d.good, { ...to, nonce: 2n, deadline: 1n }), d.good.address],
        ["InvalidPayee", await signed(pay, d.good, { ...to, payee: ZERO, nonce: 3n }), d.good.address],
        ["PayeeNotAllowed", await signed(pay, d.restricted, to), d.restricted.address],
        ["FeeAboveMax", await signed(pay, d.good, { ...to, nonce: 4n, maxFee: 1n }, 2n), d.good.address],
        ["NonceUsed", await signed(pay, d.nonces, { ...to, nonce: 30n }), d.nonces.address],
        ["NonceTooOld", await signed(pay, d.nonces, { ...to, nonce: 6n }), d.nonces.address],
        ["ExceedsPaymentCap", await signed(pay, d.good, { ...to, nonce: 5n, amount: USDC(11) }), d.good.address],
        [
          "ExceedsPeriodCap",
          await signed(pay, d.periodCap, { ...to, nonce: 1n, amount: USDC(3) }),
          d.periodCap.address,
        ],
        [
          "ExceedsLifetimeCap",
          await signed(pay, d.lifetimeCap, { ...to, nonce: 1n, amount: USDC(2) }),
          d.lifetimeCap.address,
        ],
        ["InsufficientBalance", await signed(pay, d.poor, { ...to, amount: USDC(2) }), d.poor.address],
        ["None", await signed(pay, d.good, { ...to, nonce: 6n }), d.good.address],
      ];
      // Every reason but None and NonceTooLarge (calldata cannot carry a nonce >= 2^32) is covered.
      expect(new Set(cases.map(([name]) => name))).to.deep.equal(new Set(REASONS.slice(0, 20)));

      const ownerBefore = await pay.balanceOf(owner.address, usdcAddress);
      const payeeBefore = await pay.balanceOf(payee.address, usdcAddress);
      const out = await settleExpect(
        pay,
        relayer,
        usdcAddress,
        cases.map(([, item]) => item),
        cases.map(([name]) => name as keyof typeof R),
      );
      expect(out.devices).to.deep.equal(cases.map(([, , device]) => device));
      expect(out.settled.map((s) => s.nonce)).to.deep.equal([0n, 1n, 6n]);
      expect(await pay.balanceOf(owner.address, usdcAddress)).to.equal(ownerBefore - USDC(3));
      expect(await pay.balanceOf(payee.address, usdcAddress)).to.equal(payeeBefore + USDC(3));
      await expectLedgerMatchesHoldings(pay, usdcAddress, f.accounts);
    });

    it("a skipped item changes nothing: the device's counters and nonces stay as they were", async () => {
      const f = await loadFixture(everyReasonFixture);
      const { pay, relayer, payee, usdcAddress, d } = f;
      const to = { payee: payee.address, token: usdcAddress };
      const before = await Promise.all([d.periodCap, d.lifetimeCap, d.poor].map((x) => pay.getDevice(x.address)));
      await settleExpect(
        pay,
        relayer,
        usdcAddress,
        [
          await signed(pay, d.periodCap, { ...to, nonce: 7n, amount: USDC(3) }),
          await signed(pay, d.lifetimeCap, { ...to, nonce: 7n, amount: USDC(2) }),
          await signed(pay, d.poor, { ...to, nonce: 7n, amount: USDC(2) }),
        ],
        ["ExceedsPeriodCap", "ExceedsLifetimeCap", "InsufficientBalance"],
      );
      const after = await Promise.all([d.periodCap, d.lifetimeCap, d.poor].map((x) => pay.getDevice(x.address)));
      expect(after).to.deep.equal(before);
    });
  });

  describe("a mixed batch", () => {
    it("skips the bad items, settles the good ones with their own events, and never reverts", async () => {
      const { pay, relayer, payee, payee2, usdcAddress, device } = await loadFixture(deviceFixture);
      const to = { payee: payee.address, token: usdcAddress };
      const ref = ethers.keccak256(ethers.toUtf8Bytes("order-42")) as `0x${string}`;
      const items = [
        await signed(pay, device, { ...to, nonce: 0n, amount: USDC(2), ref }),
        await signed(pay, device, { ...to, nonce: 0n }), // replay within the batch
        await signed(pay, device, { ...to, nonce: 1n, amount: USDC(11) }),
        await signed(pay, device, { ...to, payee: payee2.address, nonce: 2n, amount: 7n, maxFee: 3n }, 3n),
        await signed(pay, device, { ...to, nonce: 3n, deadline: 5n }),
      ];
      const out = await settleExpect(pay, relayer, usdcAddress, items, [
        "None",
        "NonceUsed",
        "ExceedsPaymentCap",
        "None",
        "DeadlinePassed",
      ]);
      await expectPaymentSettled(pay, out.tx, {
        device: device.address,
        payee: payee.address,
        token: usdcAddress,
        amount: USDC(2),
        nonce: 0n,
        ref,
      });
      await expectPaymentSettled(pay, out.tx, {
        device: device.address,
        payee: payee2.address,
        token: usdcAddress,
        amount: 7n,
        nonce: 2n,
        fee: 3n,
      });
      await expect(out.tx).to.emit(pay, "BatchSettled").withArgs(relayer.address, relayer.address, usdcAddress, 2, 3);
    });

    it("an empty batch settles nothing and emits BatchSettled(0, 0)", async () => {
      const { pay, relayer, usdcAddress } = await loadFixture(deviceFixture);
      expect(await pay.connect(relayer).preview.staticCall(usdcAddress, [], ZERO)).to.deep.equal([[], []]);
      await expect(pay.connect(relayer).settle(usdcAddress, [], ZERO))
        .to.emit(pay, "BatchSettled")
        .withArgs(relayer.address, relayer.address, usdcAddress, 0, 0);
    });
  });

  describe("signatures", () => {
    it("skips malformed signatures as InvalidSignature with no device (r = 0, r >= p, s = 0, s above n/2)", async () => {
      const { pay, relayer, payee, usdcAddress, device } = await loadFixture(deviceFixture);
      const good = await signed(pay, device, { payee: payee.address, token: usdcAddress });
      const { vBit } = splitVs(good.vs);
      const items = [
        { ...good, r: word(0n) },
        { ...good, r: word((1n << 256n) - 1n) },
        { ...good, vs: word(vBit << 255n) },
        { ...good, vs: word(SECP256K1_N_HALF + 1n) },
        { ...good, vs: word((1n << 255n) - 1n) },
        good,
      ];
      const out = await settleExpect(pay, relayer, usdcAddress, items, [
        "InvalidSignature",
        "InvalidSignature",
        "InvalidSignature",
        "InvalidSignature",
        "InvalidSignature",
        "None",
      ]);
      expect(out.devices).to.deep.equal([ZERO, ZERO, ZERO, ZERO, ZERO, device.address]);
    });

    it("the malleated twin (s' = n - s, v flipped) never settles as the device, and leaves the original payable", async () => {
      const { pay, relayer, payee, usdcAddress, device } = await loadFixture(deviceFixture);
      const spec = { payee: payee.address, token: usdcAddress, nonce: 9n };
      const good = await signed(pay, device, spec);
      const { s, vBit } = splitVs(good.vs);
      const twin = { ...good, vs: word((SECP256K1_N - s) | ((1n - vBit) << 255n)) };
      // What the contract reads from the twin's vs: bit 255 as v, the rest as s.
      const read = splitVs(twin.vs);
      let expected: keyof typeof R;
      let expectedDevice: string;
      if (read.s > SECP256K1_N_HALF || read.s === 0n) {
        expected = "InvalidSignature";
        expectedDevice = ZERO;
      } else {
        expected = "UnknownDevice";
        const digest = ethers.TypedDataEncoder.hash(await domainOf(pay), ethersPaymentTypes, await toPayment(spec));
        expectedDevice = ethers.recoverAddress(digest, { r: good.r, s: word(read.s), v: 27 + Number(read.vBit) });
      }
      expect(expectedDevice).to.not.equal(device.address);
      const out = await settleExpect(pay, relayer, usdcAddress, [twin, good], [expected, "None"]);
      expect(out.devices).to.deep.equal([expectedDevice, device.address]);
    });

    it("a signature for another chain id or another contract recovers another key: UnknownDevice", async () => {
      const { pay, relayer, payee, usdcAddress, device } = await loadFixture(deviceFixture);
      const spec = { payee: payee.address, token: usdcAddress };
      const { chainId } = await ethers.provider.getNetwork();
      const payAddress = (await pay.getAddress()) as Address;
      const other = await ethers.deployContract("MachinePay", [DAY]);
      const items = [
        await signedFor(machinePayDomain({ chainId: chainId + 1n, verifyingContract: payAddress }), device, spec),
        await signedFor(
          machinePayDomain({ chainId, verifyingContract: (await other.getAddress()) as Address }),
          device,
          spec,
        ),
        await signed(pay, device, spec),
      ];
      const out = await settleExpect(pay, relayer, usdcAddress, items, ["UnknownDevice", "UnknownDevice", "None"]);
      expect(out.devices[0]).to.not.be.oneOf([ZERO, device.address]);
      expect(out.devices[1]).to.not.be.oneOf([ZERO, device.address]);
    });

    it("a valid signature by an unregistered key is UnknownDevice, reported with that key", async () => {
      const { pay, relayer, payee, usdcAddress } = await loadFixture(deviceFixture);
      const [stray] = newDevices(1);
      const out = await settleExpect(
        pay,
        relayer,
        usdcAddress,
        [await signed(pay, stray, { payee: payee.address, token: usdcAddress })],
        ["UnknownDevice"],
      );
      expect(out.devices).to.deep.equal([stray.address]);
    });

    it("any signed field changed after signing is UnknownDevice; the unsigned fee is not", async () => {
      const { pay, relayer, payee, usdcAddress, device } = await loadFixture(deviceFixture);
      const good = await signed(pay, device, { payee: payee.address, token: usdcAddress, maxFee: 10n });
      const items = [
        { ...good, payeeAmount: good.payeeAmount + 1n }, // amount
        { ...good, terms: good.terms + 1n }, // nonce
        { ...good, terms: good.terms + (1n << 32n) }, // deadline
        { ...good, terms: good.terms + (1n << 160n) }, // maxFee
        { ...good, ref: word(1n) as `0x${string}` },
        { ...good, terms: good.terms + (5n << 64n) }, // fee 5: not signed, within maxFee
      ];
      const out = await settleExpect(pay, relayer, usdcAddress, items, [
        "UnknownDevice",
        "UnknownDevice",
        "UnknownDevice",
        "UnknownDevice",
        "UnknownDevice",
        "None",
      ]);
      for (const dev of out.devices.slice(0, 5)) expect(dev).to.not.equal(device.address);
      expect(out.settled[0].fee).to.equal(5n);
    });
  });

  describe("token", () => {
    it("WrongToken: the device signed the batch token but its policy pays in another", async () => {
      const { pay, owner, relayer, payee, usdcAddress, usdc2Address } = await loadFixture(settleFixture);
      const [device] = newDevices(1);
      await register(pay, owner, device, usdc2Address);
      await settleExpect(
        pay,
        relayer,
        usdcAddress,
        [await signed(pay, device, { payee: payee.address, token: usdcAddress })],
        ["WrongToken"],
      );
      // Signed for usdc2 but submitted in a usdc batch: the signature covers the token.
      await settleExpect(
        pay,
        relayer,
        usdcAddress,
        [await signed(pay, device, { payee: payee.address, token: usdc2Address })],
        ["UnknownDevice"],
      );
      // In a usdc2 batch it settles against the owner's usdc2 ledger, and usdc is untouched.
      const usdcBefore = await pay.balanceOf(owner.address, usdcAddress);
      const out = await settleExpect(
        pay,
        relayer,
        usdc2Address,
        [await signed(pay, device, { payee: payee.address, token: usdc2Address })],
        ["None"],
      );
      await expectPaymentSettled(pay, out.tx, {
        device: device.address,
        payee: payee.address,
        token: usdc2Address,
        amount: USDC(1),
        nonce: 0n,
      });
      expect(await pay.balanceOf(owner.address, usdc2Address)).to.equal(USDC(999));
      expect(await pay.balanceOf(payee.address, usdc2Address)).to.equal(USDC(1));
      expect(await pay.balanceOf(owner.address, usdcAddress)).to.equal(usdcBefore);
    });
  });

  describe("deadline", () => {
    it("settles in a block at deadline - 1 and is DeadlinePassed at exactly the deadline", async () => {
      const { pay, relayer, payee, usdcAddress, device } = await loadFixture(deviceFixture);
      const deadline = (await time.latest()) + 1_000;
      const spec = { payee: payee.address, token: usdcAddress, deadline: BigInt(deadline) };
      const first = await signed(pay, device, { ...spec, nonce: 0n });
      const second = await signed(pay, device, { ...spec, nonce: 1n });
      await settleExpect(pay, relayer, usdcAddress, [first], ["None"], { at: deadline - 1 });
      await settleExpect(pay, relayer, usdcAddress, [second], ["DeadlinePassed"], { at: deadline });
    });
  });

  describe("validity window", () => {
    it("NotYetValid before validFrom, settles at exactly validFrom", async () => {
      const { pay, owner, relayer, payee, usdcAddress } = await loadFixture(settleFixture);
      const [device] = newDevices(1);
      const from = (await time.latest()) + 1_000;
      await register(pay, owner, device, usdcAddress, { validFrom: from });
      const to = { payee: payee.address, token: usdcAddress };
      await settleExpect(pay, relayer, usdcAddress, [await signed(pay, device, to)], ["NotYetValid"], { at: from - 1 });
      await settleExpect(pay, relayer, usdcAddress, [await signed(pay, device, to)], ["None"], { at: from });
    });

    it("settles at validUntil - 1 and is PolicyExpired at exactly validUntil", async () => {
      const { pay, owner, relayer, payee, usdcAddress } = await loadFixture(settleFixture);
      const [device] = newDevices(1);
      const until = (await time.latest()) + 1_000;
      await register(pay, owner, device, usdcAddress, { validUntil: until });
      const to = { payee: payee.address, token: usdcAddress };
      await settleExpect(pay, relayer, usdcAddress, [await signed(pay, device, { ...to, nonce: 0n })], ["None"], {
        at: until - 1,
      });
      await settleExpect(
        pay,
        relayer,
        usdcAddress,
        [await signed(pay, device, { ...to, nonce: 1n })],
        ["PolicyExpired"],
        { at: until },
      );
    });
  });

  describe("device and policy switches", () => {
    it("DevicePaused while the device is paused; settles again once unpaused", async () => {
      const { pay, owner, relayer, payee, usdcAddress, device } = await loadFixture(deviceFixture);
      const item = await signed(pay, device, { payee: payee.address, token: usdcAddress });
      await pay.connect(owner).setDevicePaused(device.address, true);
      await settleExpect(pay, relayer, usdcAddress, [item], ["DevicePaused"]);
      await pay.connect(owner).setDevicePaused(device.address, false);
      await settleExpect(pay, relayer, usdcAddress, [item], ["None"]);
    });

    it("PolicyPaused for every device of a paused policy, not for the owner's other policies", async () => {
      const { pay, owner, relayer, payee, usdcAddress, device } = await loadFixture(deviceFixture);
      const [sibling, other] = newDevices(2);
      await assignDevices(pay, owner, 1, [sibling]);
      await register(pay, owner, other, usdcAddress);
      await pay.connect(owner).setPolicyPaused(1, true);
      const to = { payee: payee.address, token: usdcAddress };
      const items = [await signed(pay, device, to), await signed(pay, sibling, to), await signed(pay, other, to)];
      await settleExpect(pay, relayer, usdcAddress, items, ["PolicyPaused", "PolicyPaused", "None"]);
      await pay.connect(owner).setPolicyPaused(1, false);
      await settleExpect(pay, relayer, usdcAddress, items, ["None", "None", "NonceUsed"]);
    });

    it("DeviceRevoked for good: even re-signed payments never settle", async () => {
      const { pay, owner, relayer, payee, usdcAddress, device } = await loadFixture(deviceFixture);
      await pay.connect(owner).revokeDevice(device.address);
      const to = { payee: payee.address, token: usdcAddress };
      await settleExpect(
        pay,
        relayer,
        usdcAddress,
        [await signed(pay, device, { ...to, nonce: 0n }), await signed(pay, device, { ...to, nonce: 7n })],
        ["DeviceRevoked", "DeviceRevoked"],
      );
    });

    it("PolicyFrozen after freezeAll for all the owner's policies; updatePolicy thaws only that policy", async () => {
      const { pay, owner, owner2, relayer, payee, usdcAddress, device } = await loadFixture(deviceFixture);
      const [second, foreign] = newDevices(2);
      const secondPolicy = await register(pay, owner, second, usdcAddress);
      await register(pay, owner2, foreign, usdcAddress);
      await pay.connect(owner).freezeAll();
      const to = { payee: payee.address, token: usdcAddress };
      const batch = async (nonce: bigint) => [
        await signed(pay, device, { ...to, nonce }),
        await signed(pay, second, { ...to, nonce }),
        await signed(pay, foreign, { ...to, nonce }),
      ];
      await settleExpect(pay, relayer, usdcAddress, await batch(0n), ["PolicyFrozen", "PolicyFrozen", "None"]);
      const params = await pay.getPolicy(1);
      await pay.connect(owner).updatePolicy(1, {
        token: params.token,
        maxPerPayment: params.maxPerPayment,
        maxPerPeriod: params.maxPerPeriod,
        periodLength: params.periodLength,
        lifetimeMax: params.lifetimeMax,
        validFrom: params.validFrom,
        validUntil: params.validUntil,
        payeesRestricted: params.payeesRestricted,
      });
      expect((await pay.getPolicy(secondPolicy)).epoch).to.equal(0);
      await settleExpect(pay, relayer, usdcAddress, await batch(1n), ["None", "PolicyFrozen", "None"]);
    });
  });

  describe("payees", () => {
    it("a restricted policy pays only listed payees: PayeeNotAllowed until the payee is listed", async () => {
      const { pay, owner, relayer, payee, payee2, usdcAddress } = await loadFixture(settleFixture);
      const [device] = newDevices(1);
      const policyId = await register(pay, owner, device, usdcAddress, { payeesRestricted: true });
      await pay.connect(owner).setPayees(policyId, [payee.address], true);
      const items = [
        await signed(pay, device, { payee: payee.address, token: usdcAddress, nonce: 0n }),
        await signed(pay, device, { payee: payee2.address, token: usdcAddress, nonce: 1n }),
      ];
      await settleExpect(pay, relayer, usdcAddress, items, ["None", "PayeeNotAllowed"]);
      await pay.connect(owner).setPayees(policyId, [payee2.address], true);
      await settleExpect(pay, relayer, usdcAddress, items, ["NonceUsed", "None"]);
      await pay.connect(owner).setPayees(policyId, [payee.address], false);
      await settleExpect(
        pay,
        relayer,
        usdcAddress,
        [await signed(pay, device, { payee: payee.address, token: usdcAddress, nonce: 2n })],
        ["PayeeNotAllowed"],
      );
    });

    it("the zero payee is InvalidPayee, restricted policy or not", async () => {
      const { pay, owner, relayer, usdcAddress, device } = await loadFixture(deviceFixture);
      const [restricted] = newDevices(1);
      const policyId = await register(pay, owner, restricted, usdcAddress, { payeesRestricted: true });
      await pay.connect(owner).setPayees(policyId, [ZERO], true);
      await settleExpect(
        pay,
        relayer,
        usdcAddress,
        [
          await signed(pay, device, { payee: ZERO, token: usdcAddress }),
          await signed(pay, restricted, { payee: ZERO, token: usdcAddress }),
        ],
        ["InvalidPayee", "InvalidPayee"],
      );
    });
  });

  describe("fees", () => {
    it("a fee up to maxFee is credited to the fee recipient and charged to the owner", async () => {
      const { pay, owner, relayer, payee, stranger, usdcAddress, device } = await loadFixture(deviceFixture);
      const ownerBefore = await pay.balanceOf(owner.address, usdcAddress);
      const spec = { payee: payee.address, token: usdcAddress, amount: USDC(2), maxFee: 500n };
      const out = await settleExpect(
        pay,
        relayer,
        usdcAddress,
        [
          await signed(pay, device, { ...spec, nonce: 0n }, 500n),
          await signed(pay, device, { ...spec, nonce: 1n }, 499n),
        ],
        ["None", "None"],
        { feeRecipient: stranger.address },
      );
      await expectPaymentSettled(pay, out.tx, {
        device: device.address,
        payee: payee.address,
        token: usdcAddress,
        amount: USDC(2),
        nonce: 0n,
        fee: 500n,
      });
      await expect(out.tx).to.emit(pay, "BatchSettled").withArgs(relayer.address, stranger.address, usdcAddress, 2, 0);
      expect(await pay.balanceOf(stranger.address, usdcAddress)).to.equal(999n);
      expect(await pay.balanceOf(relayer.address, usdcAddress)).to.equal(0n);
      expect(await pay.balanceOf(payee.address, usdcAddress)).to.equal(USDC(4));
      expect(await pay.balanceOf(owner.address, usdcAddress)).to.equal(ownerBefore - USDC(4) - 999n);
    });

    it("feeRecipient address(0) credits the fee to the submitter", async () => {
      const { pay, relayer, payee, usdcAddress, device } = await loadFixture(deviceFixture);
      const spec = { payee: payee.address, token: usdcAddress, maxFee: 700n };
      const out = await settleExpect(pay, relayer, usdcAddress, [await signed(pay, device, spec, 700n)], ["None"]);
      await expect(out.tx).to.emit(pay, "BatchSettled").withArgs(relayer.address, relayer.address, usdcAddress, 1, 0);
      expect(await pay.balanceOf(relayer.address, usdcAddress)).to.equal(700n);
      expect(await pay.balanceOf(ZERO, usdcAddress)).to.equal(0n);
    });

    it("a fee above maxFee is FeeAboveMax (maxFee 0 allows no fee at all)", async () => {
      const { pay, relayer, payee, usdcAddress, device } = await loadFixture(deviceFixture);
      const spec = { payee: payee.address, token: usdcAddress };
      await settleExpect(
        pay,
        relayer,
        usdcAddress,
        [
          await signed(pay, device, { ...spec, nonce: 0n, maxFee: 100n }, 101n),
          await signed(pay, device, { ...spec, nonce: 1n }, 1n),
          await signed(pay, device, { ...spec, nonce: 2n }, 0n),
        ],
        ["FeeAboveMax", "FeeAboveMax", "None"],
      );
      expect(await pay.balanceOf(relayer.address, usdcAddress)).to.equal(0n);
    });

    it("the fee counts against the per-payment, period and lifetime caps", async () => {
      const { pay, owner, relayer, payee, usdcAddress } = await loadFixture(settleFixture);
      const [device] = newDevices(1);
      await register(pay, owner, device, usdcAddress, {
        maxPerPayment: USDC(5),
        maxPerPeriod: USDC(8),
        lifetimeMax: USDC(9),
        periodLength: HUGE_PERIOD,
      });
      const spec = { payee: payee.address, token: usdcAddress, maxFee: USDC(2) };
      await settleExpect(
        pay,
        relayer,
        usdcAddress,
        [
          await signed(pay, device, { ...spec, nonce: 0n, amount: USDC(4) }, USDC(1) + 1n), // 5 + 1 unit > 5
          await signed(pay, device, { ...spec, nonce: 1n, amount: USDC(4) }, USDC(1)), // 5: spent 5
          await signed(pay, device, { ...spec, nonce: 2n, amount: USDC(2) }, USDC(1) + 1n), // 8 + 1 unit > 8
          await signed(pay, device, { ...spec, nonce: 3n, amount: USDC(2) }, USDC(1)), // 8: spent 8
        ],
        ["ExceedsPaymentCap", "None", "ExceedsPeriodCap", "None"],
      );
      const state = await pay.getDevice(device.address);
      expect([state.periodSpent, state.lifetimeSpent]).to.deep.equal([USDC(8), USDC(8)]);
      await pay.connect(owner).updatePolicy(1, {
        token: usdcAddress,
        maxPerPayment: USDC(5),
        maxPerPeriod: USDC(100),
        periodLength: HUGE_PERIOD,
        lifetimeMax: USDC(9),
        validFrom: 0,
        validUntil: 0,
        payeesRestricted: false,
      });
      await settleExpect(
        pay,
        relayer,
        usdcAddress,
        [
          await signed(pay, device, { ...spec, nonce: 4n, amount: 1n }, USDC(1)), // 8 + 1 + 1 unit > 9
          await signed(pay, device, { ...spec, nonce: 5n, amount: 1n }, USDC(1) - 1n), // exactly 9
        ],
        ["ExceedsLifetimeCap", "None"],
      );
    });
  });

  describe("owner balance", () => {
    it("settles amount + fee equal to the balance; one unit more is InsufficientBalance", async () => {
      const { pay, owner2, relayer, payee, usdcAddress } = await loadFixture(settleFixture);
      const owner3 = (await ethers.getSigners())[6];
      const [device] = newDevices(1);
      await register(pay, owner3, device, usdcAddress);
      await pay.connect(owner2).depositFor(owner3.address, usdcAddress, USDC(3));
      const spec = { payee: payee.address, token: usdcAddress, maxFee: USDC(1) };
      await settleExpect(
        pay,
        relayer,
        usdcAddress,
        [
          await signed(pay, device, { ...spec, nonce: 0n, amount: USDC(2) + 1n }, USDC(1)), // 3 USDC + 1 unit
          await signed(pay, device, { ...spec, nonce: 1n, amount: USDC(2) }, USDC(1)), // exactly 3 USDC
          await signed(pay, device, { ...spec, nonce: 2n, amount: 1n }),
        ],
        ["InsufficientBalance", "None", "InsufficientBalance"],
      );
      expect(await pay.balanceOf(owner3.address, usdcAddress)).to.equal(0n);
      await pay.connect(owner2).depositFor(owner3.address, usdcAddress, USDC(3));
      await settleExpect(
        pay,
        relayer,
        usdcAddress,
        [
          await signed(pay, device, { ...spec, nonce: 3n, amount: USDC(3) }, 1n),
          await signed(pay, device, { ...spec, nonce: 0n, amount: USDC(3) }), // nonce 0 was not used up
        ],
        ["InsufficientBalance", "None"],
      );
      expect(await pay.balanceOf(owner3.address, usdcAddress)).to.equal(0n);
    });

    it("after a batch: owner debited amount + fee, payees credited amounts, recipient the fees", async () => {
      const { pay, owner, relayer, payee, payee2, stranger, usdcAddress, device, accounts } =
        await loadFixture(deviceFixture);
      const before = await ledger(pay, usdcAddress, accounts);
      const spec = { token: usdcAddress, maxFee: 1_000n };
      const plan = [
        { payee: payee.address, amount: 1_234_567n, fee: 1_000n },
        { payee: payee2.address, amount: 2n, fee: 0n },
        { payee: payee.address, amount: USDC(10) - 999n, fee: 999n },
      ];
      await settleExpect(
        pay,
        relayer,
        usdcAddress,
        await Promise.all(
          plan.map((m, i) =>
            signed(pay, device, { ...spec, payee: m.payee, amount: m.amount, nonce: BigInt(i) }, m.fee),
          ),
        ),
        ["None", "None", "None"],
        { feeRecipient: stranger.address },
      );
      const expected = applyMoves(
        before,
        plan.map((m) => ({ ...m, owner: owner.address })),
        stranger.address,
      );
      expect(await ledger(pay, usdcAddress, accounts)).to.deep.equal(expected);
      await expectLedgerMatchesHoldings(pay, usdcAddress, accounts);
    });
  });

  describe("batches across owners (the owner balance is cached per run of items)", () => {
    /** Owners A (owner), B (owner2), C (signers[6], 5 USDC); devices a1, a2 (two policies of A), b1, c1. */
    async function twoOwnersFixture() {
      const f = await settleFixture();
      const ownerC = (await ethers.getSigners())[6];
      const [a1, a2, b1, c1] = newDevices(4);
      const caps = { maxPerPayment: USDC(50), periodLength: HUGE_PERIOD };
      await register(f.pay, f.owner, a1, f.usdcAddress, caps);
      await register(f.pay, f.owner, a2, f.usdcAddress, caps);
      await register(f.pay, f.owner2, b1, f.usdcAddress, caps);
      await register(f.pay, ownerC, c1, f.usdcAddress, caps);
      await f.pay.connect(f.owner2).depositFor(ownerC.address, f.usdcAddress, USDC(5));
      return { ...f, ownerC, a1, a2, b1, c1 };
    }

    type Step = {
      device: ReturnType<typeof newDevices>[number];
      owner: string;
      payee: string;
      amount: bigint;
      fee?: bigint;
      maxFee?: bigint;
      expect: keyof typeof R;
    };

    async function runSteps(
      f: Awaited<ReturnType<typeof twoOwnersFixture>>,
      submitter: SettleFixture["relayer"],
      feeRecipient: string,
      nonces: Map<string, bigint>,
      steps: Step[],
    ) {
      const { pay, usdcAddress, accounts } = f;
      const items = [];
      for (const s of steps) {
        const nonce = nonces.get(s.device.address) ?? 0n;
        nonces.set(s.device.address, nonce + 1n);
        items.push(
          await signed(
            pay,
            s.device,
            { payee: s.payee, token: usdcAddress, amount: s.amount, nonce, maxFee: s.maxFee ?? USDC(1) },
            s.fee ?? 0n,
          ),
        );
      }
      const before = await ledger(pay, usdcAddress, accounts);
      await settleExpect(
        pay,
        submitter,
        usdcAddress,
        items,
        steps.map((s) => s.expect),
        { feeRecipient: feeRecipient === submitter.address ? ZERO : feeRecipient },
      );
      const moves: Move[] = steps
        .filter((s) => s.expect === "None")
        .map((s) => ({ owner: s.owner, payee: s.payee, amount: s.amount, fee: s.fee ?? 0n }));
      expect(await ledger(pay, usdcAddress, accounts)).to.deep.equal(applyMoves(before, moves, feeRecipient));
      await expectLedgerMatchesHoldings(pay, usdcAddress, accounts);
    }

    it("every balance is exact when payees and the fee recipient are owners of devices in the batch", async () => {
      const f = await loadFixture(twoOwnersFixture);
      const { owner, owner2, ownerC, relayer, payee, payee2, a1, a2, b1, c1 } = f;
      const [A, B, C, X, Y] = [owner.address, owner2.address, ownerC.address, payee.address, payee2.address];
      const nonces = new Map<string, bigint>();
      // Fees to A, submitted by the relayer.
      await runSteps(f, relayer, A, nonces, [
        { device: a1, owner: A, payee: X, amount: USDC(2), fee: 100n, expect: "None" },
        { device: a1, owner: A, payee: B, amount: USDC(1), fee: 100n, expect: "None" }, // payee: next run's owner
        { device: b1, owner: B, payee: A, amount: USDC(3), fee: 200n, expect: "None" }, // payee and fee: previous owner
        { device: a2, owner: A, payee: A, amount: USDC(1), fee: 100n, expect: "None" }, // owner pays itself
        { device: c1, owner: C, payee: X, amount: USDC(3), expect: "None" }, // C: 5 -> 2
        { device: c1, owner: C, payee: Y, amount: USDC(3), expect: "InsufficientBalance" }, // 2 < 3
        { device: a1, owner: A, payee: C, amount: USDC(4), fee: 100n, expect: "None" }, // C: 2 -> 6 while A is cached
        { device: c1, owner: C, payee: Y, amount: USDC(3), expect: "None" }, // sees the credit: 6 -> 3
        { device: b1, owner: B, payee: B, amount: USDC(2), fee: 300n, expect: "None" }, // B pays itself
        { device: b1, owner: B, payee: C, amount: USDC(1), fee: 100n, expect: "None" }, // C credited while B is cached
        { device: a1, owner: A, payee: X, amount: 1n, fee: USDC(2), expect: "FeeAboveMax" },
        { device: c1, owner: C, payee: C, amount: USDC(4) - 1n, fee: 1n, expect: "None" }, // C: 4 -> 4 - 1 unit
        { device: c1, owner: C, payee: X, amount: USDC(4), expect: "InsufficientBalance" },
      ]);
      // Fees to the submitter B (feeRecipient 0), who owns devices in the batch.
      await runSteps(f, owner2, B, nonces, [
        { device: b1, owner: B, payee: A, amount: USDC(1), fee: 100n, expect: "None" }, // fee to B while B is cached
        { device: a1, owner: A, payee: B, amount: USDC(1), fee: 200n, expect: "None" }, // payee and fee B, A cached
        { device: c1, owner: C, payee: B, amount: USDC(3), fee: 300n, expect: "None" },
        { device: b1, owner: B, payee: X, amount: USDC(1), fee: 100n, expect: "None" },
        { device: a2, owner: A, payee: A, amount: USDC(1), fee: 100n, expect: "None" },
      ]);
      // Fees to C, whose devices run out of money mid-batch, submitted by A.
      await runSteps(f, owner, C, nonces, [
        { device: c1, owner: C, payee: X, amount: USDC(1), fee: 1n, expect: "InsufficientBalance" },
        { device: b1, owner: B, payee: Y, amount: USDC(1), fee: USDC(1), expect: "None" },
        { device: c1, owner: C, payee: X, amount: USDC(1) - 1n, fee: 1n, expect: "None" },
        { device: a1, owner: A, payee: C, amount: USDC(5), fee: 500n, expect: "None" },
        { device: c1, owner: C, payee: A, amount: USDC(5), fee: 500n, expect: "None" },
      ]);
      // Cross-check of the model, worked out by hand for C: 1 USDC + 200 units.
      expect(await f.pay.balanceOf(C, f.usdcAddress)).to.equal(USDC(1) + 200n);
    });
  });

  describe("preview", () => {
    /** A device of owner3 (6 USDC) with a 5 USDC period cap, and the owner's plain device. */
    async function previewFixture() {
      const f = await deviceFixture();
      const owner3 = (await ethers.getSigners())[6];
      const [capped] = newDevices(1);
      await register(f.pay, owner3, capped, f.usdcAddress, { maxPerPeriod: USDC(5), periodLength: HUGE_PERIOD });
      await f.pay.connect(f.owner2).depositFor(owner3.address, f.usdcAddress, USDC(6));
      return { ...f, owner3, capped };
    }

    it("returns what settle then does, including effects within the batch, and changes no state", async () => {
      const { pay, relayer, payee, usdcAddress, device, capped, accounts, owner3 } = await loadFixture(previewFixture);
      const to = { payee: payee.address, token: usdcAddress };
      const items = [
        await signed(pay, capped, { ...to, nonce: 0n, amount: USDC(3) }),
        await signed(pay, capped, { ...to, nonce: 0n, amount: USDC(1) }), // same nonce twice: NonceUsed
        await signed(pay, capped, { ...to, nonce: 1n, amount: USDC(3) }), // 3 + 3 > 5: the cap is spent
        await signed(pay, device, { ...to, nonce: 0n, maxFee: 5n }, 5n),
        await signed(pay, capped, { ...to, nonce: 2n, amount: USDC(2) }), // exactly the cap
        await signed(pay, capped, { ...to, nonce: 3n, amount: 1n }), // period spent
        { ...(await signed(pay, device, { ...to, nonce: 1n })), r: word(0n) },
      ];
      const expected = [
        "None",
        "NonceUsed",
        "ExceedsPeriodCap",
        "None",
        "None",
        "ExceedsPeriodCap",
        "InvalidSignature",
      ].map((name) => R[name as keyof typeof R]);

      const [previewReasons, previewDevices] = await pay.connect(relayer).preview.staticCall(usdcAddress, items, ZERO);
      expect(previewReasons.map(Number)).to.deep.equal(expected);
      expect(previewDevices).to.deep.equal([
        capped.address,
        capped.address,
        capped.address,
        device.address,
        capped.address,
        capped.address,
        ZERO,
      ]);

      // Sent as a transaction, preview leaves balances, counters and nonces as they were.
      const ledgerBefore = await ledger(pay, usdcAddress, accounts);
      const devicesBefore = await Promise.all([capped, device].map((x) => pay.getDevice(x.address)));
      const receipt = (await (await pay.connect(relayer).preview(usdcAddress, items, ZERO)).wait())!;
      expect(receipt.logs, "no event survives preview").to.have.length(0);
      expect(await ledger(pay, usdcAddress, accounts)).to.deep.equal(ledgerBefore);
      expect(await Promise.all([capped, device].map((x) => pay.getDevice(x.address)))).to.deep.equal(devicesBefore);

      // settle returns nothing (per-item results are preview's and the events').
      const settleCall = pay.interface.encodeFunctionData("settle", [usdcAddress, items, ZERO]);
      const returned = await ethers.provider.call({
        from: relayer.address,
        to: await pay.getAddress(),
        data: settleCall,
      });
      expect(returned, "settle's return data").to.equal("0x");

      // Settle then does exactly what preview said.
      const out = await settleExpect(pay, relayer, usdcAddress, items, expected);
      expect(out.devices).to.deep.equal([...previewDevices]);
      expect(await pay.balanceOf(owner3.address, usdcAddress)).to.equal(USDC(1));
      expect(await pay.balanceOf(relayer.address, usdcAddress)).to.equal(5n);
    });

    it("sees balance exhaustion within the batch, and the same batch previewed after settling is all NonceUsed", async () => {
      const { pay, relayer, payee, usdcAddress, capped, owner3 } = await loadFixture(previewFixture);
      const to = { payee: payee.address, token: usdcAddress };
      await pay.connect(owner3).updatePolicy(2, {
        token: usdcAddress,
        maxPerPayment: USDC(10),
        maxPerPeriod: USDC(100),
        periodLength: HUGE_PERIOD,
        lifetimeMax: USDC(100),
        validFrom: 0,
        validUntil: 0,
        payeesRestricted: false,
      });
      const items = [
        await signed(pay, capped, { ...to, nonce: 0n, amount: USDC(4) }),
        await signed(pay, capped, { ...to, nonce: 1n, amount: USDC(4) }), // 2 left
        await signed(pay, capped, { ...to, nonce: 2n, amount: USDC(2) }),
      ];
      const [reasons] = await pay.preview.staticCall(usdcAddress, items, ZERO);
      expect(reasons.map((r) => REASONS[Number(r)])).to.deep.equal(["None", "InsufficientBalance", "None"]);
      await settleExpect(pay, relayer, usdcAddress, items, ["None", "InsufficientBalance", "None"]);
      const [after] = await pay.preview.staticCall(usdcAddress, items, ZERO);
      expect(after.map((r) => REASONS[Number(r)])).to.deep.equal(["NonceUsed", "InsufficientBalance", "NonceUsed"]);
    });
  });

  describe("arithmetic bounds", () => {
    // Regression: amount + fee was once a checked uint96 addition, so amount = 2^96 - 1 with fee >= 1
    // reverted the whole batch with Panic(0x11). The sum is now taken in uint256.
    it("an amount + fee above 2^96 - 1 is skipped as ExceedsPaymentCap, not a reverted batch", async () => {
      const { pay, relayer, payee, usdcAddress, device } = await loadFixture(deviceFixture);
      const to = { payee: payee.address, token: usdcAddress };
      await settleExpect(
        pay,
        relayer,
        usdcAddress,
        [
          await signed(pay, device, { ...to, nonce: 0n, amount: (1n << 96n) - 1n, maxFee: 1n }, 1n),
          await signed(pay, device, { ...to, nonce: 1n }),
        ],
        ["ExceedsPaymentCap", "None"],
      );
    });

    it("amount 2^96 - 1 with no fee is skipped as ExceedsPaymentCap (caps are 64-bit)", async () => {
      const { pay, relayer, payee, usdcAddress, device } = await loadFixture(deviceFixture);
      const to = { payee: payee.address, token: usdcAddress };
      await settleExpect(
        pay,
        relayer,
        usdcAddress,
        [
          await signed(pay, device, { ...to, nonce: 0n, amount: (1n << 96n) - 1n, maxFee: (1n << 96n) - 1n }),
          await signed(pay, device, { ...to, nonce: 1n }),
        ],
        ["ExceedsPaymentCap", "None"],
      );
    });
  });
});
