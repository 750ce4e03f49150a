import { loadFixture } from "@nomicfoundation/hardhat-network-helpers";
import { expect } from "chai";
import { REASONS } from "../sdk/src";
import { reason, registerNewDevice, settleOne } from "./admin-helpers";
import { deployFixture } from "./fixtures";
import { assignDevices, DAY, enrollment, NO_PROOF, newDevices, policyParams, USDC, ZERO } from "./helpers";
import { expectPaymentSettled } from "./settle-helpers";

const REVOKED = 2n ** 32n - 1n;

/** deployFixture plus two USDC policies of the owner (ids 1 and 2), a device on policy 1, and a policy of the stranger (id 3). */
async function policyFixture() {
  const base = await deployFixture();
  const { pay, owner, stranger, usdcAddress } = base;
  await pay.connect(owner).createPolicy(policyParams(usdcAddress));
  await pay.connect(owner).createPolicy(policyParams(usdcAddress, { maxPerPayment: USDC(20) }));
  await pay.connect(stranger).createPolicy(policyParams(usdcAddress));
  const [device, spare] = newDevices(2);
  await assignDevices(pay, owner, 1, [device]);
  return { ...base, device, spare };
}

/** Pay 1 USDC from `device` to the payee with `nonce`. */
function payOne(f: Awaited<ReturnType<typeof policyFixture>>, nonce: bigint, device = f.device) {
  return settleOne(f.pay, f.relayer, device, { payee: f.payee.address, token: f.usdcAddress, nonce });
}

