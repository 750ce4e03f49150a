import { loadFixture } from "@nomicfoundation/hardhat-network-helpers";
import { expect } from "chai";
import { ethers } from "hardhat";
import { NONCE_WINDOW, REASONS } from "../sdk/src";
import { assignDevices, newDevices, USDC, ZERO } from "./helpers";
import { R, register, settleExpect, settleFixture, signed } from "./settle-helpers";

const MAX_NONCE = 2n ** 32n - 1n;

/** settleFixture plus a device of the owner on a default USDC policy. */
async function nonceFixture() {
  const f = await settleFixture();
  const [device, other] = newDevices(2);
  await register(f.pay, f.owner, device, f.usdcAddress, { maxPerPeriod: USDC(1_000), periodLength: 2 ** 32 - 1 });
  await assignDevices(f.pay, f.owner, 1, [other]);
  const item = (nonce: bigint, d = device) =>
    signed(f.pay, d, { payee: f.payee.address, token: f.usdcAddress, nonce, amount: 1n });
  const settleNonces = (nonces: bigint[], expected: (keyof typeof R)[], d = device) =>
    Promise.all(nonces.map((n) => item(n, d))).then((items) =>
      settleExpect(f.pay, f.relayer, f.usdcAddress, items, expected),
    );
  const status = async (nonce: bigint, d = device) => REASONS[Number(await f.pay.nonceStatus(d.address, nonce))];
  return { ...f, device, other, item, settleNonces, status };
}

