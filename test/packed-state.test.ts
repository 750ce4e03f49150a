import { loadFixture, time } from "@nomicfoundation/hardhat-network-helpers";
import { expect } from "chai";
import { ethers } from "hardhat";
import { deployFixture } from "./fixtures";
import { assignDevices, DAY, newDevices, payment, policyParams, registerDevice, signPayment, USDC } from "./helpers";

// settle reads and writes the device slot as a raw word (contracts/libraries/PackedState.sol);
// getDevice and getPolicy read the same slots through solc's struct layout. These tests check the
// two agree field by field, so a wrong shift in PackedState cannot hide.
describe("packed storage layout", () => {
  it("the raw device word settle writes decodes to the expected typed fields", async () => {
    const { pay, usdcAddress, owner, payee } = await loadFixture(deployFixture);
    const [device] = newDevices(1);
    await registerDevice(pay, owner, device, policyParams(usdcAddress, { periodLength: DAY }));
    const policyId = await pay.policyCount();
    // nonces 3 then 1: top 3, window bits 0 (nonce 3) and 2 (nonce 1)
    const items = [
      await signPayment(
        pay,
        device,
        await payment({
          payee: payee.address as `0x${string}`,
          token: usdcAddress,
          nonce: 3n,
          amount: USDC(2),
          maxFee: 5n,
        }),
        5n,
      ),
      await signPayment(
        pay,
        device,
        await payment({ payee: payee.address as `0x${string}`, token: usdcAddress, nonce: 1n, amount: USDC(3) }),
      ),
    ];
    await pay.settle(usdcAddress, items, ethers.ZeroAddress);
    const now = await time.latest();
    const d = await pay.getDevice(device.address);
    expect(d.policyId).to.equal(policyId);
    expect(d.paused).to.equal(false);
    expect(d.periodIndex).to.equal(BigInt(Math.floor(now / DAY)));
    expect(d.periodSpent).to.equal(USDC(5) + 5n);
    expect(d.lifetimeSpent).to.equal(USDC(5) + 5n);
    expect(d.nonceTop).to.equal(3n);
    expect(d.nonceWindow).to.equal(0b101n);

    // Pausing through the typed setter must be seen by settle's raw read, and must survive a
    // settle-side write of the word (the low 40 bits are kept).
    await pay.connect(owner).setDevicePaused(device.address, true);
    const late = await signPayment(
      pay,
      device,
      await payment({ payee: payee.address as `0x${string}`, token: usdcAddress, nonce: 4n }),
    );
    const [reasons] = await pay.preview.staticCall(usdcAddress, [late], ethers.ZeroAddress);
    expect(reasons[0]).to.equal(4n); // DevicePaused
    await pay.connect(owner).setDevicePaused(device.address, false);
    await pay.settle(usdcAddress, [late], ethers.ZeroAddress);
    const after = await pay.getDevice(device.address);
    expect(after.policyId).to.equal(policyId);
    expect(after.paused).to.equal(false);
    expect(after.nonceTop).to.equal(4n);
    expect(after.nonceWindow).to.equal(0b1011n);
  });

  it("the policy words settle reads match getPolicy, field by field", async () => {
    const { pay, usdcAddress, owner } = await loadFixture(deployFixture);
    const params = policyParams(usdcAddress, {
      maxPerPayment: 0x1122334455667788n,
      maxPerPeriod: 0x99aabbccddeeff00n,
      lifetimeMax: 0xfedcba9876543210n,
      periodLength: 0x12345678,
      validFrom: 1,
      validUntil: 0xfffffff0,
      payeesRestricted: true,
    });
    await pay.connect(owner).createPolicy(params);
    const [device] = newDevices(1);
    await assignDevices(pay, owner, 1, [device]);
    const p = await pay.getPolicy(1);
    const h = await pay.headroom(device.address); // decodes the same slots through PackedState
    expect(h.owner).to.equal(p.owner);
    expect(h.token).to.equal(p.token);
    expect(h.perPayment).to.equal(p.maxPerPayment);
    expect(h.period).to.equal(p.maxPerPeriod);
    expect(h.lifetime).to.equal(p.lifetimeMax);
    const now = BigInt(await time.latest());
    expect(h.periodEndsAt).to.equal((now / p.periodLength + 1n) * p.periodLength);
    expect(p.maxPerPayment).to.equal(params.maxPerPayment);
    expect(p.validUntil).to.equal(0xfffffff0n);
    expect(h.status).to.equal(0n);
  });
});
