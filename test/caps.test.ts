import { loadFixture, time } from "@nomicfoundation/hardhat-network-helpers";
import { expect } from "chai";
import type { BaseWallet } from "ethers";
import { ethers } from "hardhat";
import type { IMachinePay } from "../typechain-types";
import { newDevices, policyParams, USDC, ZERO } from "./helpers";
import { R, register, settleExpect, settleFixture, signed } from "./settle-helpers";

const HOUR = 3_600;
const HUGE_PERIOD = 2 ** 32 - 1;
const REVOKED = 2n ** 32n - 1n;

/** The start of the first whole period window of `length` seconds after the latest block. */
async function nextWindow(length: number) {
  return (Math.floor((await time.latest()) / length) + 1) * length;
}

/** settleFixture plus owner3 (signers[6]), who starts with nothing in escrow, and a helper to fund it. */
async function capsFixture() {
  const f = await settleFixture();
  const owner3 = (await ethers.getSigners())[6];
  const fund = (amount: bigint) => f.pay.connect(f.owner2).depositFor(owner3.address, f.usdcAddress, amount);
  return { ...f, owner3, fund };
}

type F = Awaited<ReturnType<typeof capsFixture>>;

/** A device of `owner` (default: the fixture's owner) on a new USDC policy with `overrides`. */
async function capped(f: F, overrides: Partial<IMachinePay.PolicyParamsStruct>, owner = f.owner) {
  const [device] = newDevices(1);
  const policyId = await register(f.pay, owner, device, f.usdcAddress, overrides);
  return { device, policyId };
}

/** Pay `amount` (+ `fee`, maxFee = fee) from `device` to the fixture's payee with `nonce`. */
function pay(f: F, device: BaseWallet, nonce: bigint, amount: bigint, fee = 0n) {
  return signed(f.pay, device, { payee: f.payee.address, token: f.usdcAddress, nonce, amount, maxFee: fee }, fee);
}