describe("nonces", () => {
  describe("out-of-order delivery", () => {
    it("nonces 5, 2, 9, 0 all settle, in separate batches", async () => {
      const { settleNonces, status } = await loadFixture(nonceFixture);
      for (const n of [5n, 2n, 9n, 0n]) await settleNonces([n], ["None"]);
      for (const n of [0n, 2n, 5n, 9n]) expect(await status(n), `nonce ${n}`).to.equal("NonceUsed");
      for (const n of [1n, 3n, 4n, 6n, 7n, 8n, 10n]) expect(await status(n), `nonce ${n}`).to.equal("None");
    });

    it("nonces 5, 2, 9, 0 all settle in one batch and set the window bits", async () => {
      const { pay, device, settleNonces } = await loadFixture(nonceFixture);
      const out = await settleNonces([5n, 2n, 9n, 0n], ["None", "None", "None", "None"]);
      expect(out.settled.map((s) => s.nonce)).to.deep.equal([5n, 2n, 9n, 0n]);
      const state = await pay.getDevice(device.address);
      // Bit i stands for nonce top - i: 9 -> bit 0, 5 -> bit 4, 2 -> bit 7, 0 -> bit 9.
      expect([state.nonceTop, state.nonceWindow]).to.deep.equal([
        9n,
        (1n << 0n) | (1n << 4n) | (1n << 7n) | (1n << 9n),
      ]);
    });

    it("nonces are per device: two devices of one policy can both use nonce 0", async () => {
      const { other, settleNonces, item, pay, relayer, usdcAddress } = await loadFixture(nonceFixture);
      await settleExpect(pay, relayer, usdcAddress, [await item(0n), await item(0n, other)], ["None", "None"]);
      await settleNonces([0n], ["NonceUsed"], other);
    });
  });

  describe("replay", () => {
    it("a settled nonce is NonceUsed in a later batch, whatever else the payment says", async () => {
      const { pay, relayer, payee2, usdcAddress, device, settleNonces } = await loadFixture(nonceFixture);
      await settleNonces([3n], ["None"]);
      await settleNonces([3n], ["NonceUsed"]);
      // A different payment reusing the nonce is refused too.
      const other = await signed(pay, device, { payee: payee2.address, token: usdcAddress, nonce: 3n, amount: 5n });
      await settleExpect(pay, relayer, usdcAddress, [other], ["NonceUsed"]);
    });

    it("the same nonce twice in one batch: the first settles, the second is NonceUsed", async () => {
      const { pay, relayer, usdcAddress, payee, item } = await loadFixture(nonceFixture);
      const first = await item(4n);
      const before = await pay.balanceOf(payee.address, usdcAddress);
      await settleExpect(
        pay,
        relayer,
        usdcAddress,
        [first, first, await item(5n), first],
        ["None", "NonceUsed", "None", "NonceUsed"],
      );
      expect(await pay.balanceOf(payee.address, usdcAddress)).to.equal(before + 2n);
    });
  });

  describe("the window", () => {
    it(`tracks ${NONCE_WINDOW} nonces: with top = 30, nonce 7 settles and nonce 6 is NonceTooOld`, async () => {
      const { settleNonces, status } = await loadFixture(nonceFixture);
      expect(NONCE_WINDOW).to.equal(24);
      await settleNonces([30n], ["None"]);
      const lowest = 30n - BigInt(NONCE_WINDOW - 1);
      expect(lowest).to.equal(7n);
      expect([await status(7n), await status(6n)]).to.deep.equal(["None", "NonceTooOld"]);
      await settleNonces([6n, 7n, 7n], ["NonceTooOld", "None", "NonceUsed"]);
      expect([await status(7n), await status(6n), await status(0n)]).to.deep.equal([
        "NonceUsed",
        "NonceTooOld",
        "NonceTooOld",
      ]);
    });

    it("a jump of more than the window clears it: after 0 then 100, 0 is too old, 77..99 usable, 76 too old", async () => {
      const { pay, device, settleNonces, status } = await loadFixture(nonceFixture);
      await settleNonces([0n, 100n], ["None", "None"]);
      expect((await pay.getDevice(device.address)).nonceWindow).to.equal(1n);
      expect(await status(0n)).to.equal("NonceTooOld");
      expect(await status(76n)).to.equal("NonceTooOld");
      const usable = Array.from({ length: 23 }, (_, i) => 77n + BigInt(i));
      for (const n of usable) expect(await status(n), `nonce ${n}`).to.equal("None");
      await settleNonces(
        [0n, 76n, ...usable, 100n],
        ["NonceTooOld", "NonceTooOld", ...usable.map(() => "None" as const), "NonceUsed"],
      );
      const state = await pay.getDevice(device.address);
      expect([state.nonceTop, state.nonceWindow]).to.deep.equal([100n, 2n ** 24n - 1n]);
    });

    it("a jump of exactly the window drops the old top; a jump of window - 1 keeps it", async () => {
      const { pay, device, other, settleNonces, status } = await loadFixture(nonceFixture);
      await settleNonces([0n, 24n], ["None", "None"]);
      expect(await status(0n)).to.equal("NonceTooOld");
      expect((await pay.getDevice(device.address)).nonceWindow).to.equal(1n);
      await settleNonces([0n, 23n], ["None", "None"], other);
      expect(await status(0n, other)).to.equal("NonceUsed");
      expect((await pay.getDevice(other.address)).nonceWindow).to.equal((1n << 23n) | 1n);
      await settleNonces([0n, 1n], ["NonceUsed", "None"], other);
    });

    it("the highest nonce calldata carries (2^32 - 1) settles, and the window below it works", async () => {
      const { settleNonces, status } = await loadFixture(nonceFixture);
      await settleNonces([MAX_NONCE], ["None"]);
      expect(await status(MAX_NONCE)).to.equal("NonceUsed");
      await settleNonces([MAX_NONCE - 23n, MAX_NONCE - 24n], ["None", "NonceTooOld"]);
    });
  });

  describe("skipped payments", () => {
    it("a payment skipped for lack of funds does not use its nonce: the same signed item settles after funding", async () => {
      const { pay, owner2, relayer, payee, usdcAddress } = await loadFixture(settleFixture);
      const owner3 = (await ethers.getSigners())[6];
      const [device] = newDevices(1);
      await register(pay, owner3, device, usdcAddress);
      const signedItem = await signed(pay, device, { payee: payee.address, token: usdcAddress, nonce: 7n });
      await settleExpect(pay, relayer, usdcAddress, [signedItem], ["InsufficientBalance"]);
      expect(await pay.nonceStatus(device.address, 7n)).to.equal(R.None);
      expect((await pay.getDevice(device.address)).nonceTop).to.equal(0n);
      await pay.connect(owner2).depositFor(owner3.address, usdcAddress, USDC(1));
      await settleExpect(pay, relayer, usdcAddress, [signedItem], ["None"]);
      expect(await pay.nonceStatus(device.address, 7n)).to.equal(R.NonceUsed);
    });

    it("a payment skipped for any other reason leaves its nonce free too", async () => {
      const { pay, owner, relayer, usdcAddress, device, item, status } = await loadFixture(nonceFixture);
      const paused = await item(9n);
      await pay.connect(owner).setDevicePaused(device.address, true);
      await settleExpect(pay, relayer, usdcAddress, [paused, await item(8n)], ["DevicePaused", "DevicePaused"]);
      expect([await status(9n), await status(8n)]).to.deep.equal(["None", "None"]);
      await pay.connect(owner).setDevicePaused(device.address, false);
      await settleExpect(pay, relayer, usdcAddress, [await item(8n), paused], ["None", "None"]);
    });
  });

  describe("nonceStatus", () => {
    it("agrees with settle (as preview reports it) for every nonce around the window", async () => {
      const { pay, relayer, usdcAddress, item, settleNonces, status } = await loadFixture(nonceFixture);
      await settleNonces([3n, 10n, 31n, 40n], ["None", "None", "None", "None"]);
      const probes = [0n, 3n, 9n, 10n, 15n, 16n, 17n, 30n, 31n, 39n, 40n, 41n, 1_000n, MAX_NONCE];
      const seen = new Set<string>();
      for (const n of probes) {
        const [reasons] = await pay.connect(relayer).preview.staticCall(usdcAddress, [await item(n)], ZERO);
        const viaSettle = REASONS[Number(reasons[0])];
        expect(await status(n), `nonce ${n}`).to.equal(viaSettle);
        seen.add(viaSettle);
      }
      expect(seen).to.deep.equal(new Set(["None", "NonceUsed", "NonceTooOld"]));
    });

    it("returns NonceTooLarge (20) for nonces of 2^32 and above, which calldata cannot carry", async () => {
      const { pay, device } = await loadFixture(nonceFixture);
      const [stray] = newDevices(1);
      for (const who of [device.address, stray.address]) {
        expect(await pay.nonceStatus(who, MAX_NONCE + 1n)).to.equal(20);
        expect(await pay.nonceStatus(who, ethers.MaxUint256)).to.equal(R.NonceTooLarge);
        expect(await pay.nonceStatus(who, MAX_NONCE)).to.equal(R.None);
      }
    });

    it("reports every nonce of an unregistered key as usable", async () => {
      const { pay } = await loadFixture(nonceFixture);
      const [stray] = newDevices(1);
      expect(await pay.nonceStatus(stray.address, 0n)).to.equal(R.None);
      expect(await pay.nonceStatus(stray.address, 12_345n)).to.equal(R.None);
    });
  });
});
