import { loadFixture, time } from "@nomicfoundation/hardhat-network-helpers";
import { expect } from "chai";
import { ethers } from "hardhat";
import { privateKeyToAccount } from "viem/accounts";
import { type Address, MemoryNonceBackend, packVoucher, Tab } from "../sdk/src";
import { DAY, domainOf, enrollment, newDevices, policyParams, USDC, ZERO } from "./helpers";
import { expectLedgerMatchesHoldings, R, register, settleExpect, settleFixture, signed, word } from "./settle-helpers";
import {
  expectVoucherSettled,
  HUGE_PERIOD,
  NOTICE_PERIOD,
  nextWindow,
  settleVouchersExpect,
  signTabClose,
  tabFixtureWith,
  tabOf,
  voucherBy,
  withFee,
} from "./tab-helpers";

/** One device of the owner on the default policy: 10 USDC per payment, 100 per period, 1,000 lifetime. */
async function tabFixture() {
  return tabFixtureWith();
}

/** One device whose policy allows 5 USDC per payment (100 per period). */
async function paymentCapFixture() {
  return tabFixtureWith({ maxPerPayment: USDC(5) });
}

/** One device whose policy allows 10 USDC per (huge) period, and per payment. */
async function periodCapFixture() {
  return tabFixtureWith({ maxPerPayment: USDC(10), maxPerPeriod: USDC(10) });
}

/** One device whose policy allows 10 per payment and 10 per period, 14 in its lifetime. */
async function sharedCapsFixture() {
  return tabFixtureWith({ maxPerPayment: USDC(10), maxPerPeriod: USDC(10), lifetimeMax: USDC(14) });
}

/** Hardhat's 10th well-known test key (public: never use it for value). */
const HARDHAT_KEY_9 = "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6";