describe("caps", () => {
  describe("per payment", () => {
    it("amount + fee equal to maxPerPayment settles; one unit more is ExceedsPaymentCap", async () => {
      const f = await loadFixture(capsFixture);
      const { device } = await capped(f, { maxPerPayment: USDC(5), periodLength: HUGE_PERIOD });
      await settleExpect(
        f.pay,
        f.relayer,
        f.usdcAddress,
        [
          await pay(f, device, 0n, USDC(5) + 1n),
          await pay(f, device, 1n, USDC(5)),
          await pay(f, device, 2n, USDC(4), USDC(1) + 1n),
          await pay(f, device, 3n, USDC(4), USDC(1)),
          await pay(f, device, 4n, 1n, USDC(5)),
        ],
        ["ExceedsPaymentCap", "None", "ExceedsPaymentCap", "None", "ExceedsPaymentCap"],
      );
      const state = await f.pay.getDevice(device.address);
      expect(state.lifetimeSpent).to.equal(USDC(10));
    });
  });

  describe("per period", () => {
    it("reaching the period cap exactly settles; one unit more is ExceedsPeriodCap", async () => {
      const f = await loadFixture(capsFixture);
      const { device } = await capped(f, { maxPerPayment: USDC(10), maxPerPeriod: USDC(10), periodLength: HOUR });
      const start = await nextWindow(HOUR);
      await settleExpect(
        f.pay,
        f.relayer,
        f.usdcAddress,
        [await pay(f, device, 0n, USDC(4)), await pay(f, device, 1n, USDC(6) - 100n, 100n)],
        ["None", "None"],
        { at: start + 10 },
      );
      await settleExpect(
        f.pay,
        f.relayer,
        f.usdcAddress,
        [await pay(f, device, 2n, 1n), await pay(f, device, 3n, 0n, 1n)],
        ["ExceedsPeriodCap", "ExceedsPeriodCap"],
        { at: start + HOUR - 1 },
      );
      const state = await f.pay.getDevice(device.address);
      expect([state.periodIndex, state.periodSpent]).to.deep.equal([BigInt(start / HOUR), USDC(10)]);
    });

    it("windows are fixed [k*len, (k+1)*len) of unix time: the next window starts fresh and unspent allowance does not roll over", async () => {
      const f = await loadFixture(capsFixture);
      const { device } = await capped(f, { maxPerPayment: USDC(20), maxPerPeriod: USDC(10), periodLength: HOUR });
      const start = await nextWindow(HOUR);
      // Window k: spend 4 of 10, in its last second; 7 more would exceed.
      await settleExpect(
        f.pay,
        f.relayer,
        f.usdcAddress,
        [await pay(f, device, 0n, USDC(4)), await pay(f, device, 1n, USDC(7))],
        ["None", "ExceedsPeriodCap"],
        { at: start + HOUR - 1 },
      );
      // Window k+1 starts at (k+1)*len: 10 is fresh, the 6 left over from window k is gone.
      await settleExpect(
        f.pay,
        f.relayer,
        f.usdcAddress,
        [await pay(f, device, 2n, USDC(10) + 1n), await pay(f, device, 3n, USDC(10)), await pay(f, device, 4n, 1n)],
        ["ExceedsPeriodCap", "None", "ExceedsPeriodCap"],
        { at: start + HOUR },
      );
      let state = await f.pay.getDevice(device.address);
      expect([state.periodIndex, state.periodSpent, state.lifetimeSpent]).to.deep.equal([
        BigInt(start / HOUR + 1),
        USDC(10),
        USDC(14),
      ]);
      // Several windows later: fresh again, and the counter is for the new window only.
      await settleExpect(f.pay, f.relayer, f.usdcAddress, [await pay(f, device, 5n, USDC(3))], ["None"], {
        at: start + 5 * HOUR + 7,
      });
      state = await f.pay.getDevice(device.address);
      expect([state.periodIndex, state.periodSpent]).to.deep.equal([BigInt(start / HOUR + 5), USDC(3)]);
    });

    it("the window is aligned to unix time, not to the device's first payment", async () => {
      const f = await loadFixture(capsFixture);
      const { device } = await capped(f, { maxPerPayment: USDC(10), maxPerPeriod: USDC(10), periodLength: HOUR });
      const start = await nextWindow(HOUR);
      await settleExpect(f.pay, f.relayer, f.usdcAddress, [await pay(f, device, 0n, USDC(10))], ["None"], {
        at: start + HOUR - 1,
      });
      // One second later is a new window: the full allowance again, twice within a two-second span.
      await settleExpect(f.pay, f.relayer, f.usdcAddress, [await pay(f, device, 1n, USDC(10))], ["None"], {
        at: start + HOUR,
      });
      expect((await f.pay.getDevice(device.address)).lifetimeSpent).to.equal(USDC(20));
    });
  });

  describe("lifetime", () => {
    it("reaching lifetimeMax exactly settles; one unit more is ExceedsLifetimeCap, in any later period", async () => {
      const f = await loadFixture(capsFixture);
      const { device } = await capped(f, {
        maxPerPayment: USDC(10),
        maxPerPeriod: USDC(100),
        lifetimeMax: USDC(25),
        periodLength: HOUR,
      });
      const start = await nextWindow(HOUR);
      await settleExpect(
        f.pay,
        f.relayer,
        f.usdcAddress,
        [
          await pay(f, device, 0n, USDC(10)),
          await pay(f, device, 1n, USDC(10)),
          await pay(f, device, 2n, USDC(5) + 1n),
          await pay(f, device, 3n, USDC(4), USDC(1)),
          await pay(f, device, 4n, 1n),
        ],
        ["None", "None", "ExceedsLifetimeCap", "None", "ExceedsLifetimeCap"],
        { at: start + 1 },
      );
      await settleExpect(
        f.pay,
        f.relayer,
        f.usdcAddress,
        [await pay(f, device, 5n, 1n), await pay(f, device, 6n, 0n)],
        ["ExceedsLifetimeCap", "None"],
        { at: start + 3 * HOUR },
      );
      expect((await f.pay.getDevice(device.address)).lifetimeSpent).to.equal(USDC(25));
    });
  });

  describe("headroom", () => {
    it("reports the policy's caps, the owner's balance and spendable for a fresh device", async () => {
      const f = await loadFixture(capsFixture);
      const { device, policyId } = await capped(f, {
        maxPerPayment: USDC(7),
        maxPerPeriod: USDC(30),
        lifetimeMax: USDC(90),
        periodLength: HOUR,
      });
      const start = await nextWindow(HOUR);
      await time.increaseTo(start + 5);
      const h = await f.pay.headroom(device.address);
      expect(h.status).to.equal(R.None);
      expect([h.policyId, h.owner, h.token]).to.deep.equal([policyId, f.owner.address, f.usdcAddress]);
      expect([h.perPayment, h.period, h.lifetime]).to.deep.equal([USDC(7), USDC(30), USDC(90)]);
      expect(h.balance).to.equal(await f.pay.balanceOf(f.owner.address, f.usdcAddress));
      expect(h.spendable).to.equal(USDC(7));
      expect(h.periodEndsAt).to.equal(start + HOUR);
      expect([h.nonceTop, h.nonceWindow]).to.deep.equal([0n, 0n]);
    });

    it("tracks what is left of the period and lifetime after payments, and the nonce window", async () => {
      const f = await loadFixture(capsFixture);
      await f.fund(USDC(50));
      const { device } = await capped(
        f,
        { maxPerPayment: USDC(10), maxPerPeriod: USDC(30), lifetimeMax: USDC(45), periodLength: HOUR },
        f.owner3,
      );
      const start = await nextWindow(HOUR);
      await settleExpect(
        f.pay,
        f.relayer,
        f.usdcAddress,
        [await pay(f, device, 3n, USDC(10)), await pay(f, device, 5n, USDC(9), USDC(1))],
        ["None", "None"],
        { at: start + 10 },
      );
      let h = await f.pay.headroom(device.address);
      expect([h.perPayment, h.period, h.lifetime, h.balance]).to.deep.equal([USDC(10), USDC(10), USDC(25), USDC(30)]);
      expect(h.spendable).to.equal(USDC(10));
      expect([h.nonceTop, h.nonceWindow]).to.deep.equal([5n, 0b101n]);
      expect(h.periodEndsAt).to.equal(start + HOUR);
      // Next window: the period allowance is whole again; the lifetime is not.
      await settleExpect(
        f.pay,
        f.relayer,
        f.usdcAddress,
        [await pay(f, device, 6n, USDC(10)), await pay(f, device, 7n, USDC(10))],
        ["None", "None"],
        { at: start + HOUR },
      );
      h = await f.pay.headroom(device.address);
      expect([h.period, h.lifetime, h.balance, h.spendable]).to.deep.equal([USDC(10), USDC(5), USDC(10), USDC(5)]);
      expect(h.periodEndsAt).to.equal(start + 2 * HOUR);
    });

    it("reports period 0 (not an underflow) when a lowered cap is below what the period already spent", async () => {
      const f = await loadFixture(capsFixture);
      const params = policyParams(f.usdcAddress, { periodLength: HUGE_PERIOD, lifetimeMax: USDC(100) });
      const { device, policyId } = await capped(f, params);
      await settleExpect(f.pay, f.relayer, f.usdcAddress, [await pay(f, device, 0n, USDC(8))], ["None"]);
      await f.pay.connect(f.owner).updatePolicy(policyId, { ...params, maxPerPeriod: USDC(5), lifetimeMax: USDC(6) });
      const h = await f.pay.headroom(device.address);
      expect([h.status, h.period, h.lifetime, h.spendable]).to.deep.equal([BigInt(R.None), 0n, 0n, 0n]);
      await settleExpect(f.pay, f.relayer, f.usdcAddress, [await pay(f, device, 1n, 1n)], ["ExceedsPeriodCap"]);
    });

    it("status UnknownDevice for a key never registered, with nothing else filled in", async () => {
      const f = await loadFixture(capsFixture);
      const [stray] = newDevices(1);
      const h = await f.pay.headroom(stray.address);
      expect(h.status).to.equal(R.UnknownDevice);
      expect([h.policyId, h.owner, h.token, h.spendable, h.balance, h.periodEndsAt]).to.deep.equal([
        0n,
        ZERO,
        ZERO,
        0n,
        0n,
        0n,
      ]);
    });

    it("status DeviceRevoked for a revoked key, which keeps its nonces", async () => {
      const f = await loadFixture(capsFixture);
      const { device } = await capped(f, { periodLength: HUGE_PERIOD });
      await settleExpect(f.pay, f.relayer, f.usdcAddress, [await pay(f, device, 4n, 1n)], ["None"]);
      await f.pay.connect(f.owner).revokeDevice(device.address);
      const h = await f.pay.headroom(device.address);
      expect([h.status, h.policyId, h.spendable, h.nonceTop, h.nonceWindow]).to.deep.equal([
        BigInt(R.DeviceRevoked),
        REVOKED,
        0n,
        4n,
        1n,
      ]);
    });

    it("status DevicePaused, PolicyPaused, PolicyFrozen, NotYetValid, PolicyExpired: spendable 0, the rest still reported", async () => {
      const f = await loadFixture(capsFixture);
      const now = await time.latest();
      const caps = { maxPerPayment: USDC(3), periodLength: HUGE_PERIOD };
      const paused = await capped(f, caps);
      await f.pay.connect(f.owner).setDevicePaused(paused.device.address, true);
      const policyPaused = await capped(f, caps);
      await f.pay.connect(f.owner).setPolicyPaused(policyPaused.policyId, true);
      const notYet = await capped(f, { ...caps, validFrom: now + 1_000 });
      const expired = await capped(f, { ...caps, validUntil: now + 2 });
      const frozen = await capped(f, caps, f.owner2);
      await f.pay.connect(f.owner2).freezeAll();
      await time.increase(10);
      const cases: [{ device: BaseWallet }, keyof typeof R][] = [
        [paused, "DevicePaused"],
        [policyPaused, "PolicyPaused"],
        [notYet, "NotYetValid"],
        [expired, "PolicyExpired"],
        [frozen, "PolicyFrozen"],
      ];
      for (const [{ device }, status] of cases) {
        const h = await f.pay.headroom(device.address);
        expect(h.status, status).to.equal(R[status]);
        expect(h.spendable, status).to.equal(0n);
        expect(h.perPayment, status).to.equal(USDC(3));
        expect(h.balance, status).to.be.greaterThan(0n);
        // settle agrees with the status
        await settleExpect(f.pay, f.relayer, f.usdcAddress, [await pay(f, device, 0n, 1n)], [status]);
      }
      // Thawing the frozen policy makes it spendable again.
      await f.pay.connect(f.owner2).updatePolicy(frozen.policyId, policyParams(f.usdcAddress, caps));
      const h = await f.pay.headroom(frozen.device.address);
      expect([h.status, h.spendable]).to.deep.equal([BigInt(R.None), USDC(3)]);
    });
  });

  describe("spendable settles, spendable + 1 is skipped", () => {
    /** Check headroom's spendable both ways in one batch: spendable + 1 unit skipped with `reason`, spendable settled (with a fee). */
    async function checkSpendable(f: F, device: BaseWallet, expected: bigint, reason: keyof typeof R, at?: number) {
      if (at !== undefined) await time.increaseTo(at - 1);
      const h = await f.pay.headroom(device.address);
      expect(h.spendable).to.equal(expected);
      const top = (await f.pay.getDevice(device.address)).nonceTop + 100n;
      await settleExpect(
        f.pay,
        f.relayer,
        f.usdcAddress,
        [await pay(f, device, top, expected, 1n), await pay(f, device, top + 1n, expected - 1n, 1n)],
        [reason, "None"],
        at === undefined ? {} : { at },
      );
    }

    it("when the per-payment cap binds", async () => {
      const f = await loadFixture(capsFixture);
      const { device } = await capped(f, { maxPerPayment: USDC(4), periodLength: HUGE_PERIOD });
      await checkSpendable(f, device, USDC(4), "ExceedsPaymentCap");
      const h = await f.pay.headroom(device.address);
      expect([h.spendable, h.period]).to.deep.equal([USDC(4), USDC(96)]);
    });

    it("when the owner's balance binds", async () => {
      const f = await loadFixture(capsFixture);
      await f.fund(USDC(7) + 3n);
      const { device } = await capped(f, { maxPerPayment: USDC(10), periodLength: HUGE_PERIOD }, f.owner3);
      await checkSpendable(f, device, USDC(7) + 3n, "InsufficientBalance");
      const h = await f.pay.headroom(device.address);
      expect([h.balance, h.spendable]).to.deep.equal([0n, 0n]);
    });

    it("when the period allowance binds", async () => {
      const f = await loadFixture(capsFixture);
      const { device } = await capped(f, { maxPerPayment: USDC(10), maxPerPeriod: USDC(25), periodLength: HOUR });
      const start = await nextWindow(HOUR);
      await settleExpect(
        f.pay,
        f.relayer,
        f.usdcAddress,
        [await pay(f, device, 0n, USDC(10)), await pay(f, device, 1n, USDC(10) - 5n)],
        ["None", "None"],
        { at: start + 1 },
      );
      await checkSpendable(f, device, USDC(5) + 5n, "ExceedsPeriodCap", start + 100);
      const h = await f.pay.headroom(device.address);
      expect([h.period, h.spendable]).to.deep.equal([0n, 0n]);
    });

    it("when the lifetime allowance binds", async () => {
      const f = await loadFixture(capsFixture);
      const { device } = await capped(f, {
        maxPerPayment: USDC(10),
        lifetimeMax: USDC(13),
        periodLength: HUGE_PERIOD,
      });
      await settleExpect(f.pay, f.relayer, f.usdcAddress, [await pay(f, device, 0n, USDC(10))], ["None"]);
      await checkSpendable(f, device, USDC(3), "ExceedsLifetimeCap");
      const h = await f.pay.headroom(device.address);
      expect([h.lifetime, h.spendable]).to.deep.equal([0n, 0n]);
    });
  });
});