describe("policies and devices", () => {
  describe("createPolicy", () => {
    it("numbers policies from 1 and counts them", async () => {
      const { pay, owner, usdcAddress } = await loadFixture(deployFixture);
      expect(await pay.policyCount()).to.equal(0);
      expect(await pay.connect(owner).createPolicy.staticCall(policyParams(usdcAddress))).to.equal(1);
      await pay.connect(owner).createPolicy(policyParams(usdcAddress));
      await pay.connect(owner).createPolicy(policyParams(usdcAddress));
      expect(await pay.policyCount()).to.equal(2);
      expect((await pay.getPolicy(2)).owner).to.equal(owner.address);
    });

    it("stores the policy and emits it whole in PolicySet", async () => {
      const { pay, owner, usdcAddress } = await loadFixture(deployFixture);
      const params = policyParams(usdcAddress, {
        maxPerPayment: USDC(3),
        maxPerPeriod: USDC(30),
        periodLength: 3_600,
        lifetimeMax: USDC(300),
        validFrom: 1_000,
        validUntil: 2_000_000_000,
        payeesRestricted: true,
      });
      const stored = [
        owner.address,
        0n,
        1_000n,
        2_000_000_000n,
        usdcAddress,
        3_600n,
        true,
        false,
        USDC(3),
        USDC(30),
        USDC(300),
      ];
      await expect(pay.connect(owner).createPolicy(params))
        .to.emit(pay, "PolicySet")
        .withArgs(1, owner.address, stored);
      expect(await pay.getPolicy(1)).to.deep.equal(stored);
    });

    it("marks the caller as a policy owner", async () => {
      const { pay, owner, usdcAddress } = await loadFixture(deployFixture);
      expect(await pay.ownsPolicies(owner.address)).to.equal(false);
      await pay.connect(owner).createPolicy(policyParams(usdcAddress));
      expect(await pay.ownsPolicies(owner.address)).to.equal(true);
    });

    it("reverts InvalidPeriodLength for a period of 0", async () => {
      const { pay, owner, usdcAddress } = await loadFixture(deployFixture);
      await expect(pay.connect(owner).createPolicy(policyParams(usdcAddress, { periodLength: 0 })))
        .to.be.revertedWithCustomError(pay, "InvalidPeriodLength")
        .withArgs(0);
    });

    it("reverts InvalidValidity when validUntil is set and not after validFrom", async () => {
      const { pay, owner, usdcAddress } = await loadFixture(deployFixture);
      await expect(pay.connect(owner).createPolicy(policyParams(usdcAddress, { validFrom: 500, validUntil: 500 })))
        .to.be.revertedWithCustomError(pay, "InvalidValidity")
        .withArgs(500, 500);
      await expect(pay.connect(owner).createPolicy(policyParams(usdcAddress, { validFrom: 500, validUntil: 499 })))
        .to.be.revertedWithCustomError(pay, "InvalidValidity")
        .withArgs(500, 499);
      await pay.connect(owner).createPolicy(policyParams(usdcAddress, { validFrom: 500, validUntil: 0 }));
      await pay.connect(owner).createPolicy(policyParams(usdcAddress, { validFrom: 500, validUntil: 501 }));
      expect(await pay.policyCount()).to.equal(2);
    });
  });

  describe("updatePolicy", () => {
    it("replaces the parameters for every device on the policy", async () => {
      const { pay, owner, usdcAddress } = await loadFixture(policyFixture);
      await expect(pay.connect(owner).updatePolicy(1, policyParams(usdcAddress, { maxPerPayment: USDC(1) })))
        .to.emit(pay, "PolicySet")
        .withArgs(1, owner.address, [
          owner.address,
          0n,
          0n,
          0n,
          usdcAddress,
          BigInt(DAY),
          false,
          false,
          USDC(1),
          USDC(100),
          USDC(1_000),
        ]);
      expect((await pay.getPolicy(1)).maxPerPayment).to.equal(USDC(1));
      expect(await pay.policyCount()).to.equal(3);
    });

    it("reverts NotPolicyOwner for anyone but the owner", async () => {
      const { pay, stranger, usdcAddress } = await loadFixture(policyFixture);
      await expect(pay.connect(stranger).updatePolicy(1, policyParams(usdcAddress)))
        .to.be.revertedWithCustomError(pay, "NotPolicyOwner")
        .withArgs(1, stranger.address);
    });

    it("reverts UnknownPolicy for id 0 and for ids never created", async () => {
      const { pay, owner, usdcAddress } = await loadFixture(policyFixture);
      await expect(pay.connect(owner).updatePolicy(0, policyParams(usdcAddress)))
        .to.be.revertedWithCustomError(pay, "UnknownPolicy")
        .withArgs(0);
      await expect(pay.connect(owner).updatePolicy(4, policyParams(usdcAddress)))
        .to.be.revertedWithCustomError(pay, "UnknownPolicy")
        .withArgs(4);
    });

    it("validates the new parameters as createPolicy does", async () => {
      const { pay, owner, usdcAddress } = await loadFixture(policyFixture);
      await expect(pay.connect(owner).updatePolicy(1, policyParams(usdcAddress, { periodLength: 0 })))
        .to.be.revertedWithCustomError(pay, "InvalidPeriodLength")
        .withArgs(0);
      await expect(pay.connect(owner).updatePolicy(1, policyParams(usdcAddress, { validFrom: 9, validUntil: 9 })))
        .to.be.revertedWithCustomError(pay, "InvalidValidity")
        .withArgs(9, 9);
    });

    it("keeps the paused flag", async () => {
      const { pay, owner, usdcAddress } = await loadFixture(policyFixture);
      await pay.connect(owner).setPolicyPaused(1, true);
      await pay.connect(owner).updatePolicy(1, policyParams(usdcAddress, { maxPerPayment: USDC(2) }));
      const policy = await pay.getPolicy(1);
      expect(policy.paused).to.equal(true);
      expect(policy.maxPerPayment).to.equal(USDC(2));
    });

    it("stamps the owner's current epoch after freezeAll", async () => {
      const { pay, owner, usdcAddress } = await loadFixture(policyFixture);
      await pay.connect(owner).freezeAll();
      await pay.connect(owner).freezeAll();
      expect((await pay.getPolicy(1)).epoch).to.equal(0);
      await pay.connect(owner).updatePolicy(1, policyParams(usdcAddress));
      expect((await pay.getPolicy(1)).epoch).to.equal(2);
      expect((await pay.getPolicy(2)).epoch).to.equal(0);
    });
  });

  describe("setPolicyPaused", () => {
    it("pauses and unpauses every device of the policy", async () => {
      const f = await loadFixture(policyFixture);
      const { pay, owner, device } = f;
      await expect(pay.connect(owner).setPolicyPaused(1, true)).to.emit(pay, "PolicyPausedSet").withArgs(1, true);
      expect((await pay.getPolicy(1)).paused).to.equal(true);
      await expect(payOne(f, 0n)).to.emit(pay, "PaymentSkipped").withArgs(0, device.address, reason("PolicyPaused"));
      await expect(pay.connect(owner).setPolicyPaused(1, false)).to.emit(pay, "PolicyPausedSet").withArgs(1, false);
      await expect(payOne(f, 0n)).to.emit(pay, "PaymentSettled");
    });

    it("reverts NotPolicyOwner and UnknownPolicy", async () => {
      const { pay, owner, stranger } = await loadFixture(policyFixture);
      await expect(pay.connect(stranger).setPolicyPaused(1, true))
        .to.be.revertedWithCustomError(pay, "NotPolicyOwner")
        .withArgs(1, stranger.address);
      await expect(pay.connect(owner).setPolicyPaused(9, true))
        .to.be.revertedWithCustomError(pay, "UnknownPolicy")
        .withArgs(9);
    });
  });

  describe("setPayees", () => {
    it("adds payees to and removes them from the allow-list", async () => {
      const { pay, owner, payee, payee2 } = await loadFixture(policyFixture);
      await expect(pay.connect(owner).setPayees(1, [payee.address, payee2.address], true))
        .to.emit(pay, "PayeesSet")
        .withArgs(1, [payee.address, payee2.address], true);
      expect(await pay.isPayeeAllowed(1, payee.address)).to.equal(true);
      expect(await pay.isPayeeAllowed(1, payee2.address)).to.equal(true);
      expect(await pay.isPayeeAllowed(2, payee.address)).to.equal(false);
      await expect(pay.connect(owner).setPayees(1, [payee.address], false))
        .to.emit(pay, "PayeesSet")
        .withArgs(1, [payee.address], false);
      expect(await pay.isPayeeAllowed(1, payee.address)).to.equal(false);
      expect(await pay.isPayeeAllowed(1, payee2.address)).to.equal(true);
    });

    it("reverts NotPolicyOwner for anyone but the owner", async () => {
      const { pay, stranger } = await loadFixture(policyFixture);
      await expect(pay.connect(stranger).setPayees(1, [stranger.address], true))
        .to.be.revertedWithCustomError(pay, "NotPolicyOwner")
        .withArgs(1, stranger.address);
    });
  });

  describe("assignDevices", () => {
    it("assigns new device keys to the policy", async () => {
      const { pay, owner } = await loadFixture(policyFixture);
      const [a, b] = newDevices(2);
      const tx = assignDevices(pay, owner, 2, [a, b]);
      await expect(tx).to.emit(pay, "DeviceAssigned").withArgs(a.address, 2);
      await expect(tx).to.emit(pay, "DeviceAssigned").withArgs(b.address, 2);
      expect((await pay.getDevice(a.address)).policyId).to.equal(2);
      expect((await pay.getDevice(b.address)).policyId).to.equal(2);
    });

    it("moves a device between the owner's policies, with no proof, and keeps its counters and nonces", async () => {
      const f = await loadFixture(policyFixture);
      const { pay, owner, device } = f;
      await payOne(f, 5n);
      const before = await pay.getDevice(device.address);
      expect(before.lifetimeSpent).to.equal(USDC(1));
      await expect(pay.connect(owner).assignDevices(2, [device.address], [NO_PROOF]))
        .to.emit(pay, "DeviceAssigned")
        .withArgs(device.address, 2);
      const after = await pay.getDevice(device.address);
      expect(after.policyId).to.equal(2);
      expect([
        after.lifetimeSpent,
        after.periodSpent,
        after.periodIndex,
        after.nonceTop,
        after.nonceWindow,
      ]).to.deep.equal([
        before.lifetimeSpent,
        before.periodSpent,
        before.periodIndex,
        before.nonceTop,
        before.nonceWindow,
      ]);
      await expect(payOne(f, 5n)).to.emit(pay, "PaymentSkipped").withArgs(0, device.address, reason("NonceUsed"));
    });

    it("reverts DeviceOwnedByAnother when another owner tries to take a device, even with the key's proof for it", async () => {
      const { pay, owner, stranger, device } = await loadFixture(policyFixture);
      await expect(assignDevices(pay, stranger, 3, [device]))
        .to.be.revertedWithCustomError(pay, "DeviceOwnedByAnother")
        .withArgs(device.address, owner.address);
      expect((await pay.getDevice(device.address)).policyId).to.equal(1);
    });

    it("reverts DeviceIsRevoked for a revoked device", async () => {
      const { pay, owner, device } = await loadFixture(policyFixture);
      await pay.connect(owner).revokeDevice(device.address);
      await expect(assignDevices(pay, owner, 2, [device]))
        .to.be.revertedWithCustomError(pay, "DeviceIsRevoked")
        .withArgs(device.address);
    });

    it("reverts ZeroAddress for the zero key, and assigns none of the batch", async () => {
      const { pay, owner, spare } = await loadFixture(policyFixture);
      const proofs = [await enrollment(pay, spare, owner), NO_PROOF];
      await expect(pay.connect(owner).assignDevices(2, [spare.address, ZERO], proofs)).to.be.revertedWithCustomError(
        pay,
        "ZeroAddress",
      );
      expect((await pay.getDevice(spare.address)).policyId).to.equal(0);
    });

    it("reverts NotPolicyOwner when assigning to another owner's policy", async () => {
      const { pay, owner, stranger, spare } = await loadFixture(policyFixture);
      await expect(assignDevices(pay, owner, 3, [spare]))
        .to.be.revertedWithCustomError(pay, "NotPolicyOwner")
        .withArgs(3, owner.address);
      await expect(assignDevices(pay, stranger, 0, [spare]))
        .to.be.revertedWithCustomError(pay, "UnknownPolicy")
        .withArgs(0);
    });
  });

  describe("registerDevice", () => {
    it("creates a policy and assigns the device to it in one call", async () => {
      const { pay, usdcAddress, payee2 } = await loadFixture(deployFixture);
      const [device] = newDevices(1);
      const params = policyParams(usdcAddress, { maxPerPayment: USDC(4) });
      const proof = await enrollment(pay, device, payee2);
      expect(await pay.connect(payee2).registerDevice.staticCall(device.address, params, proof)).to.equal(1);
      const tx = pay.connect(payee2).registerDevice(device.address, params, proof);
      await expect(tx).to.emit(pay, "PolicySet");
      await expect(tx).to.emit(pay, "DeviceAssigned").withArgs(device.address, 1);
      expect(await pay.policyCount()).to.equal(1);
      expect((await pay.getPolicy(1)).maxPerPayment).to.equal(USDC(4));
      expect((await pay.getDevice(device.address)).policyId).to.equal(1);
      expect(await pay.ownsPolicies(payee2.address)).to.equal(true);
    });

    it("reverts DeviceOwnedByAnother, creating no policy, for another owner's device (proof or not)", async () => {
      const { pay, usdcAddress, owner, stranger, device } = await loadFixture(policyFixture);
      for (const proof of [await enrollment(pay, device, stranger), NO_PROOF]) {
        await expect(pay.connect(stranger).registerDevice(device.address, policyParams(usdcAddress), proof))
          .to.be.revertedWithCustomError(pay, "DeviceOwnedByAnother")
          .withArgs(device.address, owner.address);
      }
      expect(await pay.policyCount()).to.equal(3);
      // The owner moving its own key onto a new policy needs no proof.
      await expect(pay.connect(owner).registerDevice(device.address, policyParams(usdcAddress), NO_PROOF))
        .to.emit(pay, "DeviceAssigned")
        .withArgs(device.address, 4);
    });

    it("reverts InvalidEnrollment, creating no policy, for a new key without its proof", async () => {
      const { pay, usdcAddress, stranger, spare } = await loadFixture(policyFixture);
      await expect(pay.connect(stranger).registerDevice(spare.address, policyParams(usdcAddress), NO_PROOF))
        .to.be.revertedWithCustomError(pay, "InvalidEnrollment")
        .withArgs(spare.address, stranger.address);
      expect(await pay.policyCount()).to.equal(3);
    });

    it("reverts ZeroAddress for the zero key", async () => {
      const { pay, usdcAddress, owner } = await loadFixture(policyFixture);
      await expect(
        pay.connect(owner).registerDevice(ZERO, policyParams(usdcAddress), NO_PROOF),
      ).to.be.revertedWithCustomError(pay, "ZeroAddress");
      expect(await pay.policyCount()).to.equal(3);
    });
  });

  describe("setDevicePaused", () => {
    it("pauses and unpauses one device", async () => {
      const f = await loadFixture(policyFixture);
      const { pay, owner, device } = f;
      await expect(pay.connect(owner).setDevicePaused(device.address, true))
        .to.emit(pay, "DevicePausedSet")
        .withArgs(device.address, true);
      expect((await pay.getDevice(device.address)).paused).to.equal(true);
      await expect(payOne(f, 0n)).to.emit(pay, "PaymentSkipped").withArgs(0, device.address, reason("DevicePaused"));
      await pay.connect(owner).setDevicePaused(device.address, false);
      expect((await pay.getDevice(device.address)).paused).to.equal(false);
      await expect(payOne(f, 0n)).to.emit(pay, "PaymentSettled");
    });

    it("reverts NotDeviceOwner for anyone but the owner, and DeviceNotRegistered for an unknown key", async () => {
      const { pay, owner, stranger, device, spare } = await loadFixture(policyFixture);
      await expect(pay.connect(stranger).setDevicePaused(device.address, true))
        .to.be.revertedWithCustomError(pay, "NotDeviceOwner")
        .withArgs(device.address, stranger.address);
      await expect(pay.connect(owner).setDevicePaused(spare.address, true))
        .to.be.revertedWithCustomError(pay, "DeviceNotRegistered")
        .withArgs(spare.address);
    });
  });

  describe("revokeDevice", () => {
    it("revokes the key for good: its payments are skipped as DeviceRevoked", async () => {
      const f = await loadFixture(policyFixture);
      const { pay, owner, device } = f;
      await expect(pay.connect(owner).revokeDevice(device.address))
        .to.emit(pay, "DeviceRevokedForever")
        .withArgs(device.address, owner.address);
      expect((await pay.getDevice(device.address)).policyId).to.equal(REVOKED);
      await expect(payOne(f, 0n)).to.emit(pay, "PaymentSkipped").withArgs(0, device.address, reason("DeviceRevoked"));
    });

    it("reverts DeviceIsRevoked on a second revoke and on pausing a revoked key", async () => {
      const { pay, owner, device } = await loadFixture(policyFixture);
      await pay.connect(owner).revokeDevice(device.address);
      await expect(pay.connect(owner).revokeDevice(device.address))
        .to.be.revertedWithCustomError(pay, "DeviceIsRevoked")
        .withArgs(device.address);
      await expect(pay.connect(owner).setDevicePaused(device.address, false))
        .to.be.revertedWithCustomError(pay, "DeviceIsRevoked")
        .withArgs(device.address);
    });

    it("a revoked key cannot be registered again, by its owner or anyone", async () => {
      const { pay, usdcAddress, owner, stranger, device } = await loadFixture(policyFixture);
      await pay.connect(owner).revokeDevice(device.address);
      // Not even with a fresh proof signed by the key itself.
      for (const who of [owner, stranger]) {
        const proof = await enrollment(pay, device, who);
        await expect(pay.connect(who).registerDevice(device.address, policyParams(usdcAddress), proof))
          .to.be.revertedWithCustomError(pay, "DeviceIsRevoked")
          .withArgs(device.address);
      }
      await expect(assignDevices(pay, stranger, 3, [device]))
        .to.be.revertedWithCustomError(pay, "DeviceIsRevoked")
        .withArgs(device.address);
    });

    // Registration used to take no proof that the caller holds the device key: anyone who saw a key
    // (in the owner's pending registerDevice, or in a payment it signed elsewhere) could register it
    // first on a policy of its own and revoke it, burning the key for good. Binding a new key now
    // needs the key's Enrollment(owner) signature (test/enrollment.test.ts covers every path).
    it("a key cannot be registered, and so burnt, by someone who does not hold it", async () => {
      const { pay, usdcAddress, owner, stranger, spare } = await loadFixture(policyFixture);
      const [strangersKey] = newDevices(1);
      const ownersProof = await enrollment(pay, spare, owner); // as seen in the owner's pending transaction
      for (const proof of [NO_PROOF, ownersProof, await enrollment(pay, strangersKey, stranger)]) {
        await expect(
          pay.connect(stranger).registerDevice(spare.address, policyParams(usdcAddress, { lifetimeMax: 0 }), proof),
        )
          .to.be.revertedWithCustomError(pay, "InvalidEnrollment")
          .withArgs(spare.address, stranger.address);
      }
      await expect(pay.connect(stranger).revokeDevice(spare.address))
        .to.be.revertedWithCustomError(pay, "DeviceNotRegistered")
        .withArgs(spare.address);
      await expect(pay.connect(owner).registerDevice(spare.address, policyParams(usdcAddress), ownersProof))
        .to.emit(pay, "DeviceAssigned")
        .withArgs(spare.address, 4);
    });

    it("reverts NotDeviceOwner for anyone but the owner, and DeviceNotRegistered for an unknown key", async () => {
      const { pay, owner, stranger, device, spare } = await loadFixture(policyFixture);
      await expect(pay.connect(stranger).revokeDevice(device.address))
        .to.be.revertedWithCustomError(pay, "NotDeviceOwner")
        .withArgs(device.address, stranger.address);
      await expect(pay.connect(owner).revokeDevice(spare.address))
        .to.be.revertedWithCustomError(pay, "DeviceNotRegistered")
        .withArgs(spare.address);
    });
  });

  describe("freezeAll", () => {
    it("bumps the owner's epoch and emits it", async () => {
      const { pay, owner, stranger } = await loadFixture(policyFixture);
      expect(await pay.ownerEpoch(owner.address)).to.equal(0);
      await expect(pay.connect(owner).freezeAll()).to.emit(pay, "OwnerFrozen").withArgs(owner.address, 1);
      await expect(pay.connect(owner).freezeAll()).to.emit(pay, "OwnerFrozen").withArgs(owner.address, 2);
      expect(await pay.ownerEpoch(owner.address)).to.equal(2);
      expect(await pay.ownerEpoch(stranger.address)).to.equal(0);
    });

    it("skips a frozen device's payment as PolicyFrozen until the owner updates the policy", async () => {
      const f = await loadFixture(policyFixture);
      const { pay, owner, device, usdcAddress } = f;
      expect(REASONS[6]).to.equal("PolicyFrozen");
      await pay.connect(owner).freezeAll();
      await expect(payOne(f, 0n)).to.emit(pay, "PaymentSkipped").withArgs(0, device.address, 6);
      expect((await pay.headroom(device.address)).status).to.equal(6);
      await pay.connect(owner).updatePolicy(1, policyParams(usdcAddress));
      await expectPaymentSettled(pay, payOne(f, 0n), {
        device: device.address,
        payee: f.payee.address,
        token: usdcAddress,
        amount: USDC(1),
        nonce: 0n,
      });
    });

    it("freezes only the caller's devices, and not the policies it creates afterwards", async () => {
      const f = await loadFixture(policyFixture);
      const { pay, owner, stranger, usdcAddress } = f;
      const { device: strangers } = await registerNewDevice(pay, stranger, usdcAddress);
      await pay.connect(owner).depositFor(stranger.address, usdcAddress, USDC(10));
      await pay.connect(owner).freezeAll();
      await expect(payOne(f, 0n, strangers)).to.emit(pay, "PaymentSettled");
      const { device: fresh } = await registerNewDevice(pay, owner, usdcAddress);
      await expect(payOne(f, 0n, fresh)).to.emit(pay, "PaymentSettled");
    });
  });
});