describe("tabs", () => {
  describe("settling the increment", () => {
    it("a voucher pays cumulative - settled, emits VoucherSettled and getTab reflects the new total", async () => {
      const f = await loadFixture(tabFixture);
      const { pay, relayer, payee, owner, usdcAddress, device } = f;
      const to = { payee: payee.address, token: usdcAddress };
      const ownerBefore = await pay.balanceOf(owner.address, usdcAddress);
      const payeeBefore = await pay.balanceOf(payee.address, usdcAddress);
      expect(await tabOf(pay, device.address, payee.address, usdcAddress)).to.deep.equal({ settled: 0n, closesAt: 0n });

      const first = await settleVouchersExpect(
        pay,
        relayer,
        usdcAddress,
        [await voucherBy(pay, device, { ...to, cumulative: USDC(3) })],
        ["None"],
      );
      await expectVoucherSettled(pay, first.tx, {
        device: device.address,
        payee: payee.address,
        token: usdcAddress,
        tabId: 1n,
        increment: USDC(3),
        cumulative: USDC(3),
      });
      expect((await tabOf(pay, device.address, payee.address, usdcAddress)).settled).to.equal(USDC(3));

      const second = await settleVouchersExpect(
        pay,
        relayer,
        usdcAddress,
        [await voucherBy(pay, device, { ...to, cumulative: USDC(5) + 7n })],
        ["None"],
      );
      await expectVoucherSettled(pay, second.tx, {
        device: device.address,
        payee: payee.address,
        token: usdcAddress,
        tabId: 1n,
        increment: USDC(2) + 7n,
        cumulative: USDC(5) + 7n,
      });
      await expect(second.tx)
        .to.emit(pay, "BatchSettled")
        .withArgs(relayer.address, relayer.address, usdcAddress, 1, 0);
      expect(await tabOf(pay, device.address, payee.address, usdcAddress)).to.deep.equal({
        settled: USDC(5) + 7n,
        closesAt: 0n,
      });
      expect(await pay.balanceOf(payee.address, usdcAddress)).to.equal(payeeBefore + USDC(5) + 7n);
      expect(await pay.balanceOf(owner.address, usdcAddress)).to.equal(ownerBefore - USDC(5) - 7n);
      const state = await pay.getDevice(device.address);
      expect([state.periodSpent, state.lifetimeSpent]).to.deep.equal([USDC(5) + 7n, USDC(5) + 7n]);
      await expectLedgerMatchesHoldings(pay, usdcAddress, f.accounts);
    });

    it("an older voucher after a newer one is VoucherStale and pays nothing; an equal cumulative is stale too", async () => {
      const { pay, relayer, payee, usdcAddress, device } = await loadFixture(tabFixture);
      const to = { payee: payee.address, token: usdcAddress };
      const v2 = await voucherBy(pay, device, { ...to, cumulative: USDC(2) });
      const v4 = await voucherBy(pay, device, { ...to, cumulative: USDC(4) });
      // Same cumulative as v4 but another (signed) deadline: a different voucher for the same total.
      const v4b = await voucherBy(pay, device, { ...to, cumulative: USDC(4), deadline: 4_000_000_000n });
      await settleVouchersExpect(pay, relayer, usdcAddress, [v4], ["None"]);
      const payeeBefore = await pay.balanceOf(payee.address, usdcAddress);
      const out = await settleVouchersExpect(pay, relayer, usdcAddress, [v2, v4b], ["VoucherStale", "VoucherStale"]);
      expect(out.devices).to.deep.equal([device.address, device.address]);
      expect(await pay.balanceOf(payee.address, usdcAddress)).to.equal(payeeBefore);
      expect((await tabOf(pay, device.address, payee.address, usdcAddress)).settled).to.equal(USDC(4));
    });

    it("a voucher for 0 on a fresh tab is VoucherStale (cumulative must exceed settled)", async () => {
      const { pay, relayer, payee, usdcAddress, device } = await loadFixture(tabFixture);
      const to = { payee: payee.address, token: usdcAddress };
      await settleVouchersExpect(
        pay,
        relayer,
        usdcAddress,
        [
          await voucherBy(pay, device, { ...to, cumulative: 0n }),
          await voucherBy(pay, device, { ...to, cumulative: 1n }),
        ],
        ["VoucherStale", "None"],
      );
      expect((await tabOf(pay, device.address, payee.address, usdcAddress)).settled).to.equal(1n);
    });

    it("the same voucher twice pays once: twice in one batch, and again in a later batch", async () => {
      const f = await loadFixture(tabFixture);
      const { pay, relayer, payee, usdcAddress, device } = f;
      const v = await voucherBy(pay, device, { payee: payee.address, token: usdcAddress, cumulative: USDC(6) });
      const payeeBefore = await pay.balanceOf(payee.address, usdcAddress);
      const out = await settleVouchersExpect(pay, relayer, usdcAddress, [v, v], ["None", "VoucherStale"]);
      expect(out.settled.map((s) => s.increment)).to.deep.equal([USDC(6)]);
      await settleVouchersExpect(pay, relayer, usdcAddress, [v], ["VoucherStale"]);
      // Another relayer with another fee: the fee is not signed, the voucher is still the same one.
      await settleVouchersExpect(pay, f.stranger, usdcAddress, [withFee(v, 0n)], ["VoucherStale"]);
      expect(await pay.balanceOf(payee.address, usdcAddress)).to.equal(payeeBefore + USDC(6));
      await expectLedgerMatchesHoldings(pay, usdcAddress, f.accounts);
    });

    it("out-of-order delivery in one batch: the newest settles the whole total, the older ones after it are stale", async () => {
      const { pay, relayer, payee, usdcAddress, device } = await loadFixture(tabFixture);
      const to = { payee: payee.address, token: usdcAddress };
      const v = await Promise.all([1, 2, 3, 4].map((n) => voucherBy(pay, device, { ...to, cumulative: USDC(n) })));
      const payeeBefore = await pay.balanceOf(payee.address, usdcAddress);
      const out = await settleVouchersExpect(
        pay,
        relayer,
        usdcAddress,
        [v[3], v[0], v[2], v[1]],
        ["None", "VoucherStale", "VoucherStale", "VoucherStale"],
      );
      expect(out.settled.map((s) => [s.increment, s.cumulative])).to.deep.equal([[USDC(4), USDC(4)]]);
      expect(await pay.balanceOf(payee.address, usdcAddress)).to.equal(payeeBefore + USDC(4));
    });

    it("interleaved delivery in one batch pays each newer total's increase once, and the sum is the highest total", async () => {
      const { pay, relayer, payee, usdcAddress, device } = await loadFixture(tabFixture);
      const to = { payee: payee.address, token: usdcAddress };
      const v = await Promise.all([1, 2, 3, 4].map((n) => voucherBy(pay, device, { ...to, cumulative: USDC(n) })));
      const out = await settleVouchersExpect(
        pay,
        relayer,
        usdcAddress,
        [v[1], v[0], v[3], v[2]],
        ["None", "VoucherStale", "None", "VoucherStale"],
      );
      expect(out.settled.map((s) => s.increment)).to.deep.equal([USDC(2), USDC(2)]);
      expect((await tabOf(pay, device.address, payee.address, usdcAddress)).settled).to.equal(USDC(4));
    });
  });

  describe("the payment nonce window", () => {
    it("vouchers leave getDevice().nonceTop and nonceWindow alone; a fresh device's nonce 0 still settles after vouchers", async () => {
      const { pay, relayer, payee, usdcAddress, device } = await loadFixture(tabFixture);
      const to = { payee: payee.address, token: usdcAddress };
      await settleVouchersExpect(
        pay,
        relayer,
        usdcAddress,
        [
          await voucherBy(pay, device, { ...to, cumulative: 5n }),
          await voucherBy(pay, device, { ...to, cumulative: 9n }),
        ],
        ["None", "None"],
      );
      let state = await pay.getDevice(device.address);
      expect([state.nonceTop, state.nonceWindow]).to.deep.equal([0n, 0n]);
      expect(await pay.nonceStatus(device.address, 0n)).to.equal(R.None);
      await settleExpect(pay, relayer, usdcAddress, [await signed(pay, device, { ...to, nonce: 0n })], ["None"]);
      state = await pay.getDevice(device.address);
      expect([state.nonceTop, state.nonceWindow, state.lifetimeSpent]).to.deep.equal([0n, 1n, 9n + USDC(1)]);
    });

    it("after payments, vouchers keep the window as it was: the used nonce stays used, the next one is free", async () => {
      const { pay, relayer, payee, usdcAddress, device } = await loadFixture(tabFixture);
      const to = { payee: payee.address, token: usdcAddress };
      await settleExpect(
        pay,
        relayer,
        usdcAddress,
        [await signed(pay, device, { ...to, nonce: 3n }), await signed(pay, device, { ...to, nonce: 5n })],
        ["None", "None"],
      );
      const before = await pay.getDevice(device.address);
      await settleVouchersExpect(
        pay,
        relayer,
        usdcAddress,
        [await voucherBy(pay, device, { ...to, cumulative: 5n, tabId: 3n })],
        ["None"],
      );
      const after = await pay.getDevice(device.address);
      expect([after.nonceTop, after.nonceWindow]).to.deep.equal([before.nonceTop, before.nonceWindow]);
      expect([after.nonceTop, after.nonceWindow]).to.deep.equal([5n, 0b101n]);
      await settleExpect(
        pay,
        relayer,
        usdcAddress,
        [await signed(pay, device, { ...to, nonce: 5n }), await signed(pay, device, { ...to, nonce: 4n })],
        ["NonceUsed", "None"],
      );
    });
  });

  describe("two tabs of one device", () => {
    it("tabs with different tabIds and payees are independent: each settles against its own total", async () => {
      const f = await loadFixture(tabFixture);
      const { pay, relayer, payee, payee2, usdcAddress, device } = f;
      const t1 = { payee: payee.address, token: usdcAddress, tabId: 1n };
      const t2 = { payee: payee2.address, token: usdcAddress, tabId: 2n };
      const t3 = { payee: payee.address, token: usdcAddress, tabId: 2n }; // same payee as t1, other id
      await settleVouchersExpect(
        pay,
        relayer,
        usdcAddress,
        [
          await voucherBy(pay, device, { ...t1, cumulative: USDC(4) }),
          await voucherBy(pay, device, { ...t2, cumulative: USDC(3) }),
          await voucherBy(pay, device, { ...t3, cumulative: USDC(1) }),
        ],
        ["None", "None", "None"],
      );
      // 3 is below tab 1's total (stale there) but above tab 2's and tab 3's.
      const out = await settleVouchersExpect(
        pay,
        relayer,
        usdcAddress,
        [
          await voucherBy(pay, device, { ...t1, cumulative: USDC(3) }),
          await voucherBy(pay, device, { ...t2, cumulative: USDC(3) }),
          await voucherBy(pay, device, { ...t3, cumulative: USDC(3) }),
          await voucherBy(pay, device, { ...t2, cumulative: USDC(5) }),
        ],
        ["VoucherStale", "VoucherStale", "None", "None"],
      );
      expect(out.settled.map((s) => [s.payee, s.tabId, s.increment])).to.deep.equal([
        [payee.address, 2n, USDC(2)],
        [payee2.address, 2n, USDC(2)],
      ]);
      expect((await tabOf(pay, device.address, payee.address, usdcAddress, 1n)).settled).to.equal(USDC(4));
      expect((await tabOf(pay, device.address, payee2.address, usdcAddress, 2n)).settled).to.equal(USDC(5));
      expect((await tabOf(pay, device.address, payee.address, usdcAddress, 2n)).settled).to.equal(USDC(3));
      expect(await pay.tabKey(device.address, payee.address, usdcAddress, 1n)).to.not.equal(
        await pay.tabKey(device.address, payee.address, usdcAddress, 2n),
      );
      await expectLedgerMatchesHoldings(pay, usdcAddress, f.accounts);
    });

    it("a tab's state is the raw storage slot numbered by its key: settled(96) | closesAt(40) << 96", async () => {
      const { pay, relayer, payee, usdcAddress, device } = await loadFixture(tabFixture);
      const tab = [device.address, payee.address, usdcAddress, 5n] as const;
      const key = await pay.tabKey(...tab);
      expect(key, "tabKey = keccak256(abi.encode(device, payee, token, tabId))").to.equal(
        ethers.keccak256(ethers.AbiCoder.defaultAbiCoder().encode(["address", "address", "address", "uint256"], tab)),
      );
      const slot = async () => BigInt(await ethers.provider.getStorage(await pay.getAddress(), key));
      expect(await slot()).to.equal(0n);
      await settleVouchersExpect(
        pay,
        relayer,
        usdcAddress,
        [
          await voucherBy(pay, device, {
            payee: payee.address,
            token: usdcAddress,
            tabId: 5n,
            cumulative: USDC(3) + 1n,
          }),
        ],
        ["None"],
      );
      expect(await slot()).to.equal(USDC(3) + 1n);
      const tx = await pay.connect(payee).closeTab(...tab);
      const closedAt = BigInt((await (await tx.wait())!.getBlock()).timestamp);
      expect(await slot()).to.equal((closedAt << 96n) | (USDC(3) + 1n));
      expect(await pay.getTab(...tab)).to.deep.equal([USDC(3) + 1n, closedAt]);
      // A neighbouring tab's slot is untouched.
      expect(
        BigInt(
          await ethers.provider.getStorage(
            await pay.getAddress(),
            await pay.tabKey(device.address, payee.address, usdcAddress, 6n),
          ),
        ),
      ).to.equal(0n);
    });

    it("tabs and ordinary payments share the device's period cap: exhausting it across them blocks all of them", async () => {
      const { pay, relayer, payee, payee2, usdcAddress, device } = await loadFixture(sharedCapsFixture);
      const t1 = { payee: payee.address, token: usdcAddress, tabId: 1n };
      const t2 = { payee: payee2.address, token: usdcAddress, tabId: 2n };
      await settleVouchersExpect(
        pay,
        relayer,
        usdcAddress,
        [
          await voucherBy(pay, device, { ...t1, cumulative: USDC(4) }),
          await voucherBy(pay, device, { ...t2, cumulative: USDC(3) }),
        ],
        ["None", "None"],
      );
      await settleExpect(
        pay,
        relayer,
        usdcAddress,
        [await signed(pay, device, { payee: payee.address, token: usdcAddress, amount: USDC(2), nonce: 0n })],
        ["None"],
      ); // 9 of 10 spent
      await settleVouchersExpect(
        pay,
        relayer,
        usdcAddress,
        [
          await voucherBy(pay, device, { ...t1, cumulative: USDC(6) }), // +2: over
          await voucherBy(pay, device, { ...t2, cumulative: USDC(4) }), // +1: exactly 10
          await voucherBy(pay, device, { ...t1, cumulative: USDC(4) + 1n }), // +1 unit: over
        ],
        ["ExceedsPeriodCap", "None", "ExceedsPeriodCap"],
      );
      await settleExpect(
        pay,
        relayer,
        usdcAddress,
        [await signed(pay, device, { payee: payee.address, token: usdcAddress, amount: 1n, nonce: 1n })],
        ["ExceedsPeriodCap"],
      );
      const state = await pay.getDevice(device.address);
      expect([state.periodSpent, state.lifetimeSpent]).to.deep.equal([USDC(10), USDC(10)]);
      expect((await tabOf(pay, device.address, payee.address, usdcAddress, 1n)).settled).to.equal(USDC(4));
      expect((await tabOf(pay, device.address, payee2.address, usdcAddress, 2n)).settled).to.equal(USDC(4));
    });

    it("tabs and ordinary payments share the device's lifetime cap, across periods", async () => {
      const f = await loadFixture(settleFixture);
      const [device] = newDevices(1);
      await register(f.pay, f.owner, device, f.usdcAddress, {
        maxPerPayment: USDC(10),
        maxPerPeriod: USDC(10),
        lifetimeMax: USDC(14),
        periodLength: DAY,
      });
      const { pay, relayer, payee, payee2, usdcAddress } = f;
      const t1 = { payee: payee.address, token: usdcAddress, tabId: 1n };
      const t2 = { payee: payee2.address, token: usdcAddress, tabId: 9n };
      const start = await nextWindow(DAY);
      await settleVouchersExpect(
        pay,
        relayer,
        usdcAddress,
        [
          await voucherBy(pay, device, { ...t1, cumulative: USDC(6) }),
          await voucherBy(pay, device, { ...t2, cumulative: USDC(4) }),
        ],
        ["None", "None"],
        { at: start + 1 },
      );
      // Next period: the period cap is fresh, but only 4 of the lifetime's 14 are left.
      await settleExpect(
        pay,
        relayer,
        usdcAddress,
        [await signed(pay, device, { payee: payee.address, token: usdcAddress, amount: USDC(3), nonce: 0n })],
        ["None"],
        { at: start + DAY },
      );
      await settleVouchersExpect(
        pay,
        relayer,
        usdcAddress,
        [
          await voucherBy(pay, device, { ...t1, cumulative: USDC(7) + 1n }),
          await voucherBy(pay, device, { ...t2, cumulative: USDC(5) }),
          await voucherBy(pay, device, { ...t1, cumulative: USDC(6) + 1n }),
        ],
        ["ExceedsLifetimeCap", "None", "ExceedsLifetimeCap"],
        { at: start + DAY + 1 },
      );
      const state = await pay.getDevice(device.address);
      expect([state.periodSpent, state.lifetimeSpent]).to.deep.equal([USDC(4), USDC(14)]);
    });
  });

  describe("per-payment cap", () => {
    it("applies to increment + fee, not to the cumulative: equal passes, one unit more is ExceedsPaymentCap, a smaller increment then settles", async () => {
      const f = await loadFixture(paymentCapFixture); // maxPerPayment 5 USDC
      const { pay, relayer, payee, usdcAddress, device } = f;
      const to = { payee: payee.address, token: usdcAddress, maxFee: USDC(1) };
      const fee = USDC(1);
      const out = await settleVouchersExpect(
        pay,
        relayer,
        usdcAddress,
        [
          await voucherBy(pay, device, { ...to, cumulative: USDC(4) }, fee), // 4 + 1 = 5: at the cap
          await voucherBy(pay, device, { ...to, cumulative: USDC(8) + 1n }, fee), // 4 + 1 unit + 1 > 5
          await voucherBy(pay, device, { ...to, cumulative: USDC(8) }, fee), // 4 + 1 = 5, cumulative 8 > cap
        ],
        ["None", "ExceedsPaymentCap", "None"],
      );
      expect(out.settled.map((s) => [s.increment, s.cumulative, s.fee])).to.deep.equal([
        [USDC(4), USDC(4), fee],
        [USDC(4), USDC(8), fee],
      ]);
      // Without the fee the same increment of 4 + 1 unit fits.
      await settleVouchersExpect(
        pay,
        relayer,
        usdcAddress,
        [await voucherBy(pay, device, { ...to, cumulative: USDC(13) + 1n }, 0n)],
        ["ExceedsPaymentCap"],
      );
      await settleVouchersExpect(
        pay,
        relayer,
        usdcAddress,
        [await voucherBy(pay, device, { ...to, cumulative: USDC(13) }, 0n)],
        ["None"],
      );
      expect((await tabOf(pay, device.address, payee.address, usdcAddress)).settled).to.equal(USDC(13));
    });
  });

  describe("period rollover", () => {
    it("an increment over the period cap in the window's last second settles at the next window's first second", async () => {
      const f = await loadFixture(settleFixture);
      const [device] = newDevices(1);
      await register(f.pay, f.owner, device, f.usdcAddress, {
        maxPerPayment: USDC(10),
        maxPerPeriod: USDC(10),
        periodLength: DAY,
      });
      const { pay, relayer, payee, usdcAddress } = f;
      const to = { payee: payee.address, token: usdcAddress };
      const start = await nextWindow(DAY);
      const v12 = await voucherBy(pay, device, { ...to, cumulative: USDC(12) });
      await settleVouchersExpect(
        pay,
        relayer,
        usdcAddress,
        [await voucherBy(pay, device, { ...to, cumulative: USDC(10) }), v12],
        ["None", "ExceedsPeriodCap"],
        { at: start + DAY - 10 },
      );
      await settleVouchersExpect(pay, relayer, usdcAddress, [v12], ["ExceedsPeriodCap"], { at: start + DAY - 1 });
      const out = await settleVouchersExpect(pay, relayer, usdcAddress, [v12], ["None"], { at: start + DAY });
      expect(out.settled[0].increment).to.equal(USDC(2));
      const state = await pay.getDevice(device.address);
      expect([state.periodIndex, state.periodSpent, state.lifetimeSpent]).to.deep.equal([
        BigInt(start / DAY + 1),
        USDC(2),
        USDC(12),
      ]);
    });
  });

  describe("fees", () => {
    it("the fee is credited to the fee recipient (the caller when address(0)) and the owner pays increment + fee", async () => {
      const f = await loadFixture(tabFixture);
      const { pay, relayer, payee, owner, stranger, usdcAddress, device } = f;
      const to = { payee: payee.address, token: usdcAddress, maxFee: 50_000n };
      const ownerBefore = await pay.balanceOf(owner.address, usdcAddress);
      const out = await settleVouchersExpect(
        pay,
        relayer,
        usdcAddress,
        [await voucherBy(pay, device, { ...to, cumulative: USDC(2) }, 50_000n)],
        ["None"],
        { feeRecipient: stranger.address },
      );
      await expectVoucherSettled(pay, out.tx, {
        device: device.address,
        payee: payee.address,
        token: usdcAddress,
        tabId: 1n,
        increment: USDC(2),
        cumulative: USDC(2),
        fee: 50_000n,
      });
      await expect(out.tx).to.emit(pay, "BatchSettled").withArgs(relayer.address, stranger.address, usdcAddress, 1, 0);
      expect(await pay.balanceOf(stranger.address, usdcAddress)).to.equal(50_000n);
      expect(await pay.balanceOf(relayer.address, usdcAddress)).to.equal(0n);
      await settleVouchersExpect(
        pay,
        relayer,
        usdcAddress,
        [await voucherBy(pay, device, { ...to, cumulative: USDC(3) }, 20_000n)],
        ["None"],
      );
      expect(await pay.balanceOf(relayer.address, usdcAddress)).to.equal(20_000n);
      expect(await pay.balanceOf(payee.address, usdcAddress)).to.equal(USDC(3));
      expect(await pay.balanceOf(owner.address, usdcAddress)).to.equal(ownerBefore - USDC(3) - 70_000n);
      await expectLedgerMatchesHoldings(pay, usdcAddress, f.accounts);
    });

    it("a fee above the signed maxFee is FeeAboveMax and changes nothing; the same voucher at maxFee settles", async () => {
      const { pay, relayer, payee, usdcAddress, device } = await loadFixture(tabFixture);
      const v = await voucherBy(pay, device, {
        payee: payee.address,
        token: usdcAddress,
        cumulative: USDC(1),
        maxFee: 10n,
      });
      await settleVouchersExpect(pay, relayer, usdcAddress, [withFee(v, 11n)], ["FeeAboveMax"]);
      expect((await tabOf(pay, device.address, payee.address, usdcAddress)).settled).to.equal(0n);
      expect(await pay.balanceOf(relayer.address, usdcAddress)).to.equal(0n);
      await settleVouchersExpect(pay, relayer, usdcAddress, [withFee(v, 10n)], ["None"]);
      expect(await pay.balanceOf(relayer.address, usdcAddress)).to.equal(10n);
      // A voucher signed with maxFee 0 takes no fee at all.
      const noFee = await voucherBy(pay, device, { payee: payee.address, token: usdcAddress, cumulative: USDC(2) });
      await settleVouchersExpect(pay, relayer, usdcAddress, [withFee(noFee, 1n), noFee], ["FeeAboveMax", "None"]);
    });

    it("the fee counts against the period cap: increment + fee at the cap settles, one fee unit more does not", async () => {
      const { pay, relayer, payee, usdcAddress, device } = await loadFixture(periodCapFixture); // period cap 10
      const to = { payee: payee.address, token: usdcAddress, maxFee: USDC(2) };
      await settleVouchersExpect(
        pay,
        relayer,
        usdcAddress,
        [await voucherBy(pay, device, { ...to, cumulative: USDC(4) }, USDC(1))], // 5 of 10
        ["None"],
      );
      const v8 = await voucherBy(pay, device, { ...to, cumulative: USDC(8) }); // +4, fee up to 2
      await settleVouchersExpect(
        pay,
        relayer,
        usdcAddress,
        [withFee(v8, USDC(1) + 1n), withFee(v8, USDC(1))],
        ["ExceedsPeriodCap", "None"],
      );
      const state = await pay.getDevice(device.address);
      expect(state.periodSpent).to.equal(USDC(10));
      expect(await pay.balanceOf(relayer.address, usdcAddress)).to.equal(USDC(2));
    });

    it("the fee counts against the lifetime cap and the owner's balance", async () => {
      const f = await loadFixture(settleFixture);
      const { pay, usdc, relayer, payee, usdcAddress } = f;
      const poorOwner = (await ethers.getSigners())[7];
      await usdc.mint(poorOwner.address, USDC(5));
      await usdc.connect(poorOwner).approve(await pay.getAddress(), USDC(5));
      await pay.connect(poorOwner).deposit(usdcAddress, USDC(5));
      const [poor, capped] = newDevices(2);
      await register(pay, poorOwner, poor, usdcAddress, { periodLength: HUGE_PERIOD });
      await register(pay, f.owner, capped, usdcAddress, { periodLength: HUGE_PERIOD, lifetimeMax: USDC(5) });
      const to = { payee: payee.address, token: usdcAddress, maxFee: USDC(1) };
      await settleVouchersExpect(
        pay,
        relayer,
        usdcAddress,
        [
          await voucherBy(pay, poor, { ...to, cumulative: USDC(4) + 1n }, USDC(1)), // 5 + 1 unit > balance 5
          await voucherBy(pay, capped, { ...to, cumulative: USDC(4) + 1n }, USDC(1)), // 5 + 1 unit > lifetime 5
          await voucherBy(pay, poor, { ...to, cumulative: USDC(4) }, USDC(1)), // exactly the balance
          await voucherBy(pay, capped, { ...to, cumulative: USDC(4) }, USDC(1)), // exactly the lifetime cap
          await voucherBy(pay, poor, { ...to, cumulative: USDC(4) + 1n }), // 1 unit, nothing left
          await voucherBy(pay, capped, { ...to, cumulative: USDC(4) + 1n }), // 1 unit, nothing left
        ],
        ["InsufficientBalance", "ExceedsLifetimeCap", "None", "None", "InsufficientBalance", "ExceedsLifetimeCap"],
      );
      expect(await pay.balanceOf(poorOwner.address, usdcAddress)).to.equal(0n);
      expect((await pay.getDevice(capped.address)).lifetimeSpent).to.equal(USDC(5));
      expect(await pay.balanceOf(relayer.address, usdcAddress)).to.equal(USDC(2));
      await expectLedgerMatchesHoldings(pay, usdcAddress, [...f.accounts, poorOwner.address]);
    });
  });

  describe("closing", () => {
    it("the payee closes at once: closesAt is the close's block time, TabClosing says so, and later vouchers are TabClosed", async () => {
      const f = await loadFixture(tabFixture);
      const { pay, relayer, payee, usdcAddress, device } = f;
      const to = { payee: payee.address, token: usdcAddress };
      const v3 = await voucherBy(pay, device, { ...to, cumulative: USDC(3) });
      const v5 = await voucherBy(pay, device, { ...to, cumulative: USDC(5) });
      await settleVouchersExpect(pay, relayer, usdcAddress, [v3], ["None"]);
      const tx = await pay.connect(payee).closeTab(device.address, payee.address, usdcAddress, 1n);
      const closedAt = (await (await tx.wait())!.getBlock()).timestamp;
      const key = await pay.tabKey(device.address, payee.address, usdcAddress, 1n);
      await expect(tx)
        .to.emit(pay, "TabClosing")
        .withArgs(key, device.address, payee.address, usdcAddress, 1n, closedAt, payee.address);
      expect(await tabOf(pay, device.address, payee.address, usdcAddress)).to.deep.equal({
        settled: USDC(3),
        closesAt: BigInt(closedAt),
      });
      await settleVouchersExpect(pay, relayer, usdcAddress, [v5, v3], ["TabClosed", "TabClosed"], {
        at: closedAt + 1,
      });
      // Other tabs of the device are not affected.
      await settleVouchersExpect(
        pay,
        relayer,
        usdcAddress,
        [await voucherBy(pay, device, { ...to, tabId: 2n, cumulative: USDC(5) })],
        ["None"],
      );
      expect((await tabOf(pay, device.address, payee.address, usdcAddress)).settled).to.equal(USDC(3));
      await expectLedgerMatchesHoldings(pay, usdcAddress, f.accounts);
    });

    it("the payee's close takes effect in its own block: a voucher mined after it in the same block is TabClosed", async () => {
      const { pay, relayer, payee, usdcAddress, device } = await loadFixture(tabFixture);
      const v = await voucherBy(pay, device, { payee: payee.address, token: usdcAddress, cumulative: USDC(1) });
      await ethers.provider.send("evm_setAutomine", [false]);
      try {
        const closeTx = await pay.connect(payee).closeTab(device.address, payee.address, usdcAddress, 1n);
        const settleTx = await pay.connect(relayer).settleVouchers(usdcAddress, [v], ZERO);
        await ethers.provider.send("evm_mine", []);
        const [closeReceipt, settleReceipt] = [(await closeTx.wait())!, (await settleTx.wait())!];
        expect(settleReceipt.blockNumber).to.equal(closeReceipt.blockNumber);
        expect(settleReceipt.index).to.be.greaterThan(closeReceipt.index);
        await expect(settleTx).to.emit(pay, "VoucherSkipped").withArgs(0, device.address, R.TabClosed);
      } finally {
        await ethers.provider.send("evm_setAutomine", [true]);
      }
    });

    it("the owner's close runs NOTICE_PERIOD: the newest voucher settles at closesAt - 1, TabClosed at closesAt", async () => {
      const { pay, relayer, payee, owner, usdcAddress, device } = await loadFixture(tabFixture);
      const to = { payee: payee.address, token: usdcAddress };
      await settleVouchersExpect(
        pay,
        relayer,
        usdcAddress,
        [await voucherBy(pay, device, { ...to, cumulative: 1n })],
        ["None"],
      );
      const tx = await pay.connect(owner).closeTab(device.address, payee.address, usdcAddress, 1n);
      const closesAt = (await (await tx.wait())!.getBlock()).timestamp + NOTICE_PERIOD;
      await expect(tx)
        .to.emit(pay, "TabClosing")
        .withArgs(
          await pay.tabKey(device.address, payee.address, usdcAddress, 1n),
          device.address,
          payee.address,
          usdcAddress,
          1n,
          closesAt,
          owner.address,
        );
      expect((await tabOf(pay, device.address, payee.address, usdcAddress)).closesAt).to.equal(BigInt(closesAt));
      const out = await settleVouchersExpect(
        pay,
        relayer,
        usdcAddress,
        [
          await voucherBy(pay, device, { ...to, cumulative: 4n }),
          await voucherBy(pay, device, { ...to, cumulative: 2n }),
        ],
        ["None", "VoucherStale"],
        { at: closesAt - 1 },
      );
      expect(out.settled[0].increment).to.equal(3n);
      await settleVouchersExpect(
        pay,
        relayer,
        usdcAddress,
        [await voucherBy(pay, device, { ...to, cumulative: 9n })],
        ["TabClosed"],
        { at: closesAt },
      );
      expect(await tabOf(pay, device.address, payee.address, usdcAddress)).to.deep.equal({
        settled: 4n,
        closesAt: BigInt(closesAt),
      });
    });

    it("closeTabBySignature: anyone submits the device's TabClose; it closes after NOTICE_PERIOD with the same boundaries", async () => {
      const { pay, relayer, payee, stranger, usdcAddress, device } = await loadFixture(tabFixture);
      const to = { payee: payee.address, token: usdcAddress };
      const deadline = (await time.latest()) + 100;
      const { r, vs } = await signTabClose(pay, device, { ...to, tabId: 1n, deadline: BigInt(deadline) });
      await time.setNextBlockTimestamp(deadline - 1); // the last second the signature is valid
      const tx = await pay
        .connect(stranger)
        .closeTabBySignature(device.address, payee.address, usdcAddress, 1n, deadline, r, vs);
      const closesAt = deadline - 1 + NOTICE_PERIOD;
      await expect(tx)
        .to.emit(pay, "TabClosing")
        .withArgs(
          await pay.tabKey(device.address, payee.address, usdcAddress, 1n),
          device.address,
          payee.address,
          usdcAddress,
          1n,
          closesAt,
          device.address, // a signed close is recorded as the device's, whoever submits it
        );
      const v1 = await voucherBy(pay, device, { ...to, cumulative: 1n });
      await settleVouchersExpect(pay, relayer, usdcAddress, [v1], ["None"], { at: closesAt - 1 });
      await settleVouchersExpect(
        pay,
        relayer,
        usdcAddress,
        [await voucherBy(pay, device, { ...to, cumulative: 2n })],
        ["TabClosed"],
        { at: closesAt },
      );
      // Past its deadline the signature is refused, whatever the tab's state.
      await expect(
        pay.connect(relayer).closeTabBySignature(device.address, payee.address, usdcAddress, 1n, deadline + 1, r, vs),
      ).to.be.revertedWithCustomError(pay, "SignatureExpired");
    });

    it("closeTabBySignature refuses an expired signature (at the deadline) and one by another key or for another tab", async () => {
      const { pay, payee, payee2, stranger, usdcAddress, device } = await loadFixture(tabFixture);
      const [other] = newDevices(1);
      const deadline = (await time.latest()) + 100;
      const msg = { payee: payee.address, token: usdcAddress, tabId: 1n, deadline: BigInt(deadline) };
      const good = await signTabClose(pay, device, msg);
      const byOther = await signTabClose(pay, other, msg);
      const close = (payeeAddr: string, tabId: bigint, sig: { r: string; vs: string }, dl = deadline) =>
        pay.connect(stranger).closeTabBySignature(device.address, payeeAddr, usdcAddress, tabId, dl, sig.r, sig.vs);
      await expect(close(payee.address, 1n, byOther))
        .to.be.revertedWithCustomError(pay, "InvalidDeviceSignature")
        .withArgs(device.address);
      await expect(close(payee.address, 2n, good))
        .to.be.revertedWithCustomError(pay, "InvalidDeviceSignature")
        .withArgs(device.address);
      await expect(close(payee2.address, 1n, good))
        .to.be.revertedWithCustomError(pay, "InvalidDeviceSignature")
        .withArgs(device.address);
      await expect(close(payee.address, 1n, good, deadline + 1))
        .to.be.revertedWithCustomError(pay, "InvalidDeviceSignature")
        .withArgs(device.address);
      await expect(close(payee.address, 1n, { r: word(0n), vs: good.vs }))
        .to.be.revertedWithCustomError(pay, "InvalidDeviceSignature")
        .withArgs(device.address);
      await time.setNextBlockTimestamp(deadline);
      await expect(close(payee.address, 1n, good))
        .to.be.revertedWithCustomError(pay, "SignatureExpired")
        .withArgs(deadline, deadline);
      expect((await tabOf(pay, device.address, payee.address, usdcAddress)).closesAt).to.equal(0n);
    });

    it("closing only moves closesAt earlier: a later or equal closesAt is TabAlreadyClosing", async () => {
      const { pay, payee, owner, stranger, usdcAddress, device } = await loadFixture(tabFixture);
      const args = [device.address, payee.address, usdcAddress, 1n] as const;
      const t0 = (await time.latest()) + 10;
      await time.setNextBlockTimestamp(t0);
      await pay.connect(owner).closeTab(...args);
      const c0 = t0 + NOTICE_PERIOD;
      await expect(pay.connect(owner).closeTab(...args))
        .to.be.revertedWithCustomError(pay, "TabAlreadyClosing")
        .withArgs(c0);
      const deadline = BigInt(t0 + 1000);
      const sig = await signTabClose(pay, device, { payee: payee.address, token: usdcAddress, tabId: 1n, deadline });
      await expect(pay.connect(stranger).closeTabBySignature(...args, deadline, sig.r, sig.vs))
        .to.be.revertedWithCustomError(pay, "TabAlreadyClosing")
        .withArgs(c0);
      // The payee moves it earlier, to now; nothing can move it back later.
      await time.setNextBlockTimestamp(c0 - 1);
      await pay.connect(payee).closeTab(...args);
      expect((await tabOf(pay, ...args)).closesAt).to.equal(BigInt(c0 - 1));
      await expect(pay.connect(payee).closeTab(...args))
        .to.be.revertedWithCustomError(pay, "TabAlreadyClosing")
        .withArgs(c0 - 1);
      await expect(pay.connect(owner).closeTab(...args))
        .to.be.revertedWithCustomError(pay, "TabAlreadyClosing")
        .withArgs(c0 - 1);
    });

    it("a payee's close at exactly the owner's closesAt is TabAlreadyClosing (equal is not earlier)", async () => {
      const { pay, payee, owner, usdcAddress, device } = await loadFixture(tabFixture);
      const args = [device.address, payee.address, usdcAddress, 1n] as const;
      const t0 = (await time.latest()) + 10;
      await time.setNextBlockTimestamp(t0);
      await pay.connect(owner).closeTab(...args);
      await time.setNextBlockTimestamp(t0 + NOTICE_PERIOD);
      await expect(pay.connect(payee).closeTab(...args))
        .to.be.revertedWithCustomError(pay, "TabAlreadyClosing")
        .withArgs(t0 + NOTICE_PERIOD);
    });

    it("closeTab by anyone but the payee and the device's owner is NotTabParty (also an unregistered or revoked device's owner)", async () => {
      const f = await loadFixture(tabFixture);
      const { pay, payee, payee2, relayer, stranger, owner, owner2, usdcAddress, device } = f;
      const args = [device.address, payee.address, usdcAddress, 1n] as const;
      for (const who of [stranger, relayer, payee2, owner2]) {
        await expect(pay.connect(who).closeTab(...args))
          .to.be.revertedWithCustomError(pay, "NotTabParty")
          .withArgs(who.address);
      }
      // An unregistered device's tab has no owner party.
      const [unregistered] = newDevices(1);
      await expect(pay.connect(owner).closeTab(unregistered.address, payee.address, usdcAddress, 1n))
        .to.be.revertedWithCustomError(pay, "NotTabParty")
        .withArgs(owner.address);
      // Once the device is revoked its former owner is no longer a party (its vouchers never settle again anyway).
      await pay.connect(owner).revokeDevice(device.address);
      await expect(pay.connect(owner).closeTab(...args))
        .to.be.revertedWithCustomError(pay, "NotTabParty")
        .withArgs(owner.address);
      expect((await tabOf(pay, ...args)).closesAt).to.equal(0n);
    });
  });

  describe("device and policy checks", () => {
    it("every device, policy and terms check of payments skips vouchers too, with the tab left unchanged", async () => {
      const f = await loadFixture(settleFixture);
      const { pay, owner, relayer, payee, payee2, usdcAddress, usdc2Address } = f;
      const owner3 = (await ethers.getSigners())[6];
      const base = { periodLength: HUGE_PERIOD };
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
        ].map((name) => [name, newDevices(1)[0]]),
      );
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
      const restricted = await register(pay, owner, d.restricted, usdcAddress, { ...base, payeesRestricted: true });
      await pay.connect(owner).setPayees(restricted, [payee2.address], true);

      const to = { payee: payee.address, token: usdcAddress, cumulative: USDC(1) };
      const good = await voucherBy(pay, d.good, to);
      const cases: [string, Awaited<ReturnType<typeof voucherBy>>, string][] = [
        ["None", good, d.good.address],
        ["InvalidSignature", { ...good, r: word(0n) }, ZERO],
        ["UnknownDevice", await voucherBy(pay, d.unknown, to), d.unknown.address],
        ["DeviceRevoked", await voucherBy(pay, d.revoked, to), d.revoked.address],
        ["DevicePaused", await voucherBy(pay, d.paused, to), d.paused.address],
        ["PolicyPaused", await voucherBy(pay, d.policyPaused, to), d.policyPaused.address],
        ["PolicyFrozen", await voucherBy(pay, d.frozen, to), d.frozen.address],
        ["NotYetValid", await voucherBy(pay, d.notYet, to), d.notYet.address],
        ["PolicyExpired", await voucherBy(pay, d.expired, to), d.expired.address],
        ["WrongToken", await voucherBy(pay, d.wrongToken, to), d.wrongToken.address],
        ["DeadlinePassed", await voucherBy(pay, d.good, { ...to, tabId: 2n, deadline: 1n }), d.good.address],
        ["InvalidPayee", await voucherBy(pay, d.good, { ...to, payee: ZERO }), d.good.address],
        ["PayeeNotAllowed", await voucherBy(pay, d.restricted, to), d.restricted.address],
        ["None", await voucherBy(pay, d.restricted, { ...to, payee: payee2.address }), d.restricted.address],
        // A voucher's token is signed: one signed for usdc2 recovers another key in a usdc batch.
        ["UnknownDevice", await voucherBy(pay, d.good, { ...to, tabId: 3n, token: usdc2Address }), ""],
      ];
      const out = await settleVouchersExpect(
        pay,
        relayer,
        usdcAddress,
        cases.map(([, item]) => item),
        cases.map(([name]) => name as keyof typeof R),
      );
      cases.forEach(([, , device], i) => {
        if (device !== "") expect(out.devices[i], `device of item ${i}`).to.equal(device);
      });
      expect(out.devices[cases.length - 1]).to.not.be.oneOf([ZERO, d.good.address]);
      for (const name of [
        "unknown",
        "revoked",
        "paused",
        "policyPaused",
        "frozen",
        "notYet",
        "expired",
        "wrongToken",
      ]) {
        expect((await tabOf(pay, d[name].address, payee.address, usdcAddress)).settled, name).to.equal(0n);
      }
      expect((await tabOf(pay, d.good.address, payee.address, usdcAddress, 2n)).settled).to.equal(0n);
      expect((await tabOf(pay, d.restricted.address, payee.address, usdcAddress)).settled).to.equal(0n);
      expect((await tabOf(pay, d.restricted.address, payee2.address, usdcAddress)).settled).to.equal(USDC(1));
      await expectLedgerMatchesHoldings(pay, usdcAddress, f.accounts);
    });

    it("a voucher settles in a block at deadline - 1 and is DeadlinePassed at exactly the deadline", async () => {
      const { pay, relayer, payee, usdcAddress, device } = await loadFixture(tabFixture);
      const deadline = (await time.latest()) + 100;
      const to = { payee: payee.address, token: usdcAddress, deadline: BigInt(deadline) };
      await settleVouchersExpect(
        pay,
        relayer,
        usdcAddress,
        [await voucherBy(pay, device, { ...to, cumulative: 1n })],
        ["None"],
        { at: deadline - 1 },
      );
      await settleVouchersExpect(
        pay,
        relayer,
        usdcAddress,
        [await voucherBy(pay, device, { ...to, cumulative: 2n })],
        ["DeadlinePassed"],
        { at: deadline },
      );
    });
  });

  describe("previewVouchers", () => {
    it("returns the reasons and devices settleVouchers then returns, and changes no state even when sent as a transaction", async () => {
      const f = await loadFixture(paymentCapFixture); // 5 USDC per payment
      const { pay, relayer, payee, payee2, owner, usdcAddress, device } = f;
      const to = { payee: payee.address, token: usdcAddress };
      await settleVouchersExpect(
        pay,
        relayer,
        usdcAddress,
        [await voucherBy(pay, device, { ...to, cumulative: USDC(2) })],
        ["None"],
      );
      await pay.connect(payee2).closeTab(device.address, payee2.address, usdcAddress, 1n);
      const [stranger] = newDevices(1);
      const v4 = await voucherBy(pay, device, { ...to, cumulative: USDC(4), maxFee: 5n }, 5n);
      const items = [
        v4,
        await voucherBy(pay, device, { ...to, cumulative: USDC(3) }), // stale after v4 in this batch
        v4, // again: stale
        withFee(await voucherBy(pay, device, { ...to, cumulative: USDC(5), maxFee: 1n }), 2n),
        await voucherBy(pay, device, { ...to, cumulative: USDC(10) }), // +6 > 5
        await voucherBy(pay, stranger, { ...to, cumulative: 1n }),
        { ...v4, r: word(0n) },
        await voucherBy(pay, device, { payee: payee2.address, token: usdcAddress, cumulative: 1n }),
        await voucherBy(pay, device, { ...to, cumulative: USDC(9) }), // +5: fits
      ];
      const expected = [
        "None",
        "VoucherStale",
        "VoucherStale",
        "FeeAboveMax",
        "ExceedsPaymentCap",
        "UnknownDevice",
        "InvalidSignature",
        "TabClosed",
        "None",
      ];
      const accounts = [owner.address, payee.address, payee2.address, relayer.address];
      const snapshot = async () => ({
        tab: await tabOf(pay, device.address, payee.address, usdcAddress),
        device: [...(await pay.getDevice(device.address))],
        balances: await Promise.all(accounts.map((a) => pay.balanceOf(a, usdcAddress))),
      });
      const before = await snapshot();
      const [reasons, devices] = await pay.connect(relayer).previewVouchers.staticCall(usdcAddress, items, ZERO);
      expect(reasons.map((r) => Number(r))).to.deep.equal(expected.map((name) => R[name as keyof typeof R]));
      const tx = await pay.connect(relayer).previewVouchers(usdcAddress, items, ZERO);
      expect((await tx.wait())!.logs, "previewVouchers emits nothing").to.deep.equal([]);
      expect(await snapshot()).to.deep.equal(before);

      const out = await settleVouchersExpect(
        pay,
        relayer,
        usdcAddress,
        items,
        expected as Parameters<typeof settleVouchersExpect>[4],
      );
      expect(out.devices).to.deep.equal([...devices]);
      expect((await snapshot()).tab.settled).to.equal(USDC(9));
    });
  });

  describe("a payee settling its own tab", () => {
    it("the payee submits with no relayer and no fee: it is msg.sender and fee recipient, and receives the increment", async () => {
      const f = await loadFixture(tabFixture);
      const { pay, payee, owner, usdcAddress, device } = f;
      const ownerBefore = await pay.balanceOf(owner.address, usdcAddress);
      const out = await settleVouchersExpect(
        pay,
        payee,
        usdcAddress,
        [await voucherBy(pay, device, { payee: payee.address, token: usdcAddress, cumulative: USDC(7) })],
        ["None"],
      );
      await expect(out.tx).to.emit(pay, "BatchSettled").withArgs(payee.address, payee.address, usdcAddress, 1, 0);
      expect(out.settled[0].fee).to.equal(0n);
      expect(await pay.balanceOf(payee.address, usdcAddress)).to.equal(USDC(7));
      expect(await pay.balanceOf(owner.address, usdcAddress)).to.equal(ownerBefore - USDC(7));
      expect(await pay.balanceOf(f.relayer.address, usdcAddress)).to.equal(0n);
      await expectLedgerMatchesHoldings(pay, usdcAddress, f.accounts);
    });
  });

  describe("the sdk's Tab helper", () => {
    it("vouchers from Tab (viem LocalAccount, MemoryNonceBackend) settle on chain; only the last needs to be submitted", async () => {
      const f = await loadFixture(settleFixture);
      const { pay, owner, relayer, payee, usdcAddress } = f;
      const account = privateKeyToAccount(HARDHAT_KEY_9);
      await pay
        .connect(owner)
        .registerDevice(
          account.address,
          policyParams(usdcAddress, { periodLength: HUGE_PERIOD }),
          await enrollment(pay, account, owner),
        );
      const now = await time.latest();
      const tab = new Tab({
        signer: account,
        device: account.address,
        domain: await domainOf(pay),
        payee: payee.address as Address,
        token: usdcAddress,
        tabId: 7n,
        backend: new MemoryNonceBackend(),
        maxFee: 1_000n,
        now: () => now,
      });
      const a = await tab.pay(USDC(1));
      const b = await tab.pay(USDC(2));
      const c = await tab.pay(250_000n);
      expect(c.voucher.cumulative).to.equal(USDC(3) + 250_000n);
      const out = await settleVouchersExpect(
        pay,
        relayer,
        usdcAddress,
        [packVoucher(c.voucher, c.signature, 1_000n)],
        ["None"],
      );
      await expectVoucherSettled(pay, out.tx, {
        device: account.address,
        payee: payee.address,
        token: usdcAddress,
        tabId: 7n,
        increment: USDC(3) + 250_000n,
        cumulative: USDC(3) + 250_000n,
        fee: 1_000n,
      });
      expect(await pay.balanceOf(payee.address, usdcAddress)).to.equal(USDC(3) + 250_000n);
      await settleVouchersExpect(
        pay,
        relayer,
        usdcAddress,
        [a, b].map((x) => packVoucher(x.voucher, x.signature)),
        ["VoucherStale", "VoucherStale"],
      );
      const d = await tab.pay(USDC(1));
      const last = await settleVouchersExpect(
        pay,
        relayer,
        usdcAddress,
        [packVoucher(d.voucher, d.signature)],
        ["None"],
      );
      expect(last.settled[0].increment).to.equal(USDC(1));
      expect((await tabOf(pay, account.address, payee.address, usdcAddress, 7n)).settled).to.equal(
        await tab.cumulative(),
      );
      await expectLedgerMatchesHoldings(pay, usdcAddress, f.accounts);
    });
  });
});
